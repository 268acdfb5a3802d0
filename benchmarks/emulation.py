"""Benchmark the link emulation: TCP throughput through the emulator, and accuracy of RTT, rate and loss.

Run as root from the repository:
    .venv/bin/python benchmarks/emulation.py [--quick] [--mode auto|userspace|netem]
Writes benchmarks/results/emulation.json (and prints a summary). Each case builds its own namespaces
(prefix mkt-em-) and removes them, pass or fail.

Throughput: iperf3 (one TCP flow, cubic, host buffers up to 128 MiB) from A to B through an unshaped link
of 0 / 20 / 50 ms one-way delay; the first seconds (slow start) are omitted from the average.
Accuracy: the issue's target topology, two links at once: 50 Mbit/s + 10 ms and 50 Mbit/s + 30 ms one-way.
Idle RTT by ICMP echo with kernel receive timestamps (target: within 5 % of 2 x delay); rate by iperf3 on
both links at the same time, one flow per link and then 4 flows per link (which keeps the bottleneck busy
even when a sender is descheduled on a busy machine), compared with the goodput a 50 Mbit/s wire can carry:
rate * MSS / (MSS + 66) (Ethernet 14 + IPv4 20 + TCP 20 + timestamps 12; the MSS comes from iperf3);
target within 3 %. TCP runs use cubic (see ACCURACY_CC); the link rate is also measured from the receiving
host's rx counters and with UDP offered at 1.2x the rate (pure capacity). Loss: 2000 ICMP probes over a
link losing 2 % one way. Throughput runs use the machine's default congestion control (recorded).

Fast (issue 11, "the emulator must not be the limit"): one link at 500 Mbit/s and 100 ms one-way (queue 1 BDP
of the 200 ms RTT), clean, with +/-10 ms jitter, with 1 % loss, and with both. Per case: the delivered link
rate by the lab probe's paced UDP stream (offered at 1.2x, so the queue stays full: pure capacity; target
within 3 %), the idle RTT by kernel-timestamped ICMP echo (target within 5 % of 200 ms) and how many replies
came back out of order, the loss the emulator applied (packets lost / packets in, target within a 99.9 %
binomial band), one TCP flow's goodput (BBR where the kernel has it: a loss-based TCP through 1 % loss and
200 ms is limited by TCP itself to ~1 Mbit/s, the Mathis bound), and the emulator's CPU time per second
during the UDP probe and the TCP transfer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.emulation import LinkShape, build_wire, netem_available
from mptcpkit.lab.emulation.shape import Mode
from mptcpkit.lab.emulation.testbed import Testbed, testbed
from mptcpkit.lab.units import Bdp

RESULTS = Path(__file__).resolve().parent / "results" / "emulation.json"
HEADER_BYTES = 14 + 20 + 20 + 12
# Loss-based congestion control keeps a big bottleneck queue busy. The machine's default may be BBR, whose
# ProbeRTT phase (cwnd 4 for >= 200 ms every 10 s) idles the link ~2-3 % of a 10 s run by design.
ACCURACY_CC = "cubic"


def summary(values: list[float]) -> dict[str, float]:
    mean = statistics.mean(values)
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "cv": statistics.pstdev(values) / mean if mean else 0.0,
        "n": len(values),
    }


def throughput_case(
    delay_s: float, seconds: float, omit_s: float, reps: int, mode: Mode, state: Path
) -> dict[str, Any]:
    samples: list[float] = []
    retransmits: list[int] = []
    description: dict[str, Any] = {}
    cpu: list[float] = []
    with testbed() as bed:
        shape = LinkShape(None, delay_s)
        wire = build_wire(bed.wire, bed.a_if, bed.b_if, shape, shape, mode=mode, state_dir=state)
        try:
            description = wire.description
            for _ in range(reps):
                ticks0 = _cpu_ticks(wire.pids)
                t0 = time.monotonic()
                data = bed.iperf3(seconds, omit_s=omit_s)
                elapsed = time.monotonic() - t0
                if wire.pids:
                    cpu.append((_cpu_ticks(wire.pids) - ticks0) / os.sysconf("SC_CLK_TCK") / elapsed)
                samples.append(data["end"]["sum_received"]["bits_per_second"])
                retransmits.append(int(data["end"]["sum_sent"].get("retransmits", 0)))
        finally:
            wire.close()
    return {
        "one_way_delay_s": delay_s,
        "mode": description.get("mode"),
        "throughput_bps": summary(samples),
        "samples_bps": samples,
        "retransmits": retransmits,
        "emulator_cpu_fraction": summary(cpu) if cpu else None,
        "iperf3": {"seconds": seconds, "omit_s": omit_s},
        "wire": description,
    }


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def accuracy_case(
    rate_bps: int, delays: list[float], seconds: float, omit_s: float, reps: int, mode: Mode, state: Path
) -> dict[str, Any]:
    links: list[dict[str, Any]] = []
    with ExitStack() as stack:
        beds: list[Testbed] = []
        for delay in delays:
            bed = stack.enter_context(testbed())
            shape = LinkShape(rate_bps, delay)
            wire = build_wire(bed.wire, bed.a_if, bed.b_if, shape, shape, mode=mode, state_dir=state)
            stack.callback(wire.close)
            beds.append(bed)
            links.append(
                {"configured": {"rate_bps": rate_bps, "one_way_delay_s": delay}, "wire": wire.description}
            )
        for bed, link in zip(beds, links, strict=True):
            probe = bed.ping(100, 0.01)
            rtts = probe["rtt_s"]
            expected = 2 * link["configured"]["one_way_delay_s"]
            link["rtt_s"] = summary(rtts)
            link["rtt_error"] = statistics.median(rtts) / expected - 1
        samples: list[dict[str, list[float]]] = [{} for _ in links]
        for _rep in range(reps):
            for streams, key in ((1, ""), (4, "_4flows"), (0, "_udp")):
                meters = [RxMeter(bed.b) for bed in beds]
                for meter in meters:
                    meter.start()
                started = time.monotonic()
                tcp = ["-C", ACCURACY_CC, "-P", str(streams)]
                extra = tcp if streams else ["-u", "-b", str(int(rate_bps * 1.2)), "-l", "1400"]
                results = concurrent_iperf3(beds, seconds, omit_s, extra)
                window = (started + omit_s + 0.5, started + omit_s + seconds - 0.5)
                for meter, link, data, got in zip(meters, links, results, samples, strict=True):
                    meter.stop()
                    got.setdefault(f"wire_rate_bps{key}", []).append(meter.rate_bps(*window))
                    if not streams:
                        continue
                    mss = int(data["start"].get("tcp_mss_default", 1448))
                    link["mss"] = mss
                    link["expected_goodput_bps"] = rate_bps * mss / (mss + HEADER_BYTES)
                    got.setdefault(f"goodput_bps{key}", []).append(
                        data["end"]["sum_received"]["bits_per_second"]
                    )
                    got.setdefault(f"retransmits{key}", []).append(
                        data["end"]["sum_sent"].get("retransmits", 0)
                    )
        for link, got in zip(links, samples, strict=True):
            link["samples"] = got
            link["wire_rate_bps_udp"] = statistics.median(got["wire_rate_bps_udp"])
            link["wire_rate_error_udp"] = link["wire_rate_bps_udp"] / rate_bps - 1
            for key in ("", "_4flows"):
                wire_rate = statistics.median(got[f"wire_rate_bps{key}"])
                goodput = statistics.median(got[f"goodput_bps{key}"])
                link[f"wire_rate_bps{key}"] = wire_rate
                link[f"wire_rate_error{key}"] = wire_rate / rate_bps - 1
                link[f"goodput_bps{key}"] = goodput
                link[f"rate_error{key}"] = goodput / link["expected_goodput_bps"] - 1
            link["rate_ok"] = abs(link["wire_rate_error_udp"]) <= 0.03  # link capacity
            link["tcp_rate_ok"] = abs(link["rate_error"]) <= 0.03  # one TCP flow (sender-dependent)
            link["rtt_ok"] = abs(link["rtt_error"]) <= 0.05
    return {
        "links": links,
        "iperf3": {
            "seconds": seconds,
            "omit_s": omit_s,
            "concurrent": True,
            "repetitions": reps,
            "congestion_control": ACCURACY_CC,
            "udp_offered_bps": int(rate_bps * 1.2),
        },
        "note": "values are medians over repetitions; raw values under samples",
    }


class RxMeter(threading.Thread):
    """Samples the receiving host's eth0 rx byte counter (Ethernet header + packet, as the link rate counts).

    The link's delivered rate over the steady part of a transfer, independent of iperf3's own accounting.
    """

    def __init__(self, netns: str, interval_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.netns = netns
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with IPRoute(netns=self.netns, flags=0) as ipr:
            index = ipr.link_lookup(ifname="eth0")[0]
            while not self.done.is_set():
                stats = ipr.get_links(index)[0].get_attr("IFLA_STATS64")
                self.samples.append((time.monotonic(), int(stats["rx_bytes"])))
                self.done.wait(self.interval_s)

    def stop(self) -> None:
        self.done.set()
        self.join()

    def rate_bps(self, start: float, end: float) -> float:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if len(inside) < 2:
            return 0.0
        (t0, b0), (t1, b1) = inside[0], inside[-1]
        return (b1 - b0) * 8 / (t1 - t0)


def concurrent_iperf3(
    beds: list[Testbed], seconds: float, omit_s: float, extra: list[str]
) -> list[dict[str, Any]]:
    """One iperf3 per link, all at once (as the lab's links carry an MPTCP connection's subflows)."""
    results: list[dict[str, Any]] = [{} for _ in beds]

    def transfer(i: int) -> None:
        results[i] = beds[i].iperf3(seconds, omit_s=omit_s, port=5201 + i, extra=extra)

    threads = [threading.Thread(target=transfer, args=(i,)) for i in range(len(beds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def loss_case(loss: float, count: int, mode: Mode, state: Path) -> dict[str, Any]:
    with testbed() as bed:
        wire = build_wire(
            bed.wire,
            bed.a_if,
            bed.b_if,
            LinkShape(None, 0.002, loss=loss),
            LinkShape(None),
            mode=mode,
            state_dir=state,
        )
        try:
            probe = bed.ping(count, 0.001, wait_s=0.5)
        finally:
            wire.close()
    measured = 1 - probe["received"] / probe["sent"]
    stats = wire.emulator_stats()
    ab = stats[0]["directions"][0] if stats else {}
    applied = ab["packets_lost"] / ab["packets_in"] if ab.get("packets_in") else None
    return {
        "configured_loss": loss,
        "probes": count,
        "measured_loss": measured,
        "emulator_applied_loss": applied,
        "wire": wire.description,
    }


FAST_CASES = {
    "clean": {},
    "jitter": {"jitter_s": 0.010},
    "loss": {"loss": 0.01},
    "loss+jitter": {"jitter_s": 0.010, "loss": 0.01},
}


def fast_case(name: str, seconds: float, reps: int, mode: Mode, state: Path) -> dict[str, Any]:
    """500 Mbit/s, 100 ms one-way, with the case's jitter/loss, in both directions."""
    rate, delay = 500_000_000, 0.100
    queue = Bdp(1.0).packets(rate, 2 * delay, 1514)
    shape = LinkShape(rate, delay, queue_packets=queue, **FAST_CASES[name])  # type: ignore[arg-type]
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    cc = "bbr" if "bbr" in available else "cubic"
    got: dict[str, list[float]] = {}
    with testbed() as bed:
        wire = build_wire(bed.wire, bed.a_if, bed.b_if, shape, shape, mode=mode, state_dir=state, seed=5)
        try:
            for _ in range(reps):
                probe = bed.ping(100, 0.01, wait_s=0.5)
                got.setdefault("rtt_median_s", []).append(statistics.median(probe["rtt_s"]))
                reorder = bed.ping(400, 0.0005, wait_s=0.5)  # probes 0.5 ms apart: jitter shows as reordering
                got.setdefault("reordered_of_400", []).append(reorder["reordered"])
                ticks0, t0 = _cpu_ticks(wire.pids), time.monotonic()
                udp = bed.udp_rate(rate * 1.2, window_s=2.0, warmup_s=0.3)
                cpu = (_cpu_ticks(wire.pids) - ticks0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
                got.setdefault("link_rate_bps", []).append(udp["rate_bps"])
                got.setdefault("emulator_cpu_udp", []).append(cpu)
                ticks0, t0 = _cpu_ticks(wire.pids), time.monotonic()
                meter = RxMeter(bed.b)
                meter.start()
                bed.iperf3(seconds, omit_s=3, extra=["-C", cc])
                meter.stop()
                cpu = (_cpu_ticks(wire.pids) - ticks0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
                # Receiver rx counter over the steady part: iperf3's own sum_received also counts the
                # queue and the 200 ms pipe draining after the sender stops, and reads above the link rate.
                wire_rate = meter.rate_bps(t0 + 3.5, t0 + 3 + seconds - 0.5)
                got.setdefault("tcp_goodput_bps", []).append(wire_rate * 1448 / 1514)
                got.setdefault("emulator_cpu_tcp", []).append(cpu)
        finally:
            wire.close()
    stats = wire.emulator_stats()
    ab = stats[0]["directions"][0] if stats else {}
    lost, packets = int(ab.get("packets_lost", 0)), int(ab.get("packets_in", 0))
    loss = shape.loss
    band = 3.29 * (loss * (1 - loss) / packets) ** 0.5 if packets else 0.0
    rate_med = statistics.median(got["link_rate_bps"])
    rtt_med = statistics.median(got["rtt_median_s"])
    return {
        "case": name,
        "configured": {**shape.as_dict(), "queue": "1bdp"},
        "mode": wire.description.get("mode"),
        "link_rate_bps": rate_med,
        "link_rate_error": rate_med / rate - 1,
        "rate_ok": abs(rate_med / rate - 1) <= 0.03,
        "rtt_median_s": rtt_med,
        "rtt_error": rtt_med / (2 * delay) - 1,
        "rtt_ok": abs(rtt_med / (2 * delay) - 1) <= 0.05,
        "reordered_of_400": statistics.median(got["reordered_of_400"]),
        "applied_loss": lost / packets if packets else None,
        "loss_band_99_9": band,
        "loss_ok": abs(lost / packets - loss) <= band if packets else None,
        "emulator_packets_in_per_frame": packets / max(1, int(ab.get("frames_in", 0))),
        "frames_split": ab.get("frames_split"),
        "tcp": {
            "congestion_control": cc,
            "goodput_bps": statistics.median(got["tcp_goodput_bps"]),
            "max_goodput_bps": rate * 1448 / 1514,
            "method": "receiver eth0 rx bytes over the steady part x MSS / (MSS + 66)",
        },
        "emulator_cpu_fraction": {
            "udp_probe": statistics.median(got["emulator_cpu_udp"]),
            "tcp": statistics.median(got["emulator_cpu_tcp"]),
        },
        "samples": got,
        "wire": wire.description,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one repetition, shorter transfers")
    parser.add_argument("--mode", default="auto", choices=["auto", "userspace", "netem"])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--cases", default="throughput,accuracy,loss,fast", help="comma-separated subset")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mptcpkit-emulation-bench-") as tmp:
        return run_benchmark(args, Path(tmp))


def run_benchmark(args: argparse.Namespace, state: Path) -> int:
    """All cases; ``state`` holds the wires' state files and emulator logs (removed afterwards)."""
    mode: Mode = args.mode
    reps, seconds = (1, 6.0) if args.quick else (3, 10.0)
    out: dict[str, Any] = {
        "benchmark": "emulation",
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": {
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "netem_available": netem_available(),
            "requested_mode": args.mode,
            "default_congestion_control": Path("/proc/sys/net/ipv4/tcp_congestion_control")
            .read_text()
            .strip(),
        },
        "throughput": [],
    }
    cases = set(args.cases.split(","))
    for delay in (0.0, 0.020, 0.050) if "throughput" in cases else ():
        omit = 2.0 if delay else 1.0
        case = throughput_case(delay, seconds, omit, reps, mode, state)
        out["throughput"].append(case)
        tp = case["throughput_bps"]
        print(
            f"throughput {delay * 1e3:4.0f} ms one-way ({case['mode']}): "
            f"median {tp['median'] / 1e9:.2f} Gbit/s "
            f"(min {tp['min'] / 1e9:.2f}, max {tp['max'] / 1e9:.2f})",
            flush=True,
        )
    acc = (
        {"links": []}
        if "accuracy" not in cases
        else accuracy_case(50_000_000, [0.010, 0.030], seconds, 3.0, reps, mode, state)
    )
    out["accuracy"] = acc
    for link in acc["links"]:
        d = link["configured"]["one_way_delay_s"]
        print(
            f"accuracy 50 Mbit/s {d * 1e3:.0f} ms: RTT median {link['rtt_s']['median'] * 1e3:.2f} ms "
            f"({link['rtt_error']:+.1%}), goodput {link['goodput_bps'] / 1e6:.2f} Mbit/s vs "
            f"{link['expected_goodput_bps'] / 1e6:.2f} ({link['rate_error']:+.1%}; "
            f"4 flows {link['rate_error_4flows']:+.1%}); link rate {link['wire_rate_bps'] / 1e6:.2f} "
            f"({link['wire_rate_error']:+.1%}; 4 flows {link['wire_rate_error_4flows']:+.1%}; "
            f"UDP at 1.2x {link['wire_rate_error_udp']:+.1%})",
            flush=True,
        )
    if "loss" in cases:
        loss = loss_case(0.02, 2000, mode, state)
        out["loss"] = loss
        print(
            f"loss: configured {loss['configured_loss']:.1%}, measured {loss['measured_loss']:.2%}"
            f" (emulator applied {(loss['emulator_applied_loss'] or 0):.2%})",
            flush=True,
        )
    out["fast"] = []
    for name in FAST_CASES if "fast" in cases else ():
        fast = fast_case(name, seconds, reps, mode, state)
        out["fast"].append(fast)
        print(
            f"500 Mbit/s 100 ms {name:11s} ({fast['mode']}): link rate {fast['link_rate_bps'] / 1e6:.1f} Mbit/s "
            f"({fast['link_rate_error']:+.1%}), RTT {fast['rtt_median_s'] * 1e3:.1f} ms ({fast['rtt_error']:+.1%}), "
            f"reordered {fast['reordered_of_400']:.0f}/400, loss applied "
            f"{(fast['applied_loss'] or 0):.3%}, TCP {fast['tcp']['congestion_control']} "
            f"{fast['tcp']['goodput_bps'] / 1e6:.0f} Mbit/s, emulator CPU "
            f"{fast['emulator_cpu_fraction']['udp_probe']:.0%} (UDP) / {fast['emulator_cpu_fraction']['tcp']:.0%} (TCP)",
            flush=True,
        )
    out["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        sys.exit(main())
