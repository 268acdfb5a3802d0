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
from mptcpkit.lab.backends.base import Lab
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


def check_rtt(lab: Lab, link: Link, count: int = 20) -> Check | None:
    """Round-trip time over `link`, from its a end."""
    src, dst = _first_address(link, link.a.host, 4), _first_address(link, link.b.host, 4)
    if src is None or dst is None:
        return None
    configured_ms = 1000 * (link.a_to_b.delay_s + link.b_to_a.delay_s)
    host = lab.host(link.a.host)
    host.run(["ping", "-n", "-q", "-c", "1", "-W", "3", "-I", src, dst], check=False, timeout=10)  # ARP warm-up
    out = host.run(
        ["ping", "-n", "-c", str(count), "-i", "0.05", "-W", "3", "-I", src, dst], check=False, timeout=30
    ).stdout
    samples = [float(m) for m in _PING_TIME.findall(out)]
    if not samples:
        return Check(link.name, "both", "rtt", "ms", configured_ms, math.nan, RTT_TOLERANCE, False,
                     "no ping reply over this link")
    measured = statistics.median(samples)
    spread = f"min {min(samples):.2f} max {max(samples):.2f} ms"
    if configured_ms < 1.0:
        # An unshaped link: only check that the emulation adds no significant latency.
        ok = measured < 1.0
        return Check(link.name, "both", "rtt", "ms", configured_ms, measured, RTT_TOLERANCE, ok, spread)
    ok = abs(measured - configured_ms) <= RTT_TOLERANCE * configured_ms
    return Check(link.name, "both", "rtt", "ms", configured_ms, measured, RTT_TOLERANCE, ok, spread)


def check_loss(lab: Lab, link: Link, count: int = 400) -> Check | None:
    """Round-trip loss over `link` where loss is configured."""
    if not (link.a_to_b.loss or link.b_to_a.loss):
        return None
    src, dst = _first_address(link, link.a.host, 4), _first_address(link, link.b.host, 4)
    if src is None or dst is None:
        return None
    expected = 1 - (1 - link.a_to_b.loss) * (1 - link.b_to_a.loss)
    out = lab.host(link.a.host).run(
        ["ping", "-n", "-q", "-c", str(count), "-i", "0.005", "-W", "2", "-I", src, dst], check=False, timeout=60
    ).stdout
    match = _PING_LOSS.search(out)
    if not match:
        raise LabError(f"self-check: cannot read ping output over {link.name}")
    sent, received = int(match.group(1)), int(match.group(2))
    measured = 1 - received / sent
    # Binomial 99 % band around the configured loss: a fixed relative tolerance is meaningless at a few %.
    band = 2.576 * math.sqrt(max(expected * (1 - expected), 1e-9) / sent) + 0.5 / sent
    ok = abs(measured - expected) <= band
    return Check(link.name, "both", "loss", "%", 100 * expected, 100 * measured, 100 * band, ok,
                 f"{sent} probes, 99 % band +/-{100 * band:.2f} points")


def check_rate(lab: Lab, link: Link, forward: bool, duration: float = 2.0, port: int = 47999) -> Check | None:
    """Link-layer rate delivered in one direction, from the steady state of a short TCP transfer."""
    direction = link.a_to_b if forward else link.b_to_a
    if not direction.rate_bps:
        return None
    sender, receiver = (link.a, link.b) if forward else (link.b, link.a)
    src, dst = _first_address(link, sender.host, 4), _first_address(link, receiver.host, 4)
    if src is None or dst is None:
        return None
    sink_host, source_host = lab.host(receiver.host), lab.host(sender.host)
    sink = sink_host.spawn([*sink_host.python_argv(), "-m", "mptcpkit.lab.probe", "sink", "--bind", dst,
                            "--port", str(port), "--duration", str(duration)])
    try:
        ready = sink.readline(timeout=15)
        if not ready or "ready" not in ready:
            raise LabError(f"self-check: rate probe did not start on {receiver.host}: {sink.wait(5).stderr}")
        source_host.run([*source_host.python_argv(), "-m", "mptcpkit.lab.probe", "source", "--connect", dst,
                         "--port", str(port), "--duration", str(duration), "--bind", src],
                        timeout=duration + 30)
        result = sink.wait(timeout=30)
    finally:
        sink.terminate()
    data = json.loads(result.stdout.strip().splitlines()[-1])
    if "error" in data:
        raise LabError(f"self-check: rate probe over {link.name} failed: {data['error']}")
    counts, interval, mss = data["bytes"], data["interval"], data["mss"]
    skip = max(2, int(round(0.6 / interval)))  # leave slow start out
    steady = counts[skip:-1]
    if len(steady) < 3:
        raise LabError("self-check: rate probe too short to measure")
    goodput = 8 * statistics.fmean(steady) / interval
    header = link.mtu - mss + ETHERNET_HEADER
    measured = goodput * (mss + header) / mss
    configured = float(direction.rate_bps)
    ok = abs(measured - configured) <= RATE_TOLERANCE * configured
    name = f"{sender.host}->{receiver.host}"
    return Check(link.name, "a->b" if forward else "b->a", "rate", "Mbit/s", configured / 1e6, measured / 1e6,
                 RATE_TOLERANCE, ok, f"{name} goodput {goodput / 1e6:.2f}, MSS {mss}")


def self_check(lab: Lab, *, rate_duration: float = 2.0, progress: Callable[[str], None] | None = None
               ) -> list[Check]:
    """Measure every link of `lab`; returns one Check per measured quantity."""
    say = progress or (lambda message: None)
    checks: list[Check] = []
    for link in lab.topology.links:
        say(f"self-check {link.name}: RTT")
        for check in (check_rtt(lab, link), check_loss(lab, link)):
            if check is not None:
                checks.append(check)
        for forward in (True, False):
            say(f"self-check {link.name}: rate {'a->b' if forward else 'b->a'}")
            rate = check_rate(lab, link, forward, duration=rate_duration)
            if rate is not None:
                checks.append(rate)
    return checks
