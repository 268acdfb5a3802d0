"""The default scenario suite.

Each scenario = topology + traffic + analytic expectation + pass rule. Sizes are chosen so an ideal transfer
takes about `TARGET_SECONDS`: long enough to leave slow start behind, short enough for the whole default suite
to finish in a few minutes. `mptcpkit lab run --scale 4` makes every transfer four times longer.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import statistics
from collections.abc import Callable

from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.model import Direction, Endpoint, MptcpSettings, Topology
from mptcpkit.lab.scenarios.base import (
    Action,
    Flow,
    FlowOutcome,
    RepOutcome,
    Rule,
    Scenario,
    connection_mss,
    goodput_series,
    metric,
    per_link_rate_series,
    steady_goodput,
    subflow_bytes_by_link,
)
from mptcpkit.lab.scenarios.expectations import (
    aggregate_goodput_limit,
    goodput_limit,
    jain_index,
    simult_flows_time_bound,
)
from mptcpkit.lab.topology_file import load_topology

TARGET_SECONDS = 3.0
DEFAULT_MSS = 1448
MBIT = 1e6


def two_paths(
    rate1: float,
    rate2: float,
    delay1: float = 0.0,
    delay2: float = 0.0,
    *,
    backup_path2: bool = False,
    signal_server: bool = False,
) -> Topology:
    """The built-in two-paths topology with both links reshaped (rates in Mbit/s, delays in ms one-way)."""
    topo = load_topology("two-paths")
    topo = topo.with_link(
        "path1",
        a_to_b=Direction(int(rate1 * MBIT), delay1 / 1e3),
        b_to_a=Direction(int(rate1 * MBIT), delay1 / 1e3),
    )
    topo = topo.with_link(
        "path2",
        a_to_b=Direction(int(rate2 * MBIT), delay2 / 1e3),
        b_to_a=Direction(int(rate2 * MBIT), delay2 / 1e3),
    )
    if backup_path2:
        client = topo.host("client")
        endpoints = tuple(
            dataclasses.replace(ep, flags=frozenset({"subflow", "backup"})) for ep in client.mptcp.endpoints
        )
        topo = topo.with_host("client", mptcp=dataclasses.replace(client.mptcp, endpoints=endpoints))
    if signal_server:
        topo = topo.with_host("client", mptcp=MptcpSettings(subflows=2, add_addr_accepted=2))
        topo = topo.with_host(
            "server",
            mptcp=MptcpSettings(
                subflows=2,
                add_addr_accepted=2,
                endpoints=(Endpoint(ipaddress.ip_address("10.0.2.2"), frozenset({"signal"}), dev="eth1"),),
            ),
        )
    return dataclasses.replace(topo, name=f"two-paths {rate1:g}/{rate2:g} Mbit/s {delay1:g}/{delay2:g} ms")


def one_path(rate: float, delay: float = 5.0) -> Topology:
    """Client and server joined by one link (no extra endpoint)."""
    topo = load_topology("two-paths")
    link = topo.link("path1")
    shape = Direction(int(rate * MBIT), delay / 1e3)
    link = dataclasses.replace(link, a_to_b=shape, b_to_a=shape)
    hosts = tuple(dataclasses.replace(h, mptcp=MptcpSettings()) for h in topo.hosts)
    return dataclasses.replace(
        topo, name=f"one-path {rate:g} Mbit/s {delay:g} ms", hosts=hosts, links=(link,)
    )


def shared_bottleneck(core_rate: float) -> Topology:
    """The routed topology with its router-server link as the shared bottleneck."""
    topo = load_topology("routed")
    core = Direction(int(core_rate * MBIT), 0.005)
    fast = Direction(int(100 * MBIT), 0.005)
    topo = topo.with_link("core", a_to_b=core, b_to_a=core)
    topo = topo.with_link("path1", a_to_b=fast, b_to_a=fast).with_link("path2", a_to_b=fast, b_to_a=fast)
    return dataclasses.replace(topo, name=f"routed, {core_rate:g} Mbit/s shared bottleneck")


def _size_for(rate_mbit: float, seconds: float) -> int:
    return int(rate_mbit * MBIT * 0.9 * seconds / 8) // 65536 * 65536


def _series(lab: Lab, outcome: FlowOutcome) -> list[tuple[str, float, list[float]]]:
    series = []
    interval, values = goodput_series(outcome.client)
    if values:
        series.append(("goodput", interval, values))
    series += per_link_rate_series(subflow_bytes_by_link(lab, outcome.client, outcome.flow.client))
    return series


# ---- single path: the overhead of MPTCP against TCP ---------------------------------------------------


def _single_path(proto: str, rate: float) -> Callable[..., RepOutcome]:
    def evaluate(scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float]) -> RepOutcome:
        (outcome,) = outcomes
        mss = connection_mss(outcome.client) or DEFAULT_MSS
        limit = goodput_limit(rate * MBIT, mss, mptcp=proto == "mptcp")
        measured = steady_goodput(outcome.client)
        return RepOutcome(
            [metric("goodput", "Mbit/s", "higher", measured / MBIT, limit / MBIT, Rule("ge", 0.97))],
            series=_series(lab, outcome),
            details={"mss": mss},
        )

    return evaluate


# ---- aggregation: the simult_flows cases --------------------------------------------------------------


def _aggregation(
    rate1: float, rate2: float, size: int, min_score: float | None = None
) -> Callable[..., RepOutcome]:
    def evaluate(scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float]) -> RepOutcome:
        (outcome,) = outcomes
        mss = connection_mss(outcome.client) or DEFAULT_MSS
        stream = outcome.client.streams[0] if outcome.client.streams else None
        elapsed = stream.duration_s if stream else float("nan")
        bound = simult_flows_time_bound(size, [rate1 * MBIT, rate2 * MBIT])
        limit = aggregate_goodput_limit([rate1 * MBIT, rate2 * MBIT], mss)
        goodput_rule = Rule("ge", min_score) if min_score else None
        measurements = [
            metric("transfer_time", "s", "lower", elapsed, bound, Rule("le")),
            metric(
                "goodput",
                "Mbit/s",
                "higher",
                steady_goodput(outcome.client) / MBIT,
                limit / MBIT,
                goodput_rule,
            ),
        ]
        if outcome.flow.engine == "mptcpkit":  # iperf3 cannot tell how many subflows it used
            subflows = max((len(c.subflows) for c in outcome.client.connections), default=0)
            measurements.append(metric("subflows", "", "higher", float(subflows), 2.0, Rule("ge")))
        return RepOutcome(measurements, series=_series(lab, outcome), details={"mss": mss, "bytes": size})

    return evaluate


def aggregation(
    name: str,
    rate1: float,
    rate2: float,
    delay1: float,
    delay2: float,
    description: str,
    seconds: float,
    min_score: float | None = None,
) -> Scenario:
    size = _size_for(rate1 + rate2, seconds)
    return Scenario(
        name=name,
        description=description,
        topology=lambda: two_paths(rate1, rate2, delay1, delay2),
        flows=(Flow(mode="bulk-download", bytes=size),),
        evaluate=_aggregation(rate1, rate2, size, min_score),
        tags=("aggregation",),
    )


# ---- backup and failover -------------------------------------------------------------------------------


def _link_down(name: str) -> Callable[[Lab], None]:
    return lambda lab: lab.set_link_up(name, False)


def _links_up(lab: Lab) -> None:
    for link in lab.topology.links:
        lab.set_link_up(link.name, True)


def _stall_after(values: list[float], interval: float, at_s: float, threshold: float) -> float:
    """Seconds from `at_s` until goodput is back above `threshold` Mbit/s."""
    start = int(at_s / interval)
    for index in range(start, len(values)):
        if values[index] >= threshold:
            return max(0.0, index * interval - at_s)
    return float("nan")


def _backup_eval(fail_at: float, rate: float) -> Callable[..., RepOutcome]:
    def evaluate(scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], times: dict[str, float]) -> RepOutcome:
        (outcome,) = outcomes
        by_link = subflow_bytes_by_link(lab, outcome.client, "client")
        fail_t = next(iter(times.values()), fail_at)

        def bytes_until(link: str, t: float) -> int:
            points = [b for (ts, b) in by_link.get(link, []) if ts <= t]
            return points[-1] if points else 0

        before = {link: bytes_until(link, fail_t) for link in ("path1", "path2")}
        total_before = sum(before.values()) or 1
        backup_share = before["path2"] / total_before
        interval, values = goodput_series(outcome.client)
        stall = _stall_after(values, interval or 0.1, fail_t, 0.25 * rate) if values else float("nan")
        after = [v for i, v in enumerate(values) if i * interval >= fail_t + 2.0]
        mss = connection_mss(outcome.client) or DEFAULT_MSS
        limit = goodput_limit(rate * MBIT, mss) / MBIT
        takeover = statistics.fmean(after) if after else 0.0
        return RepOutcome(
            [
                metric("backup_share", "%", "lower", 100 * backup_share, 5.0, Rule("le")),
                metric("takeover_goodput", "Mbit/s", "higher", takeover, limit, Rule("ge", 0.8)),
                metric("stall_time", "s", "lower", stall),
            ],
            series=_series(lab, outcome),
        )

    return evaluate


def _failover_eval(size: int, rate2: float) -> Callable[..., RepOutcome]:
    def evaluate(scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], times: dict[str, float]) -> RepOutcome:
        (outcome,) = outcomes
        stream = outcome.client.streams[0] if outcome.client.streams else None
        elapsed = stream.duration_s if stream else float("nan")
        mss = connection_mss(outcome.client) or DEFAULT_MSS
        # Upper bound: the whole transfer on the surviving path alone, plus 1 s to notice the failure.
        bound = size * 8 / goodput_limit(rate2 * MBIT, mss) + 1.0
        fail_t = next(iter(times.values()), 1.0)
        interval, values = goodput_series(outcome.client)
        stall = _stall_after(values, interval or 0.1, fail_t, 0.25 * rate2) if values else float("nan")
        intact = 1.0 if stream is not None and stream.integrity_ok else 0.0
        return RepOutcome(
            [
                metric("transfer_time", "s", "lower", elapsed, bound, Rule("le")),
                metric("stall_time", "s", "lower", stall),
                metric("integrity", "", "higher", intact, 1.0, Rule("ge")),
            ],
            series=_series(lab, outcome),
        )

    return evaluate


# ---- ADD_ADDR ----------------------------------------------------------------------------------------------


def _add_addr_eval(scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float]) -> RepOutcome:
    (outcome,) = outcomes
    subflows = outcome.client.connections[0].subflows if outcome.client.connections else []
    joined = any(s.remote == "10.0.2.2" for s in subflows)
    info = outcome.client.connections[0].mptcp_info or {} if outcome.client.connections else {}
    mss = connection_mss(outcome.client) or DEFAULT_MSS
    limit = aggregate_goodput_limit([20 * MBIT, 20 * MBIT], mss) / MBIT
    return RepOutcome(
        [
            metric("subflows", "", "higher", float(len(subflows)), 2.0, Rule("ge")),
            metric("joined_announced", "", "higher", 1.0 if joined else 0.0, 1.0, Rule("ge")),
            metric(
                "add_addr_accepted", "", "higher", float(info.get("add_addr_accepted", 0)), 1.0, Rule("ge")
            ),
            metric(
                "goodput", "Mbit/s", "higher", steady_goodput(outcome.client) / MBIT, limit, Rule("ge", 0.9)
            ),
        ],
        series=_series(lab, outcome),
    )


# ---- fairness -------------------------------------------------------------------------------------------


def _fairness_parallel_eval(
    scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float]
) -> RepOutcome:
    (outcome,) = outcomes
    per_flow = [s.goodput_bps / MBIT for s in outcome.client.streams]
    return RepOutcome(
        [
            metric("jain_index", "", "higher", jain_index(per_flow), 1.0, Rule("ge", 0.9)),
            metric("goodput", "Mbit/s", "higher", sum(per_flow)),
        ],
        details={"per_flow_mbit": per_flow},
    )


def _fairness_tcp_eval(
    scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float]
) -> RepOutcome:
    mptcp, tcp = outcomes
    mptcp_rate, tcp_rate = steady_goodput(mptcp.client) / MBIT, steady_goodput(tcp.client) / MBIT
    share = tcp_rate / (mptcp_rate + tcp_rate) if mptcp_rate + tcp_rate else float("nan")
    return RepOutcome(
        [
            # Linux MPTCP has no coupled congestion control: two subflows through one bottleneck take about two
            # thirds. The rule flags worse than that (TCP below 25 %); 50 % would be perfectly fair.
            metric("tcp_share", "%", "higher", 100 * share, 50.0, Rule("ge", 0.5)),
            metric("jain_index", "", "higher", jain_index([mptcp_rate, tcp_rate]), 1.0),
        ],
        details={"mptcp_mbit": mptcp_rate, "tcp_mbit": tcp_rate},
    )


def default_suite(scale: float = 1.0) -> list[Scenario]:
    """The scenarios `mptcpkit lab run` runs by default, in a stable order."""
    s = TARGET_SECONDS * scale
    backup_fail_at = 2.0 * scale
    failover_size = _size_for(20, 2 * s)
    scenarios = [
        Scenario(
            "tcp-baseline",
            "plain TCP over one 50 Mbit/s path: the reference for MPTCP's overhead",
            lambda: one_path(50),
            (Flow(proto="tcp", mode="bulk-download", duration=s),),
            _single_path("tcp", 50),
            tags=("single",),
        ),
        Scenario(
            "mptcp-single",
            "MPTCP over one 50 Mbit/s path: same limit minus the DSS option",
            lambda: one_path(50),
            (Flow(mode="bulk-download", duration=s),),
            _single_path("mptcp", 50),
            tags=("single",),
        ),
        aggregation("simult-balanced", 10, 10, 0, 0, "simult_flows: balanced 10/10 Mbit/s", s),
        aggregation("simult-unbalanced-15-5", 15, 5, 0, 0, "simult_flows: unbalanced 15/5 Mbit/s", s),
        aggregation("simult-unbalanced-10-3", 10, 3, 0, 0, "simult_flows: unbalanced 10/3 Mbit/s", s),
        aggregation("simult-delay-1-25", 10, 10, 1, 25, "simult_flows: 10/10 Mbit/s, 1/25 ms one-way", s),
        aggregation("simult-delay-25-1", 10, 10, 25, 1, "simult_flows: 10/10 Mbit/s, 25/1 ms one-way", s),
        aggregation(
            "aggregate-50-50",
            50,
            50,
            5,
            5,
            "two 50 Mbit/s paths: goodput >= 98.5 % of the limit",
            s * 1.5,
            min_score=0.985,
        ),
        Scenario(
            "backup",
            "a backup path carries nothing while the primary works, and takes over when it fails",
            lambda: two_paths(20, 20, 5, 5, backup_path2=True),
            (Flow(mode="bulk-download", duration=backup_fail_at + 4.0),),
            _backup_eval(backup_fail_at, 20),
            actions=(Action(backup_fail_at, "path1 down", _link_down("path1")),),
            restore=_links_up,
            tags=("resilience",),
        ),
        Scenario(
            "failover",
            "a link goes down mid-transfer: stall time, completion, integrity",
            lambda: two_paths(20, 20, 5, 5),
            (Flow(mode="bulk-download", bytes=failover_size),),
            _failover_eval(failover_size, 20),
            actions=(Action(1.0 * scale, "path1 down", _link_down("path1")),),
            restore=_links_up,
            tags=("resilience",),
        ),
        Scenario(
            "add-addr",
            "the server announces its second address (signal endpoint); the client joins it",
            lambda: two_paths(20, 20, 5, 5, signal_server=True),
            (Flow(mode="bulk-download", duration=s),),
            _add_addr_eval,
            tags=("pm",),
        ),
        Scenario(
            "fairness",
            "4 parallel MPTCP connections over two paths share them fairly (Jain index)",
            lambda: two_paths(20, 20, 5, 5),
            (Flow(mode="bulk-download", duration=s, parallel=4),),
            _fairness_parallel_eval,
            tags=("fairness",),
        ),
        Scenario(
            "fairness-tcp",
            "MPTCP (2 subflows) against one TCP flow through a shared 20 Mbit/s bottleneck",
            lambda: shared_bottleneck(20),
            (
                Flow(mode="bulk-download", duration=s + 1),
                Flow(proto="tcp", mode="bulk-download", duration=s + 1),
            ),
            _fairness_tcp_eval,
            tags=("fairness",),
        ),
    ]
    return scenarios


def scenario_names() -> list[str]:
    return [s.name for s in default_suite()]
