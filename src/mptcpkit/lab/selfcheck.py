"""Emulation self-check: measure what each link really delivers and compare with what the topology asked for.

Other lab tools trust their shaping; this one checks it, because a rate or delay that silently differs from the
configuration makes every later "regression" meaningless. Every measurement uses the lab's one probe
(``mptcpkit.lab.probe``): per link, the RTT with kernel-timestamped ICMP echo (vs the sum of both directions'
delays), the loss with many echoes where loss is set, and per shaped direction the rate with a paced UDP
stream sent above the link rate: the bottleneck queue fills at once and what arrives is the link rate,
which TCP dynamics (slow start through a large BDP, loss recovery) cannot mask.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import HostProcess, Lab
from mptcpkit.lab.model import Link

RTT_TOLERANCE = 0.05
RATE_TOLERANCE = 0.03
RATE_OVERDRIVE = 1.2  # the rate probe sends this much above the link rate, so the queue stays full
RATE_WARMUP_S = 0.3
PREFILL_S = 0.05
IP_UDP_HEADER = 28
MAX_BURST = 44
PROBE_MODULE = ["-m", "mptcpkit.lab.probe"]


@dataclass(frozen=True, slots=True)
class Check:
    """One configured-versus-measured comparison."""

    link: str
    direction: str  # "a->b", "b->a" or "both" (round trip)
    quantity: str  # "rtt" | "rate" | "loss"
    unit: str
    configured: float
    measured: float
    tolerance: float  # relative, or absolute for loss
    ok: bool
    note: str = ""

    @property
    def error_pct(self) -> float:
        return 100 * (self.measured - self.configured) / self.configured if self.configured else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["error_pct"] = round(self.error_pct, 2)
        return data


def _first_address(link: Link, host: str, version: int) -> str | None:
    for address in link.end(host).addresses:
        if address.version == version:
            return str(address.ip)
    return None


def _ping_argv(link: Link, count: int, interval: float) -> list[str] | None:
    """Probe arguments for ICMP echo from link end a to end b (IPv4), or None without addresses."""
    src, dst = _first_address(link, link.a.host, 4), _first_address(link, link.b.host, 4)
    if src is None or dst is None:
        return None
    return [*PROBE_MODULE, "ping", dst, "--count", str(count), "--interval", str(interval), "--bind", src]


def _probe_json(output: str) -> dict[str, Any]:
    """The last JSON line a probe printed, or {"error": ...}."""
    try:
        data = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"no result from the probe: {output.strip()[-200:]!r}"}
    return data if isinstance(data, dict) else {"error": f"unexpected probe output {data!r}"}


def rtt_check(link: Link, ping_output: str) -> Check:
    """Judge the round-trip time over `link` from the probe's ICMP echo result."""
    configured_ms = 1000 * (link.a_to_b.delay_s + link.b_to_a.delay_s)
    samples = [1000 * float(r) for r in _probe_json(ping_output).get("rtt_s", [])]
    if not samples:
        return Check(
            link.name,
            "both",
            "rtt",
            "ms",
            configured_ms,
            math.nan,
            RTT_TOLERANCE,
            False,
            "no ping reply over this link",
        )
    measured = statistics.median(samples)
    spread = f"min {min(samples):.2f} max {max(samples):.2f} ms"
    if configured_ms < 1.0:
        # An unshaped link: only check that the emulation adds no significant latency.
        return Check(
            link.name, "both", "rtt", "ms", configured_ms, measured, RTT_TOLERANCE, measured < 1.0, spread
        )
    ok = abs(measured - configured_ms) <= RTT_TOLERANCE * configured_ms
    return Check(link.name, "both", "rtt", "ms", configured_ms, measured, RTT_TOLERANCE, ok, spread)


def loss_check(link: Link, ping_output: str) -> Check:
    """Judge the round-trip loss over `link` from the probe's ICMP echo counts."""
    expected = 1 - (1 - link.a_to_b.loss) * (1 - link.b_to_a.loss)
    data = _probe_json(ping_output)
    if not data.get("sent"):
        note = str(data.get("error", "no probe result"))
        return Check(link.name, "both", "loss", "%", 100 * expected, math.nan, 0.0, False, note)
    sent, received = int(data["sent"]), int(data["received"])
    measured = 1 - received / sent
    # Binomial 99 % band around the configured loss: a fixed relative tolerance is meaningless at a few %.
    band = 2.576 * math.sqrt(max(expected * (1 - expected), 1e-9) / sent) + 0.5 / sent
    ok = abs(measured - expected) <= band
    return Check(
        link.name,
        "both",
        "loss",
        "%",
        100 * expected,
        100 * measured,
        100 * band,
        ok,
        f"{sent} probes, 99 % band +/-{100 * band:.2f} points",
    )


