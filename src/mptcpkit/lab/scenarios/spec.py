"""What a scenario file says, as frozen dataclasses: the schema of `docs/scenarios.md`, nothing run-time.

Rule 1: a spec is pure data. It names hosts, links, flows and metric kinds; it holds no callables and touches no
lab. `build.py` turns a spec into a runnable `Scenario`; `loader.py` turns TOML into specs; Python code may build
specs directly (see docs/scenarios.md, "Python API") and gets the same validation through `check_spec`.

Rule 2: units are resolved here: rates in bit/s, times in seconds, sizes in bytes, loss as a fraction 0..1.
Times and sizes are the values at `--scale 1`; `build(spec, scale)` multiplies flow sizes, durations, start times
and action times.

Rule 3: a sweep case is an ordinary spec whose `name` carries its parameters (`unequal[subflows=4,loss=1%]`),
`sweep` the file's name and `params` the values; everything downstream (runner, store, compare, history) treats
a case as a scenario of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from mptcpkit.lab.model import Endpoint, Topology

Proto = Literal["mptcp", "tcp"]
Engine = Literal["mptcpkit", "iperf3"]
MODES = ("bulk-upload", "bulk-download", "bulk-both", "rr", "connect", "stream")
"""Flow modes. `stream` (paced messages at a rate) is accepted by the schema; the traffic engine gains it with
helper `cost` (issue 11). Until then a `stream` flow fails at run time with a clear message."""
ACTION_KINDS = (
    "link-down",
    "link-up",
    "set-link",
    "add-endpoint",
    "remove-endpoint",
    "set-backup",
    "clear-backup",
    "close-subflow",
    "set-sysctl",
)
RuleOp = Literal[">=", "<="]


@dataclass(frozen=True, slots=True)
class ShapeOverride:
    """Changes to one direction of a link; None leaves the topology's value."""

    rate_bps: int | None = None
    delay_s: float | None = None
    jitter_s: float | None = None
    loss: float | None = None
    queue_packets: int | None = None
    reorder: float | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, name) is None for name in self.__slots__)  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class LinkOverride:
    """`[links.NAME]`: reshape a link of the topology, both directions or each on its own."""

    name: str
    a_to_b: ShapeOverride = ShapeOverride()
    b_to_a: ShapeOverride = ShapeOverride()
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class HostOverride:
    """`[hosts.NAME]`: per-host sysctls (merged over the topology's) and MPTCP settings."""

    name: str
    sysctls: Mapping[str, str] = field(default_factory=dict)
    scheduler: str | None = None
    path_manager: Literal["kernel", "userspace"] | None = None
    subflows: int | None = None
    add_addr_accepted: int | None = None
    endpoints: tuple[Endpoint, ...] | None = None
    """None keeps the topology's endpoints; a tuple (also empty) replaces them."""


@dataclass(frozen=True, slots=True)
class TopologyRef:
    """Which topology a scenario starts from: exactly one of a built-in name, a file, or an inline topology."""

    builtin: str | None = None
    path: str | None = None
    """Relative paths are resolved against the scenario file's folder by the loader."""
    inline: Topology | None = None

    def text(self) -> str:
        if self.builtin:
            return self.builtin
        if self.path:
            return self.path
        return "inline"


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """`[[flows]]`: one traffic session (one engine client and server pair, possibly several connections)."""

    name: str
    client: str = "client"
    server: str = "server"
    proto: Proto = "mptcp"
    server_proto: Proto | None = None
    """A plain-TCP server against an MPTCP client: the client must fall back (the rep records it)."""
    mode: str = "bulk-download"
    size_bytes: int | None = None
    duration_s: float | None = None
    parallel: int = 1
    start_s: float = 0.0
    to: str | None = None
    """Server address the client connects to (default: the server's first IPv4 address)."""
    local: str | None = None
    """Client source address (binds the first subflow to a path)."""
    engine: Engine = "mptcpkit"
    rr_size: tuple[int, int] = (1, 1)
    count: int | None = None
    rate_bps: int | None = None
    """stream: the paced rate of messages."""
    message_bytes: int | None = None
    """stream: size of each message."""
    join: int = 0
    """connect: also time until this many more MPTCP subflows joined (traffic engine --join)."""
    concurrency: int = 1
    """connect: connections in flight at once."""
    memory: bool = False
    """bulk: kernel socket memory per connection (traffic engine --memory)."""
    integrity: str = "sha256"
    """bulk: sha256 | verify | none (none for CPU-cost scenarios: hashing would dominate the CPU time)."""


