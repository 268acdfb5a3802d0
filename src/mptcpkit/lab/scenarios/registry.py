"""Named tables of metric kinds, expectations, extension sections and repetition hooks.

Scenario files name what to measure (`kind = "goodput"`) and what to expect (`expect = "goodput_limit"`); the
loader looks both up here, so new kinds are added by registering them, never by editing the loader:

    from mptcpkit.lab.scenarios.registry import MetricKind, register_metric

    def cpu_per_gb(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
        return ctx.extras["cpu"]["seconds"] / (ctx.outcome().client.total_bytes / 1e9)

    register_metric(MetricKind("cpu_per_gb", "s/GB", "lower", cpu_per_gb))

Signatures (see docs/scenarios.md, "Extending"):
- `Extract(ctx, options) -> float | None`: one repetition's value; None = not measurable here (e.g. subflow
  counts with iperf3), the metric is then left out of that repetition.
- `Compute(ctx, options) -> float | None`: the analytic expectation for that repetition; None = no expectation.
- `OptionParser(value) -> value`: checks and converts one option; raises ValueError with a message.
- `SectionParser(table) -> value`: a whole `[name]` table of a scenario file; raises ValueError.
- `RepHook(lab, spec, extras) -> context manager`: wraps each repetition's flows; may fill `extras`, which
  extractors read as `ctx.extras`.

Built-in kinds live in `kinds.py` and register themselves on import of `mptcpkit.lab.scenarios`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mptcpkit.errors import LabError
from mptcpkit.lab.model import Topology

if TYPE_CHECKING:
    from mptcpkit.lab.backends.base import Lab
    from mptcpkit.lab.scenarios.base import FlowOutcome
    from mptcpkit.lab.scenarios.spec import FlowSpec, ScenarioSpec

Better = Literal["higher", "lower"]
OptionParser = Callable[[Any], Any]


@dataclass(frozen=True)
class MetricContext:
    """Everything an extractor or expectation may look at for one repetition."""

    spec: ScenarioSpec
    """The scenario as run: sizes, durations and action times already multiplied by `scale`."""
    topology: Topology
    lab: Lab
    outcomes: Mapping[str, FlowOutcome]
    """Flow name -> both ends' results."""
    flow: str | None
    """The metric's flow (`flow = ...`, default the first flow); None for kinds over several flows."""
    flows: Sequence[str] = ()
    """The metric's `flows = [...]` (empty unless given)."""
    action_times: Mapping[int, float] = field(default_factory=dict)
    """Action index -> measured seconds after the flows started."""
    scale: float = 1.0
    extras: Mapping[str, Any] = field(default_factory=dict)
    """What repetition hooks recorded (e.g. CPU accounting)."""

    def outcome(self, name: str | None = None) -> FlowOutcome:
        """The outcome of flow `name` (default: the metric's flow)."""
        key = name or self.flow or self.spec.flows[0].name
        try:
            return self.outcomes[key]
        except KeyError:
            raise LabError(f"scenario {self.spec.name}: no result for flow '{key}'") from None

    def flow_spec(self, name: str | None = None) -> FlowSpec:
        key = name or self.flow or self.spec.flows[0].name
        return next(f for f in self.spec.flows if f.name == key)

    def action_time(self, index: int = 0) -> float:
        """When action `index` happened (measured), else when it was planned."""
        if index in self.action_times:
            return self.action_times[index]
        if index < len(self.spec.actions):
            return self.spec.actions[index].at_s
        raise LabError(f"scenario {self.spec.name}: a metric refers to action {index}, which does not exist")


Extract = Callable[[MetricContext, Mapping[str, Any]], "float | None"]
Compute = Callable[[MetricContext, Mapping[str, Any]], "float | None"]
SectionParser = Callable[[Mapping[str, Any]], Any]
RepHook = Callable[["Lab", "ScenarioSpec", dict[str, Any]], AbstractContextManager[None]]


@dataclass(frozen=True)
class MetricKind:
    """A way to turn one repetition's flow results into one number."""

    name: str
    unit: str
    better: Better
    extract: Extract
    options: Mapping[str, OptionParser] = field(default_factory=dict)
    """Allowed keys of the metric's `options` table and how each is parsed."""
    flows: Literal["one", "many"] = "one"
    """'one': uses `flow` (default the first); 'many': uses `flows = [...]` (default all flows)."""
    description: str = ""
    required: frozenset[str] = frozenset()
    """Options that must be given."""


@dataclass(frozen=True)
class ExpectationKind:
    """An analytic expectation: what the links allow, computed before looking at the measurement."""

    name: str
    compute: Compute
    options: Mapping[str, OptionParser] = field(default_factory=dict)
    description: str = ""
    required: frozenset[str] = frozenset()


_METRICS: dict[str, MetricKind] = {}
_EXPECTATIONS: dict[str, ExpectationKind] = {}
_SECTIONS: dict[str, SectionParser] = {}
_REP_HOOKS: dict[str, RepHook] = {}


def _add(table: dict[str, Any], name: str, value: Any, replace: bool, what: str) -> None:
    if name in table and not replace and table[name] is not value:
        raise ValueError(f"{what} '{name}' is already registered (pass replace=True to override it)")
    table[name] = value


def register_metric(kind: MetricKind, *, replace: bool = False) -> None:
    """Make `kind = "<name>"` usable in `[[metrics]]`."""
    _add(_METRICS, kind.name, kind, replace, "metric kind")


def register_expectation(kind: ExpectationKind, *, replace: bool = False) -> None:
    """Make `expect = "<name>"` usable in `[[metrics]]`."""
    _add(_EXPECTATIONS, kind.name, kind, replace, "expectation")


def register_section(name: str, parse: SectionParser, *, replace: bool = False) -> None:
    """Allow a top-level `[name]` table in scenario files; `parse(table)` lands in `ScenarioSpec.sections`."""
    _add(_SECTIONS, name, parse, replace, "section")


def register_rep_hook(name: str, hook: RepHook, *, replace: bool = False) -> None:
    """Wrap every repetition's flows in `hook(lab, spec, extras)` (a context manager)."""
    _add(_REP_HOOKS, name, hook, replace, "repetition hook")


def metric_kinds() -> Mapping[str, MetricKind]:
    return dict(_METRICS)


def expectation_kinds() -> Mapping[str, ExpectationKind]:
    return dict(_EXPECTATIONS)


def sections() -> Mapping[str, SectionParser]:
    return dict(_SECTIONS)


def rep_hooks() -> Mapping[str, RepHook]:
    return dict(_REP_HOOKS)
