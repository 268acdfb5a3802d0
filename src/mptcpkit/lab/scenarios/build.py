"""ScenarioSpec -> runnable Scenario: the topology resolved, flows and actions scaled, metrics evaluated.

Every scenario the lab runs goes through here, whether it came from a built-in file, a user's file or Python.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from mptcpkit.errors import TopologyError, UsageError
from mptcpkit.lab.backends.base import Lab
from mptcpkit.lab.model import ModelError, Topology, field_path_text
from mptcpkit.lab.scenarios import actions as lab_actions
from mptcpkit.lab.scenarios import kinds
from mptcpkit.lab.scenarios.base import (
    BASE_PORT,
    Action,
    Better,
    Flow,
    FlowOutcome,
    Measurement,
    RepOutcome,
    Rule,
    Scenario,
    connection_mss,
    goodput_series,
    per_link_rate_series,
    subflow_bytes_by_link,
)
from mptcpkit.lab.scenarios.registry import MetricContext, expectation_kinds, metric_kinds
from mptcpkit.lab.scenarios.resolve import apply_overrides, check_spec
from mptcpkit.lab.scenarios.spec import ActionSpec, FlowSpec, ScenarioSpec
from mptcpkit.lab.topology_file import load_topology

SIZE_QUANTUM = 65536


def base_topology(spec: ScenarioSpec) -> Topology:
    ref = spec.topology
    if ref.inline is not None:
        return ref.inline
    return load_topology(ref.builtin or ref.path or "two-paths")


def resolve_topology(spec: ScenarioSpec) -> Topology:
    """The topology `spec` runs on (its overrides applied), checked with the spec's cross references.

    Raises UsageError naming the scenario and field: specs made in Python get the checks files get.
    """
    try:
        topo = apply_overrides(base_topology(spec), spec.links, spec.hosts)
        check_spec(spec, topo)
    except ModelError as exc:
        raise UsageError(f"scenario {spec.name}: {field_path_text(exc.path)}: {exc.message}") from None
    except (KeyError, TopologyError) as exc:
        raise UsageError(f"scenario {spec.name}: {exc}") from None
    name = f"{topo.name} ({spec.name})" if (spec.links or spec.hosts) else topo.name
    return dataclasses.replace(topo, name=name)


def scaled(spec: ScenarioSpec, scale: float) -> ScenarioSpec:
    """Sizes, durations, start and action times times `scale` (sizes rounded down to 64 KiB)."""
    if scale == 1:
        return spec

    def size(value: int | None) -> int | None:
        if value is None:
            return None
        grown = int(value * scale)
        return max(SIZE_QUANTUM, grown // SIZE_QUANTUM * SIZE_QUANTUM) if value >= SIZE_QUANTUM else grown

    flows = tuple(
        dataclasses.replace(
            f,
            size_bytes=size(f.size_bytes),
            duration_s=None if f.duration_s is None else f.duration_s * scale,
            start_s=f.start_s * scale,
        )
        for f in spec.flows
    )
    acts = tuple(dataclasses.replace(a, at_s=a.at_s * scale) for a in spec.actions)
    return dataclasses.replace(spec, flows=flows, actions=acts)


def runtime_flow(flow: FlowSpec) -> Flow:
    return Flow(
        client=flow.client,
        server=flow.server,
        proto=flow.proto,
        mode=flow.mode,
        bytes=flow.size_bytes,
        duration=flow.duration_s,
        parallel=flow.parallel,
        rr_size=flow.rr_size,
        count=flow.count,
        server_address=flow.to,
        engine=flow.engine,
        server_proto=flow.server_proto,
        name=flow.name,
        start_s=flow.start_s,
        local=flow.local,
        rate_bps=flow.rate_bps,
        message_bytes=flow.message_bytes,
        join=flow.join,
        concurrency=flow.concurrency,
        memory=flow.memory,
        integrity=flow.integrity,
    )


def _action_descriptions(acts: Sequence[ActionSpec]) -> list[str]:
    labels = [f"{a.label()} at {a.at_s:g}s" for a in acts]
    return [f"{text} (#{i})" if labels.count(text) > 1 else text for i, text in enumerate(labels)]


def build(spec: ScenarioSpec, scale: float = 1.0, engine: str | None = None) -> Scenario:
    """A runnable Scenario; `engine` ('mptcpkit' or 'iperf3') replaces every flow's engine."""
    kinds.ensure_registered()
    if engine is not None:
        flows = tuple(dataclasses.replace(f, engine=engine) for f in spec.flows)  # type: ignore[arg-type]
        spec = dataclasses.replace(spec, flows=flows)
    topology = resolve_topology(spec)
    run = scaled(spec, scale)
    if any(f.mode == "stream" for f in run.flows):
        from mptcpkit.lab.traffic.model import MODES as ENGINE_MODES

        if "stream" not in ENGINE_MODES:
            raise UsageError(
                f'scenario {spec.name}: mode "stream" is in the schema, but this traffic engine cannot pace '
                "messages yet (issue 11 adds it)"
            )
    state = lab_actions.LabState(topology)
    ports = {f.name: (f.client, BASE_PORT + i) for i, f in enumerate(run.flows)}
    descriptions = _action_descriptions(run.actions)
    timed = tuple(
        Action(
            a.at_s,
            text,
            lambda lab, a=a: lab_actions.apply_action(lab, a, state, ports.get(a.flow or "")),  # type: ignore[misc]
        )
        for a, text in zip(run.actions, descriptions, strict=True)
    )
    needs_restore = lab_actions.needs_restore(run)
    return Scenario(
        name=spec.name,
        description=spec.description,
        topology=lambda: topology,
        flows=tuple(runtime_flow(f) for f in run.flows),
        evaluate=_evaluator(run, topology, scale, descriptions),
        actions=timed,
        interval=spec.interval_s,
        timeout=spec.timeout_s,
        restore=(lambda lab: lab_actions.restore(lab, state)) if needs_restore else None,
        tags=spec.tags,
        spec=run,
        origin=spec.origin or "python",
    )