@dataclass(frozen=True, slots=True)
class ActionSpec:
    """`[[actions]]`: something done to the lab `at_s` seconds after the flows start."""

    at_s: float
    kind: str
    """One of ACTION_KINDS."""
    link: str | None = None
    direction: Literal["both", "a_to_b", "b_to_a"] = "both"
    shape: ShapeOverride = ShapeOverride()
    """set-link: the new shaping."""
    host: str | None = None
    address: str | None = None
    flags: tuple[str, ...] = ()
    dev: str | None = None
    flow: str | None = None
    key: str | None = None
    value: str | None = None

    def label(self) -> str:
        """How the action is named in results, e.g. 'path1 down at 2s'."""
        what = {
            "link-down": f"{self.link} down",
            "link-up": f"{self.link} up",
            "set-link": f"{self.link} reshaped",
            "add-endpoint": f"endpoint {self.address} added on {self.host}",
            "remove-endpoint": f"endpoint {self.address} removed on {self.host}",
            "set-backup": f"endpoint {self.address} backup on {self.host}",
            "clear-backup": f"endpoint {self.address} not backup on {self.host}",
            "close-subflow": f"subflow of {self.flow} on {self.link} closed",
            "set-sysctl": f"{self.key}={self.value} on {self.host}",
        }.get(self.kind, self.kind)
        return what


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A pass rule: median `op` factor x expected. Written `">= 0.97"`, `"<="`, `"<= 1.1"`."""

    op: RuleOp
    factor: float = 1.0

    def text(self) -> str:
        return f"{self.op} {self.factor:g}"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """`[[metrics]]`: a named measurement, computed by a registered metric kind, with an optional expectation.

    `expect` is the name of a registered expectation (computed from topology, flow and socket MSS) or a
    number in the metric's unit (a plain threshold); `rule` compares the median over repetitions with it.
    """

    name: str
    kind: str
    flow: str | None = None
    """The flow the metric is computed from (default: the scenario's first flow)."""
    flows: tuple[str, ...] = ()
    """Kinds over several flows (jain_index, share) take a list instead."""
    options: Mapping[str, Any] = field(default_factory=dict)
    expect: str | float | None = None
    expect_options: Mapping[str, Any] = field(default_factory=dict)
    rule: RuleSpec | None = None


@dataclass(frozen=True, slots=True)
class RelationSpec:
    """`[[relations]]`: `left op factor * right` between two metrics of the same scenario, per repetition.

    Stored as a metric named `name` whose value is left/right (unit "x"), expected 1, rule `op factor`.
    """

    name: str
    left: str
    op: RuleOp
    factor: float
    right: str

    def text(self) -> str:
        return f"{self.left} {self.op} {self.factor:g} * {self.right}"


@dataclass(frozen=True, slots=True)
class ScenarioSpec:
    """One scenario (or one case of a sweep), fully validated, units resolved."""

    name: str
    topology: TopologyRef
    flows: tuple[FlowSpec, ...]
    description: str = ""
    tags: tuple[str, ...] = ()
    links: tuple[LinkOverride, ...] = ()
    hosts: tuple[HostOverride, ...] = ()
    actions: tuple[ActionSpec, ...] = ()
    metrics: tuple[MetricSpec, ...] = ()
    relations: tuple[RelationSpec, ...] = ()
    interval_s: float = 0.1
    timeout_s: float = 120.0
    restore: bool = True
    """Undo link-down/set-link/endpoint actions after each repetition, so the next starts from the topology."""
    profile: bool = False
    """Record a CPU profile of each repetition (issue 16, helper `profile`)."""
    sections: Mapping[str, Any] = field(default_factory=dict)
    """Extension tables registered with `registry.register_section` (e.g. `[cpu]` of helper `cost`)."""
    origin: str = ""
    """Where it came from: 'built-in', a file path, or 'python'."""
    sweep: str | None = None
    """For a sweep case: the sweep's name (the file's scenario name)."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """For a sweep case: the matrix parameters of this case, in matrix order."""


@dataclass(frozen=True, slots=True)
class SuiteSpec:
    """A suite file: scenarios (names, paths, globs), expanded, with run defaults."""

    name: str
    scenarios: tuple[ScenarioSpec, ...]
    description: str = ""
    reps: int | None = None
    scale: float | None = None
    origin: str = ""
