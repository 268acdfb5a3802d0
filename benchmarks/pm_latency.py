"""Benchmark: address added -> in-kernel endpoint present, for `mptcpkit pm` and Debian's mptcpd, same run.

    sudo .venv/bin/python benchmarks/pm_latency.py [--samples 100]

Each daemon runs with the `addr_adv` path manager (`--addr-flags=subflow`) in its own network namespace, started
the same way (`ip netns exec NS ...`). For each sample an IPv4 address is added to a veth with one raw
RTM_NEWADDR. The clock starts just before the request is sent. The benchmark then polls the namespace's endpoint
table (GET_ADDR dump, about every 0.2 ms) until the endpoint appears. It then removes the address and measures
the time until the endpoint is gone. Samples alternate between the daemons, so machine noise hits both
alike. RSS (VmRSS, VmHWM) of each daemon is read at the end.

Then a storm (`--storm 1000`): that many addresses are added and removed in bursts spread over four links
(no waiting between requests), then a probe address is added. When the probe has its endpoint the daemon has handled
the whole storm (`settled_s`), it still works (`works_after`), and no endpoint may remain for a storm address
(`stale_endpoints`).

The script writes benchmarks/results/pm_latency.json with the raw samples and, per daemon, the median / p95 /
min / max / CV, the RSS, the storm's stale endpoints, and the ratios of mptcpkit pm to mptcpd.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.netlink import MptcpPmClient, nlmsg
from mptcpkit.netlink.socket import NETLINK_ROUTE, ifindex, open_netlink

RESULTS = Path(__file__).resolve().parent / "results"
MPTCPD = "/usr/libexec/mptcpd"
MPTCPD_PLUGINS = "/usr/lib/x86_64-linux-gnu/mptcpd"
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFA_ADDRESS, IFA_LOCAL = 1, 2


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


LINKS = ("v0", "v1", "v2", "v3")


def make_ns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    sh("ip", "netns", "add", name)
    sh("ip", "-n", name, "link", "set", "lo", "up")
    for i, v in enumerate(LINKS):
        sh("ip", "-n", name, "link", "add", v, "type", "veth", "peer", "name", f"p{i}")
        for dev in (v, f"p{i}"):
            sh("ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            sh("ip", "-n", name, "link", "set", dev, "up")


class AddrSetter:
    """Adds/removes an IPv4 /32 on one link with a raw rtnetlink request (no process spawn in the timing)."""

    def __init__(self, ns: str, dev: str) -> None:
        self.sock = open_netlink(NETLINK_ROUTE, ns)
        idx = ifindex(dev, ns)
        assert idx is not None
        self.index = idx
        self.seq = 0

    def _send(self, msg_type: int, addr: ipaddress.IPv4Address) -> None:
        self.seq += 1
        body = struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, self.index)
        body += nlmsg.pack_attr(IFA_LOCAL, addr.packed) + nlmsg.pack_attr(IFA_ADDRESS, addr.packed)
        flags = nlmsg.NLM_F_ACK | (0x400 | 0x200 if msg_type == RTM_NEWADDR else 0)  # CREATE|EXCL
        self.sock.send(nlmsg.pack_nlmsg(msg_type, nlmsg.NLM_F_REQUEST | flags, self.seq, body))
        while True:
            for m in nlmsg.iter_nlmsgs(self.sock.recv(65536)):
                if m.type == nlmsg.NLMSG_ERROR and m.seq == self.seq:
                    err = nlmsg.parse_error(m)
                    if err.errno:
                        raise OSError(err.errno, f"rtnetlink: {os.strerror(err.errno)}")
                    return

    def add(self, addr: ipaddress.IPv4Address) -> None:
        self._send(RTM_NEWADDR, addr)

    def delete(self, addr: ipaddress.IPv4Address) -> None:
        self._send(RTM_DELADDR, addr)


def wait_endpoint(
    pm: MptcpPmClient, addr: ipaddress.IPv4Address, present: bool, timeout: float = 5.0
) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if any(e.addr == addr for e in pm.dump_endpoints()) == present:
            return True
        time.sleep(0.0002)
    return False


def rss_kb(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def schedstat(pid: int) -> tuple[int, int, int]:
    """(ns on CPU, ns runnable but waiting for a CPU, times scheduled) summed over the daemon's threads."""
    total = [0, 0, 0]
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            for i, v in enumerate(Path(task, "schedstat").read_text().split()[:3]):
                total[i] += int(v)
    return total[0], total[1], total[2]