def rate_check(link: Link, forward: bool, sink_output: str) -> Check:
    """Judge the link-layer rate of one direction from the rate probe sink's result."""
    direction = link.a_to_b if forward else link.b_to_a
    configured = float(direction.rate_bps or 0)
    name = "a->b" if forward else "b->a"
    data = _probe_json(sink_output)
    if "rate_bps" not in data:
        note = str(data.get("error", "no rate in the probe result"))
        return Check(
            link.name, name, "rate", "Mbit/s", configured / 1e6, math.nan, RATE_TOLERANCE, False, note
        )
    measured = float(data["rate_bps"])
    bins = [float(b) for b in data.get("bins_bps", [])]
    spread = f", {data['bin_s']:g} s bins {min(bins) / 1e6:.1f}..{max(bins) / 1e6:.1f}" if bins else ""
    ok = abs(measured - configured) <= RATE_TOLERANCE * configured
    note = f"paced UDP at {RATE_OVERDRIVE:g}x, {data.get('datagrams', 0)} datagrams{spread}"
    return Check(
        link.name, name, "rate", "Mbit/s", configured / 1e6, measured / 1e6, RATE_TOLERANCE, ok, note
    )


def _start_rate_probe(lab: Lab, link: Link, forward: bool, window: float, port: int) -> HostProcess | None:
    """Start the sink (returned) and the paced source of one direction's rate probe."""
    direction = link.a_to_b if forward else link.b_to_a
    sender, receiver = (link.a, link.b) if forward else (link.b, link.a)
    src, dst = _first_address(link, sender.host, 4), _first_address(link, receiver.host, 4)
    if not direction.rate_bps or src is None or dst is None:
        return None
    sink_host, source_host = lab.host(receiver.host), lab.host(sender.host)
    # Wait for the first datagram long enough for the delay and a full queue (plus process start).
    first_s = 10 + direction.delay_s + direction.jitter_s
    sink = sink_host.spawn(
        [
            *sink_host.python_argv(),
            *PROBE_MODULE,
            "sink",
            "--bind",
            dst,
            "--port",
            str(port),
            "--window",
            str(window),
            "--warmup",
            str(RATE_WARMUP_S),
            "--timeout",
            f"{first_s:g}",
        ]
    )
    ready = sink.readline(timeout=15)
    if not ready or "ready" not in ready:
        raise LabError(f"self-check: rate probe did not start for {link.name}: {sink.wait(5).stderr}")
    # Bursts of at most half the queue: a burst larger than the queue would leave the link idle.
    burst = max(1, min(MAX_BURST, direction.queue_packets // 2))
    # Start with the queue full (at most PREFILL_S of it, which the link drains after the probe): a full
    # queue keeps the link busy while a sender is descheduled on a busy machine.
    frames = direction.rate_bps * PREFILL_S / 8 / (link.mtu + 14)
    prefill = min(direction.queue_packets, math.ceil(frames))
    source_host.spawn(
        [
            *source_host.python_argv(),
            *PROBE_MODULE,
            "source",
            dst,
            "--port",
            str(port),
            "--bind",
            src,
            "--rate",
            f"{direction.rate_bps * RATE_OVERDRIVE:.0f}",
            "--size",
            str(link.mtu - IP_UDP_HEADER),
            "--burst",
            str(burst),
            "--prefill",
            str(prefill),
            "--duration",
            f"{window + RATE_WARMUP_S + 0.5:g}",
        ]
    )
    return sink


def self_check(
    lab: Lab, *, rate_duration: float = 1.0, progress: Callable[[str], None] | None = None
) -> list[Check]:
    """Measure every link of `lab` at once (links are independent); one Check per measured quantity.

    ``rate_duration`` is the rate probe's measuring window per direction (after a short warm-up).
    """
    say = progress or (lambda message: None)
    links = lab.topology.links
    say(f"self-check: RTT and loss of {len(links)} link(s)")
    probes: list[tuple[str, Link, bool, HostProcess]] = []
    try:
        for link in links:
            argv = _ping_argv(link, 20, 0.05)
            if argv is None:
                continue
            host = lab.host(link.a.host)
            warm = [*host.python_argv(), *argv[:4], "--count", "1", "--wait", "3", *argv[-2:]]
            host.run(warm, check=False, timeout=15)  # neighbour discovery before timing anything
            probes.append(("rtt", link, True, host.spawn([*host.python_argv(), *argv])))
            if link.a_to_b.loss or link.b_to_a.loss:
                lossy = _ping_argv(link, 400, 0.005) or argv
                probes.append(("loss", link, True, host.spawn([*host.python_argv(), *lossy])))
        # Echoes first and alone: a rate probe fills the queues and would add its queueing delay to the RTT.
        checks = []
        for kind, link, _forward, proc in probes:
            output = proc.wait(timeout=60).stdout
            checks.append(rtt_check(link, output) if kind == "rtt" else loss_check(link, output))
        # Rates: every link at once, one direction at a time (each link's emulator then carries one stream).
        for forward in (True, False):
            batch = []
            for index, link in enumerate(links):
                probe = _start_rate_probe(lab, link, forward, rate_duration, 47000 + index)
                if probe is not None:
                    probes.append(("rate", link, forward, probe))
                    batch.append((link, probe))
            if batch:
                say(
                    f"self-check: rate {'a->b' if forward else 'b->a'} of {len(batch)} link(s), {rate_duration:g} s"
                )
            for link, probe in batch:
                checks.append(rate_check(link, forward, probe.wait(timeout=rate_duration + 60).stdout))
        return checks
    finally:
        for _kind, _link, _forward, proc in probes:
            proc.terminate()
