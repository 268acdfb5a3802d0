"""Metric kinds of issue 11 for scenario files: CPU per GB, latency percentiles, setup rate, message delay, memory.

Registered on import (mptcpkit.lab.scenarios imports this module), next to the built-in kinds. The `[cpu]`
section and the repetition hook that pins hosts and samples softirq live in `cpu_cost.py`.

| kind | unit | options |
|---|---|---|
| `cpu_per_gb` | s/GB | `part`: total (default), process, softirq, sender, receiver |
| `rr_latency` | us | `percentile`: 50, 90, 99 (default), 99.9 |
| `transactions` | 1/s | |
| `connect_time` | us | `percentile`; `phase`: connect (default), served (incl. the accept side), completion, join |
| `connect_rate` | 1/s | `side`: client (default), server (accepts/s) |
| `stream_delay` | us | `percentile` (default 99) |
| `kernel_memory` | KiB | per connection (sockstat + slab; the flow needs `memory = true`) |
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mptcpkit.lab import cpu_cost
from mptcpkit.lab.scenarios.registry import (
    MetricContext,
    MetricKind,
    metric_kinds,
    register_metric,
    register_rep_hook,
    register_section,
)
from mptcpkit.lab.traffic.model import LatencySummary, TrafficResult
from mptcpkit.lab.traffic.stats import latency_summary, percentile

if TYPE_CHECKING:
    from mptcpkit.lab.scenarios.base import FlowOutcome
    from mptcpkit.lab.scenarios.spec import FlowSpec

PERCENTILES = {50.0: "p50_us", 90.0: "p90_us", 99.0: "p99_us", 99.9: "p999_us"}
PARTS = ("total", "process", "softirq", "sender", "receiver")
PHASES = ("connect", "served", "completion", "join")


def parse_percentile(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) not in PERCENTILES:
        raise ValueError(f"percentile must be one of 50, 90, 99, 99.9, got {value!r}")
    return float(value)


def _choice(allowed: tuple[str, ...]) -> Any:
    def parse(value: object) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}, got {value!r}")
        return str(value)

    return parse


def _pick(summary: LatencySummary | None, options: Mapping[str, Any], default: float = 99.0) -> float:
    if summary is None or summary.count == 0:
        return math.nan
    return float(getattr(summary, PERCENTILES[options.get("percentile", default)]))


# ---- CPU ---------------------------------------------------------------------------------------------------


def _process_seconds(result: TrafficResult | None, peer: bool = True) -> float:
    if result is None or result.cpu is None:
        return 0.0
    cpu = result.cpu
    own = cpu.user_s + cpu.sys_s
    return own + ((cpu.peer_user_s or 0.0) + (cpu.peer_sys_s or 0.0) if peer else 0.0)


def cpu_seconds(ctx: MetricContext, part: str) -> float | None:
    """CPU seconds of one flow: its processes (rusage) plus softirq of the pinned CPUs over its window."""
    outcome = ctx.outcome()
    client, server = outcome.client, outcome.server
    info = ctx.extras.get("cpu")
    if info is None:
        return None  # the scenario has no [cpu] table
    streams = client.streams
    start = min((s.start for s in streams), default=client.started_at)
    end = max((s.end for s in streams), default=client.ended_at)
    series: cpu_cost.SoftirqSeries | None = info.get("series")
    softirq: dict[int, float] = series.between(start, end) if series is not None else {}
    pins: Mapping[str, int] = info.get("pins", {})
    flow = ctx.flow_spec()
    upload = flow.mode == "bulk-upload"
    sender_host, receiver_host = (flow.client, flow.server) if upload else (flow.server, flow.client)
    sender_res, receiver_res = (client, server) if upload else (server, client)
    if part == "process":
        return _process_seconds(client) + _process_seconds(server)
    if part == "softirq":
        return sum(softirq.values())
    if part in ("sender", "receiver"):
        host, res = (sender_host, sender_res) if part == "sender" else (receiver_host, receiver_res)
        if client.cpu is not None and client.cpu.source == "iperf3":
            return None  # iperf3 reports both ends, not which is which
        cpu = pins.get(host)
        return _process_seconds(res, peer=False) + (softirq.get(cpu, 0.0) if cpu is not None else 0.0)
    return _process_seconds(client) + _process_seconds(server) + sum(softirq.values())


def _cpu_per_gb(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    seconds = cpu_seconds(ctx, options.get("part", "total"))
    gigabytes = ctx.outcome().client.bytes_total / 1e9
    if seconds is None:
        return None
    return seconds / gigabytes if gigabytes > 0 else math.nan


# ---- latency, setup, memory ------------------------------------------------------------------------------


def _rr_latency(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    rr = ctx.outcome().client.rr
    if rr is None:
        return math.nan
    key = PERCENTILES[options.get("percentile", 99.0)]
    return float(getattr(rr, key))


def _transactions(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    rr = ctx.outcome().client.rr
    return rr.transactions_per_s if rr is not None else math.nan


def _connect_time(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    c = ctx.outcome().client.connect
    if c is None:
        return math.nan
    phase = options.get("phase", "connect")
    if phase == "connect":
        values = sorted(c.samples_us)
        if not values:
            return math.nan
        return _pick(latency_summary(values), options)
    summary: LatencySummary | None = getattr(c, phase)
    return _pick(summary, options)


def _connect_rate(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    outcome = ctx.outcome()
    result = outcome.server if options.get("side", "client") == "server" else outcome.client
    if result is None or result.connect is None:
        return math.nan
    return result.connect.connections_per_s


def _stream_delay(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    paced = ctx.outcome().client.paced
    return _pick(paced.delay if paced is not None else None, options)


def _kernel_memory(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    memory = ctx.outcome().client.memory
    return memory.per_connection_bytes / 1024 if memory is not None else math.nan


COST_METRICS = (
    MetricKind(
        "cpu_per_gb",
        "s/GB",
        "lower",
        _cpu_per_gb,
        options={"part": _choice(PARTS)},
        description="CPU seconds per GB moved: both processes' user+sys plus softirq of the pinned CPUs",
    ),
    MetricKind(
        "rr_latency",
        "us",
        "lower",
        _rr_latency,
        options={"percentile": parse_percentile},
        description="request/response latency percentile",
    ),
    MetricKind("transactions", "1/s", "higher", _transactions, description="request/response transactions/s"),
    MetricKind(
        "connect_time",
        "us",
        "lower",
        _connect_time,
        options={"percentile": parse_percentile, "phase": _choice(PHASES)},
        description="connection setup time percentile (connect, served incl. accept, completion, join)",
    ),
    MetricKind(
        "connect_rate",
        "1/s",
        "higher",
        _connect_rate,
        options={"side": _choice(("client", "server"))},
        description="connections per second",
    ),
    MetricKind(
        "stream_delay",
        "us",
        "lower",
        _stream_delay,
        options={"percentile": parse_percentile},
        description="paced stream: per-message delay percentile (head-of-line blocking)",
    ),
    MetricKind(
        "kernel_memory",
        "KiB",
        "lower",
        _kernel_memory,
        description="kernel socket memory per connection (sockstat + slab)",
    ),
)


CDF_QUANTILES = (0.0, 1.0, 5.0, *range(10, 91, 10), 95.0, 99.0, 99.5, 99.9, 100.0)
"""Quantiles (%) at which a flow's latency samples are stored for CDF plots (series `latency-cdf:FLOW`)."""