def per_event(before: tuple[int, int, int], after: tuple[int, int, int], events: int) -> dict[str, float]:
    """CPU time and run-queue wait per address event (add or remove): the daemon's own cost versus the
    time it spends woken up but waiting for a CPU (the machine's load, not the daemon)."""
    return {
        "cpu_us": round((after[0] - before[0]) / events / 1000, 1),
        "runqueue_wait_us": round((after[1] - before[1]) / events / 1000, 1),
        "wakeups": round((after[2] - before[2]) / events, 2),
    }


def summary(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    mean = statistics.fmean(v)
    return {
        "n": len(v),
        "median_ms": round(statistics.median(v) * 1000, 3),
        "p95_ms": round(v[min(len(v) - 1, round(0.95 * (len(v) - 1)))] * 1000, 3),
        "min_ms": round(v[0] * 1000, 3),
        "max_ms": round(v[-1] * 1000, 3),
        "cv": round(statistics.pstdev(v) / mean, 3) if mean else 0.0,
    }


def storm(ns: str, client: MptcpPmClient, n: int) -> dict[str, Any]:
    """`n` addresses added then removed in bursts of 50 over four links; count stale endpoints after."""
    setters = [AddrSetter(ns, dev) for dev in LINKS]
    addrs = [ipaddress.IPv4Address(f"10.{80 + i % 4}.{i // 250}.{i % 250 + 1}") for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 50):
        burst = addrs[start : start + 50]
        for i, a in enumerate(burst, start):
            setters[i % 4].add(a)
        for i, a in enumerate(burst[:40], start):  # most go again at once, some stay a while
            setters[i % 4].delete(a)
    for i, a in enumerate(addrs):
        if i % 50 >= 40:
            setters[i % 4].delete(a)
    sent = time.perf_counter() - t0
    # a probe address added after the storm: once it has its endpoint, the daemon has handled every
    # storm event before it (events are handled in order); then no storm address may have an endpoint
    probe = ipaddress.IPv4Address("10.79.0.1")
    setters[0].add(probe)
    works = wait_endpoint(client, probe, True, timeout=60)
    settled = time.perf_counter() - t0
    gone = set(addrs)
    time.sleep(0.5)
    stale = [e for e in client.dump_endpoints() if e.addr in gone]
    setters[0].delete(probe)
    wait_endpoint(client, probe, False)
    for st in setters:
        st.sock.close()
    return {
        "addresses": n,
        "sent_s": round(sent, 3),
        "settled_s": round(settled, 3),
        "stale_endpoints": len(stale),
        "works_after": works,
    }


def ratios(per: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """mptcpkit / mptcpd for the add and removal medians (targets: <= 1.5 and <= 1.0)."""
    base = per.get("mptcpd")
    out: dict[str, dict[str, float]] = {}
    if not base or not base["add_latency"] or not base["remove_latency"]:
        return out
    for d, r in per.items():
        if d != "mptcpd" and r["add_latency"] and r["remove_latency"]:
            out[d] = {
                "add_median": round(r["add_latency"]["median_ms"] / base["add_latency"]["median_ms"], 3),
                "remove_median": round(
                    r["remove_latency"]["median_ms"] / base["remove_latency"]["median_ms"], 3
                ),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=100, help="samples per daemon (default 100)")
    parser.add_argument("--storm", type=int, default=1000, help="addresses in the storm (0: no storm)")
    parser.add_argument("--out", type=Path, default=RESULTS / "pm_latency.json")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces)")

    tmp = Path(tempfile.mkdtemp(prefix="mkt-pm-bench-"))
    conf = tmp / "mptcpd.conf"
    conf.write_text("[core]\nlog=stderr\n")
    conf.chmod(0o644)
    daemons = {
        "mptcpkit-pm": [
            sys.executable,
            "-m",
            "mptcpkit",
            "pm",
            "-c",
            str(conf),
            "--state-file",
            str(tmp / "state.json"),
            "--addr-flags=subflow",
            "--log=null",
        ],
        "mptcpkit-pm-script": [
            str(Path(sys.executable).parent / "mptcpkit"),
            "pm",
            "-c",
            str(conf),
            "--state-file",
            str(tmp / "state-script.json"),
            "--addr-flags=subflow",
            "--log=null",
        ],
        "mptcpd": [
            MPTCPD,
            f"--plugin-dir={MPTCPD_PLUGINS}",
            "--path-manager=addr_adv",
            "--addr-flags=subflow",
        ],
    }
    names = {d: f"mkt-pm-bench-{i}" for i, d in enumerate(daemons)}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    samples: dict[str, dict[str, list[float]]] = {d: {"add": [], "remove": []} for d in daemons}
    failures: dict[str, int] = dict.fromkeys(daemons, 0)
    try:
        for d, argv in daemons.items():
            make_ns(names[d])
            procs[d] = subprocess.Popen(
                ["ip", "netns", "exec", names[d], *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        clients = {d: MptcpPmClient(netns=names[d]) for d in daemons}
        setters = {d: AddrSetter(names[d], "v0") for d in daemons}
        # ready = a probe address gets its endpoint (the kernel's default limits say nothing about the daemon)
        probe = ipaddress.IPv4Address("10.76.0.1")
        for d in daemons:
            deadline = time.time() + 20
            while True:
                with contextlib.suppress(OSError):
                    setters[d].add(probe)
                if wait_endpoint(clients[d], probe, True, timeout=0.5):
                    break
                setters[d].delete(probe)
                if time.time() > deadline or procs[d].poll() is not None:
                    sys.exit(f"{d} did not start")
            setters[d].delete(probe)
            wait_endpoint(clients[d], probe, False)
        time.sleep(0.5)
        rss_start = {d: rss_kb(procs[d].pid) for d in daemons}
        sched_start = {d: schedstat(procs[d].pid) for d in daemons}
        for i in range(args.samples + 5):  # 5 warm-up rounds, discarded
            order = list(daemons) if i % 2 == 0 else list(reversed(daemons))
            for d in order:
                addr = ipaddress.IPv4Address(f"10.77.{i // 250}.{i % 250 + 1}")
                t0 = time.perf_counter()
                setters[d].add(addr)
                ok = wait_endpoint(clients[d], addr, True)
                t1 = time.perf_counter()
                setters[d].delete(addr)
                ok2 = wait_endpoint(clients[d], addr, False)
                t2 = time.perf_counter()
                if not (ok and ok2):
                    failures[d] += 1
                    print(
                        f"{d}: sample {i}: endpoint {'never removed' if ok else 'never added'}",
                        file=sys.stderr,
                    )
                elif i >= 5:
                    samples[d]["add"].append(t1 - t0)
                    samples[d]["remove"].append(t2 - t1)
                time.sleep(0.01)
        rss_end = {d: rss_kb(procs[d].pid) for d in daemons}
        sched = {
            d: per_event(sched_start[d], schedstat(procs[d].pid), 2 * (args.samples + 5)) for d in daemons
        }
        load = os.getloadavg()
        storms = {d: storm(names[d], clients[d], args.storm) for d in daemons} if args.storm else {}
        alive = {d: procs[d].poll() is None for d in daemons}
        per_daemon: dict[str, dict[str, Any]] = {
            d: {
                "argv": daemons[d],
                "add_latency": summary(samples[d]["add"]) if samples[d]["add"] else None,
                "remove_latency": summary(samples[d]["remove"]) if samples[d]["remove"] else None,
                "rss_kb_start": rss_start[d],
                "rss_kb_end": rss_end[d],
                "failures": failures[d],
                "per_event": sched[d],
                "storm": storms.get(d),
                "alive_at_end": alive[d],
                "samples_s": samples[d],
            }
            for d in daemons
        }
        result = {
            "benchmark": "pm_latency",
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg": [round(x, 2) for x in load],
            "method": "raw RTM_NEWADDR -> poll GET_ADDR dump every ~0.2 ms; interleaved A/B; 5 warm-up rounds",
            "daemons": per_daemon,
            "ratios_to_mptcpd": ratios(per_daemon),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        for d, r in per_daemon.items():
            print(f"{d:18s} add {r['add_latency']}  remove {r['remove_latency']}  rss {r['rss_kb_end']}")
            print(f"{'':18s} per event {r['per_event']}  storm {r['storm']}")
        print("ratios to mptcpd:", json.dumps(result["ratios_to_mptcpd"]), "load", result["loadavg"])
        print(f"wrote {args.out}")
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        for n in names.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
