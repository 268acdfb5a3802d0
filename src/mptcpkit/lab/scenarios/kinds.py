"""The built-in metric kinds and expectations (registered by name in `registry.py`).

Each extractor is what the first wave's Python evaluators computed, so the default suite measures the same
thing from its files: steady-state goodput, the simult_flows time bound, stall and takeover after a link
failure, the share of bytes on a backup path, Jain's index.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from mptcpkit.lab.model import Link
from mptcpkit.lab.scenarios.base import (
    connection_mss,
    goodput_series,
    steady_goodput,
    subflow_bytes_by_link,
)
from mptcpkit.lab.scenarios.expectations import goodput_limit, jain_index, simult_flows_time_bound
from mptcpkit.lab.scenarios.registry import (
    ExpectationKind,
    MetricContext,
    MetricKind,
    metric_kinds,
    register_expectation,
    register_metric,
)
from mptcpkit.lab.scenarios.values import parse_bool, parse_index, parse_name, parse_names, parse_time
from mptcpkit.lab.units import parse_rate

MBIT = 1e6
DEFAULT_MSS = 1448


def flow_mss(ctx: MetricContext, flow: str | None = None) -> int:
    return connection_mss(ctx.outcome(flow).client) or DEFAULT_MSS


# ---- metric kinds -----------------------------------------------------------------------------------------


def _goodput(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    result = ctx.outcome().client
    if not options.get("steady", True):
        return sum(s.goodput_bps for s in result.streams) / MBIT
    return steady_goodput(result, options.get("skip", 1.0)) / MBIT


def _transfer_time(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    streams = ctx.outcome().client.streams
    return streams[0].duration_s if streams else math.nan


def _subflows(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    if ctx.flow_spec().engine != "mptcpkit":
        return None  # iperf3 cannot tell how many subflows it used
    return float(max((len(c.subflows) for c in ctx.outcome().client.connections), default=0))


def _integrity(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    streams = ctx.outcome().client.streams
    return 1.0 if streams and streams[0].integrity_ok else 0.0


def _stall_after(values: list[float], interval: float, at_s: float, threshold: float) -> float:
    """Seconds from `at_s` until goodput is back above `threshold` Mbit/s."""
    for index in range(int(at_s / interval), len(values)):
        if values[index] >= threshold:
            return max(0.0, index * interval - at_s)
    return math.nan


def _stall_time(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    interval, values = goodput_series(ctx.outcome().client)
    if not values:
        return math.nan
    at = ctx.action_time(options.get("action", 0))
    threshold = options.get("threshold")
    if threshold is None:
        before = [v for i, v in enumerate(values) if i * (interval or 0.1) < at]
        threshold = 0.25 * (statistics.median(before) if before else 0.0) * MBIT
    return _stall_after(values, interval or 0.1, at, threshold / MBIT)


def _goodput_after(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    interval, values = goodput_series(ctx.outcome().client)
    start = ctx.action_time(options.get("action", 0)) + options.get("settle", 2.0) * ctx.scale
    after = [v for i, v in enumerate(values) if i * interval >= start]
    return statistics.fmean(after) if after else 0.0


def _link_share(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    flow = ctx.flow_spec()
    by_link = subflow_bytes_by_link(ctx.lab, ctx.outcome().client, flow.client)
    until = ctx.action_time(options["action"]) if "action" in options else math.inf

    def bytes_until(link: str) -> int:
        points = [b for (ts, b) in by_link.get(link, []) if ts <= until]
        return points[-1] if points else 0

    before = {lk.name: bytes_until(lk.name) for lk in ctx.topology.links_of(flow.client)}
    total = sum(before.values()) or 1
    return 100 * before.get(options["link"], 0) / total


def _joined(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    connections = ctx.outcome().client.connections
    subflows = connections[0].subflows if connections else []
    return 1.0 if any(s.remote == options["address"] for s in subflows) else 0.0


def _mptcp_info(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    connections = ctx.outcome().client.connections
    info = (connections[0].mptcp_info or {}) if connections else {}
    value = info.get(options["field"], 0)
    return float(value) if isinstance(value, int | float) else math.nan


def _flow_rates(ctx: MetricContext) -> list[float]:
    names = list(ctx.flows) or [f.name for f in ctx.spec.flows]
    return [steady_goodput(ctx.outcome(name).client) / MBIT for name in names]


def _jain(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    names = list(ctx.flows) or [f.name for f in ctx.spec.flows]
    if len(names) == 1:  # the parallel connections of one flow, each over its whole life
        return jain_index([s.goodput_bps / MBIT for s in ctx.outcome(names[0]).client.streams])
    return jain_index(_flow_rates(ctx))


def _share(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    rates = _flow_rates(ctx)
    total = sum(rates)
    return 100 * rates[0] / total if total else math.nan


# ---- expectations -----------------------------------------------------------------------------------------


def _links(ctx: MetricContext, options: Mapping[str, Any]) -> list[Link]:
    flow = ctx.flow_spec()
    if "links" in options:
        return [ctx.topology.link(name) for name in options["links"]]
    return [lk for lk in ctx.topology.links_of(flow.client) if flow.server in (lk.a.host, lk.b.host)]


def _limit_bps(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    flow = ctx.flow_spec()
    links = _links(ctx, options)
    if not links:
        return None
    mss = flow_mss(ctx)
    senders = {"bulk-download": [flow.server], "bulk-upload": [flow.client]}.get(
        flow.mode, [flow.server, flow.client]
    )
    total = 0.0
    for link in links:
        for sender in senders:
            rate = link.direction_from(sender).rate_bps
            if not rate:
                return None  # an unshaped link has no analytic limit
            total += goodput_limit(rate, mss, link.mtu, mptcp=flow.proto == "mptcp")
    return total


def _expect_goodput(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    limit = _limit_bps(ctx, options)
    return None if limit is None else limit / MBIT


def _expect_simult(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    flow = ctx.flow_spec()
    rates = [lk.direction_from(flow.server).rate_bps or 0 for lk in _links(ctx, options)]
    if flow.size_bytes is None or not rates or not all(rates):
        return None
    return simult_flows_time_bound(flow.size_bytes, rates)


def _expect_time_at_limit(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
    flow = ctx.flow_spec()
    limit = _limit_bps(ctx, options)
    if flow.size_bytes is None or not limit:
        return None
    return flow.size_bytes * 8 / limit + float(options.get("slack", 0.0))


def _rate(value: object) -> float:
    return float(parse_rate(value))


_ACTION = {"action": parse_index}
_LINKS = {"links": parse_names}
BUILTIN_METRICS = (
    MetricKind("goodput", "Mbit/s", "higher", _goodput, {"skip": parse_time, "steady": parse_bool}),
    MetricKind("transfer_time", "s", "lower", _transfer_time),
    MetricKind("subflows", "", "higher", _subflows),
    MetricKind("integrity", "", "higher", _integrity),
    MetricKind("stall_time", "s", "lower", _stall_time, {**_ACTION, "threshold": _rate}),
    MetricKind("goodput_after", "Mbit/s", "higher", _goodput_after, {**_ACTION, "settle": parse_time}),
    MetricKind(
        "link_share", "%", "lower", _link_share, {**_ACTION, "link": parse_name}, required=frozenset({"link"})
    ),
    MetricKind("joined", "", "higher", _joined, {"address": parse_name}, required=frozenset({"address"})),
    MetricKind("mptcp_info", "", "higher", _mptcp_info, {"field": parse_name}, required=frozenset({"field"})),
    MetricKind("jain_index", "", "higher", _jain, flows="many"),
    MetricKind("share", "%", "higher", _share, flows="many"),
)
BUILTIN_EXPECTATIONS = (
    ExpectationKind("goodput_limit", _expect_goodput, _LINKS),
    ExpectationKind("simult_flows", _expect_simult, _LINKS),
    ExpectationKind("time_at_limit", _expect_time_at_limit, {**_LINKS, "slack": parse_time}),
)


def ensure_registered() -> None:
    """Register the built-in kinds once (idempotent)."""
    if "goodput" in metric_kinds():
        return
    for kind in BUILTIN_METRICS:
        register_metric(kind)
    for expectation in BUILTIN_EXPECTATIONS:
        register_expectation(expectation)