def _evaluator(spec: ScenarioSpec, topology: Topology, scale: float, descriptions: list[str]) -> Any:
    index_of = {text: i for i, text in enumerate(descriptions)}

    def evaluate(
        scn: Scenario, lab: Lab, outcomes: list[FlowOutcome], times: dict[str, float], extras: dict[str, Any]
    ) -> RepOutcome:
        by_name = {f.name: o for f, o in zip(spec.flows, outcomes, strict=True)}
        action_times = {index_of[text]: t for text, t in times.items() if text in index_of}
        measurements: list[Measurement] = []
        for metric in spec.metrics:
            kind = metric_kinds()[metric.kind]
            ctx = MetricContext(
                spec=spec,
                topology=topology,
                lab=lab,
                outcomes=by_name,
                flow=metric.flow if kind.flows == "one" else None,
                flows=metric.flows,
                action_times=action_times,
                scale=scale,
                extras=extras,
            )
            value = kind.extract(ctx, metric.options)
            if value is None:
                continue
            expected: float | None
            if isinstance(metric.expect, str):
                expectation = expectation_kinds()[metric.expect]
                expected = expectation.compute(ctx, metric.expect_options)
            else:
                expected = metric.expect
            rule = None
            if metric.rule is not None and expected is not None:
                rule = Rule("ge" if metric.rule.op == ">=" else "le", metric.rule.factor)
            measurements.append(Measurement(metric.name, kind.unit, kind.better, value, expected, rule))
        values = {m.metric: m.value for m in measurements}
        for relation in spec.relations:
            left, right = values.get(relation.left), values.get(relation.right)
            if left is None or right is None:
                continue
            ratio = left / right if right else math.nan
            rule = Rule("ge" if relation.op == ">=" else "le", relation.factor)
            better: Better = "higher" if relation.op == ">=" else "lower"
            measurements.append(Measurement(relation.name, "x", better, ratio, 1.0, rule))
        details: dict[str, Any] = {
            "mss": {f.name: connection_mss(o.client) for f, o in zip(spec.flows, outcomes, strict=True)}
        }
        if spec.params:
            details["params"] = dict(spec.params)
        details.update(extras.get("details", {}))  # what repetition hooks want stored (e.g. the CPU method)
        return RepOutcome(measurements, series=_series(lab, spec, outcomes), details=details)

    return evaluate


def _series(
    lab: Lab, spec: ScenarioSpec, outcomes: list[FlowOutcome]
) -> list[tuple[str, float, list[float]]]:
    """Goodput over time and per-link subflow rates; flows after the first are prefixed with their name."""
    series = []
    for index, (flow, outcome) in enumerate(zip(spec.flows, outcomes, strict=True)):
        prefix = "" if index == 0 else f"{flow.name}:"
        interval, values = goodput_series(outcome.client)
        if values:
            series.append((f"{prefix}goodput", interval, values))
        for name, step, rates in per_link_rate_series(
            subflow_bytes_by_link(lab, outcome.client, flow.client)
        ):
            series.append((f"{prefix}{name}", step, rates))
    from mptcpkit.lab.cost_metrics import latency_cdf_series  # issue 11: latency CDFs for reports

    return series + latency_cdf_series(spec.flows, outcomes)
