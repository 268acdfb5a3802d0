"""A CPU-bound MPTCP transfer (one unshaped veth path, iperf3 as the generator: no userspace hashing in the way),
optionally with DSS checksums on: the known CPU regression profiling must locate, and the scenario its overhead
benchmark measures.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.model import Direction, MptcpSettings, Topology
from mptcpkit.lab.scenarios.base import Flow, FlowOutcome, Measurement, RepOutcome, Scenario, steady_goodput
from mptcpkit.lab.topology_file import load_topology


def unshaped_path(checksum: bool) -> Topology:
    topo = load_topology("two-paths")
    link = dataclasses.replace(topo.link("path1"), a_to_b=Direction(), b_to_a=Direction())
    sysctls = {"net.mptcp.checksum_enabled": "1" if checksum else "0"}
    hosts = tuple(
        dataclasses.replace(h, mptcp=MptcpSettings(), sysctls={**h.sysctls, **sysctls}) for h in topo.hosts
    )
    name = f"one unshaped path, checksums {'on' if checksum else 'off'}"
    return dataclasses.replace(topo, name=name, hosts=hosts, links=(link,))


def _evaluate(
    scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], _t: dict[str, float], _extras: dict[str, Any]
) -> RepOutcome:
    (outcome,) = outcomes
    return RepOutcome([Measurement("goodput", "Mbit/s", "higher", steady_goodput(outcome.client) / 1e6)])


def cpu_bound(checksum: bool = False, seconds: float = 4.0, engine: str = "iperf3") -> Scenario:
    """Same name with and without checksums, so two runs compare scenario by scenario."""
    return Scenario(
        "mptcp-cpu-bound",
        "one MPTCP bulk transfer as fast as the CPUs go (unshaped veth)",
        lambda: unshaped_path(checksum),
        (Flow(mode="bulk-download", duration=seconds, engine=engine),),  # type: ignore[arg-type]
        _evaluate,
        tags=("cpu",),
    )