def _latency_samples(result: TrafficResult) -> list[float]:
    if result.rr is not None:
        return list(result.rr.latencies_us)
    if result.paced is not None:
        return list(result.paced.delay.samples_us)
    if result.connect is not None:
        served = result.connect.served
        return list(served.samples_us) if served is not None else list(result.connect.samples_us)
    return []


def latency_cdf_series(
    flows: Sequence[FlowSpec], outcomes: Sequence[FlowOutcome]
) -> list[tuple[str, float, list[float]]]:
    """Per latency flow (rr, stream, connect): its latency at CDF_QUANTILES, as a stored series (interval 0)."""
    out = []
    for flow, outcome in zip(flows, outcomes, strict=True):
        values = sorted(_latency_samples(outcome.client))
        if values:
            out.append((f"latency-cdf:{flow.name}", 0.0, [percentile(values, q) for q in CDF_QUANTILES]))
    return out


def ensure_registered() -> None:
    """Register the kinds, the [cpu] section and the CPU repetition hook once (idempotent)."""
    if "cpu_per_gb" in metric_kinds():
        return
    for kind in COST_METRICS:
        register_metric(kind)
    register_section("cpu", cpu_cost.parse_section)
    register_rep_hook("cpu", cpu_cost.account)


ensure_registered()
