"""Emulation self-check: measure what each link really delivers and compare with what the topology asked for.

Other lab tools trust their shaping; this one checks it, because a rate or delay that silently differs from the
configuration makes every later "regression" meaningless. For each link: RTT with ping (vs the sum of both
directions' delays), rate with a short TCP transfer per shaped direction (steady state only, converted from
goodput to the link-layer rate the shaper enforces), and loss with many pings where loss is set.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import HostProcess, Lab
from mptcpkit.lab.model import Link

RTT_TOLERANCE = 0.05
RATE_TOLERANCE = 0.03
ETHERNET_HEADER = 14
_PING_TIME = re.compile(r"time=([\d.]+) ms")
_PING_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) received")


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
    src, dst = _first_address(link, link.a.host, 4), _first_address(link, link.b.host, 4)
    if src is None or dst is None:
        return None
    return ["ping", "-n", "-c", str(count), "-i", str(interval), "-W", "3", "-I", src, dst]


def rtt_check(link: Link, ping_output: str) -> Check:
    """Judge the round-trip time over `link` from ping's output."""
    configured_ms = 1000 * (link.a_to_b.delay_s + link.b_to_a.delay_s)
    samples = [float(m) for m in _PING_TIME.findall(ping_output)]
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
    """Judge the round-trip loss over `link` from ping's summary line."""
    expected = 1 - (1 - link.a_to_b.loss) * (1 - link.b_to_a.loss)
    match = _PING_LOSS.search(ping_output)
    if not match:
        return Check(link.name, "both", "loss", "%", 100 * expected, math.nan, 0.0, False, "no ping summary")
    sent, received = int(match.group(1)), int(match.group(2))
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
    """Judge the link-layer rate of one direction from the probe sink's per-interval byte counts."""
    direction = link.a_to_b if forward else link.b_to_a
    configured = float(direction.rate_bps or 0)
    name = "a->b" if forward else "b->a"
    try:
        data = json.loads(sink_output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {"error": f"no result from the rate probe: {sink_output.strip()[-200:]!r}"}
    if "error" in data:
        return Check(
            link.name,
            name,
            "rate",
            "Mbit/s",
            configured / 1e6,
            math.nan,
            RATE_TOLERANCE,
            False,
            str(data["error"]),
        )
    counts, interval, mss = data["bytes"], data["interval"], data["mss"]
    skip = max(2, round(0.6 / interval))  # leave slow start out
    steady = counts[skip:-1] or counts
    goodput = 8 * statistics.fmean(steady) / interval
    header = link.mtu - mss + ETHERNET_HEADER
    measured = goodput * (mss + header) / mss
    ok = abs(measured - configured) <= RATE_TOLERANCE * configured
    return Check(
        link.name,
        name,
        "rate",
        "Mbit/s",
        configured / 1e6,
        measured / 1e6,
        RATE_TOLERANCE,
        ok,
        f"goodput {goodput / 1e6:.2f} Mbit/s, MSS {mss}",
    )


def _start_rate_probe(lab: Lab, link: Link, forward: bool, duration: float, port: int) -> HostProcess | None:
    """Start the sink (returned) and the source of one direction's rate probe."""
    direction = link.a_to_b if forward else link.b_to_a
    sender, receiver = (link.a, link.b) if forward else (link.b, link.a)
    src, dst = _first_address(link, sender.host, 4), _first_address(link, receiver.host, 4)
    if not direction.rate_bps or src is None or dst is None:
        return None
    probe = ["-m", "mptcpkit.lab.probe"]
    sink_host, source_host = lab.host(receiver.host), lab.host(sender.host)
    sink = sink_host.spawn(
        [
            *sink_host.python_argv(),
            *probe,
            "sink",
            "--bind",
            dst,
            "--port",
            str(port),
            "--duration",
            str(duration),
        ]
    )
    ready = sink.readline(timeout=15)
    if not ready or "ready" not in ready:
        raise LabError(f"self-check: rate probe did not start for {link.name}: {sink.wait(5).stderr}")
    source_host.spawn(
        [
            *source_host.python_argv(),
            *probe,
            "source",
            "--connect",
            dst,
            "--port",
            str(port),
            "--duration",
            str(duration),
            "--bind",
            src,
        ]
    )
    return sink


def self_check(
    lab: Lab, *, rate_duration: float = 2.0, progress: Callable[[str], None] | None = None
) -> list[Check]:
    """Measure every link of `lab` at once (links are independent); one Check per measured quantity."""
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
            host.run([*argv[:2], "-c", "1", *argv[-4:]], check=False, timeout=10)  # ARP warm-up
            probes.append(("rtt", link, True, host.spawn(argv)))
            if link.a_to_b.loss or link.b_to_a.loss:
                probes.append(("loss", link, True, host.spawn(_ping_argv(link, 400, 0.005) or argv)))
        # Pings first and alone: a rate probe fills the queues and would add its queueing delay to the RTT.
        checks = []
        for kind, link, _forward, proc in probes:
            output = proc.wait(timeout=60).stdout
            checks.append(rtt_check(link, output) if kind == "rtt" else loss_check(link, output))
        # Rates: every link at once, but one direction at a time: a saturated reverse direction queues the
        # probe's ACKs behind its data and would make the forward probe ACK-limited, not link-limited.
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
