"""The traffic engine's result schema: what one server or client process prints as JSON.

Every engine (our own, iperf3) produces a `TrafficResult`, so the runner handles one shape. `to_json` /
`from_json` round-trip exactly; unknown keys are ignored on read so newer producers stay readable.
Times are Unix seconds (float); rates are bits per second counted at the RECEIVER.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

SCHEMA_VERSION = 1

MODES = ("bulk-upload", "bulk-download", "bulk-both", "rr", "connect", "stream")
PROTOS = ("mptcp", "tcp")
INTEGRITY_MODES = ("sha256", "verify", "none")


@dataclass(slots=True)
class ErrorInfo:
    """A failure the engine reports instead of a traceback."""

    kind: str
    """refused | timeout | reset | protocol | usage | environment | io"""
    message: str


@dataclass(slots=True)
class Sample:
    """Receiver-side progress at one instant of a stream (interval samples for goodput-over-time plots)."""

    t: float
    """seconds since the stream started"""
    bytes: int
    """bytes received so far (cumulative)"""
    bps: float
    """goodput over the interval that ends here"""


@dataclass(slots=True)
class StreamResult:
    """One direction of bulk data on one connection, seen from both ends (the peer sends its half)."""

    direction: str
    """upload (client -> server) or download (server -> client)"""
    connection: int
    bytes_sent: int
    bytes_received: int
    start: float
    """Unix time the receiver started waiting for data"""
    end: float
    """Unix time the receiver got the end-of-stream record"""
    duration_s: float
    goodput_bps: float
    """receiver bytes * 8 / receiver duration"""
    integrity: str
    """sha256 | verify | none"""
    sender_sha256: str | None
    receiver_sha256: str | None
    integrity_ok: bool | None
    """None when integrity == none"""
    first_bad_offset: int | None = None
    """verify mode: first stream offset that differs from the expected pattern"""
    sender_duration_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)


@dataclass(slots=True)
class SubflowStats:
    """One subflow's addresses and `tcp_info` counters (MPTCP_SUBFLOW_ADDRS + MPTCP_TCPINFO)."""

    local: str
    local_port: int
    remote: str
    remote_port: int
    bytes_sent: int
    bytes_received: int
    bytes_acked: int
    bytes_retrans: int
    total_retrans: int
    rtt_us: int
    min_rtt_us: int
    snd_mss: int
    rcv_mss: int
    snd_cwnd: int
    delivery_rate: int


@dataclass(slots=True)
class SubflowSample:
    """Per-subflow cumulative byte counters at one instant (t relative to the connection's data start)."""

    t: float
    subflows: list[SubflowBytes]


@dataclass(slots=True)
class SubflowBytes:
    """Counters of one subflow in a `SubflowSample`; the address pair says which link it is."""

    local: str
    remote: str
    bytes_sent: int
    bytes_received: int
    bytes_acked: int


@dataclass(slots=True)
class ConnectionStats:
    """One connection at the end of its data phase, from this process's socket."""

    index: int
    proto: str
    local: str
    remote: str
    mss: int | None
    """TCP_MAXSEG of the socket, else the first subflow's snd_mss"""
    fallback: bool
    fallback_reason: str | None
    mptcp_info: dict[str, int] | None
    subflows: list[SubflowStats] = field(default_factory=list)
    subflow_samples: list[SubflowSample] = field(default_factory=list)


@dataclass(slots=True)
class LatencySummary:
    """Percentiles of one latency sample set (microseconds) and its first raw samples (for CDFs)."""

    count: int
    p50_us: float
    p90_us: float
    p99_us: float
    p999_us: float
    min_us: float
    max_us: float
    mean_us: float
    samples_us: list[float] = field(default_factory=list)
    """raw samples, at most the first 10000"""


@dataclass(slots=True)
class RrResult:
    """Request/response: transactions per second and latency percentiles (microseconds)."""

    request_size: int
    response_size: int
    transactions: int
    duration_s: float
    transactions_per_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    min_us: float
    max_us: float
    mean_us: float
    latencies_us: list[float] = field(default_factory=list)
    """raw samples, at most the first 10000"""
    p999_us: float = 0.0


@dataclass(slots=True)
class ConnectResult:
    """Connection setup time: connect() return minus connect() call, one sample per connection."""

    attempts: int
    successes: int
    failures: int
    samples_us: list[float]
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    connections_per_s: float = 0.0
    """client: successful connections / wall time; server: accepted probes / (last - first accept)"""
    served: LatencySummary | None = None
    """connect() call until the first byte the accepting server wrote arrived: includes the accept side"""
    completion: LatencySummary | None = None
    """connect() call until the last of `bytes_per_connection` bytes arrived (short transfers)"""
    join: LatencySummary | None = None
    """connect() call until the wanted number of additional subflows were established (MPTCP)"""
    bytes_per_connection: int = 1
    goodput_bps: float = 0.0
    """bytes received over all connections * 8 / wall time"""


@dataclass(slots=True)
class PacedResult:
    """An application stream at a fixed rate: per-message delay shows head-of-line blocking."""

    message_size: int
    rate_bps: float
    messages_sent: int
    messages_acked: int
    duration_s: float
    delay: LatencySummary
    """scheduled send time until the receiver's acknowledgement of the whole message arrived"""
    late_sends: int = 0
    """messages whose send began more than one message interval after its schedule (sender blocked)"""


@dataclass(slots=True)
class KernelMemory:
    """Kernel memory of this end's connections while all are open (mid-transfer).

    `per_connection_bytes` comes from the sockets themselves, so other load cannot disturb it: SO_MEMINFO of each
    connection's socket (receive queue + send queue + forward allocation + option memory) plus the slab object
    size of its socket and, for MPTCP, of each subflow's TCP socket. The machine-wide view is kept next to it:
    /proc/net/sockstat's TCP `mem` pages and the socket slabs of /proc/slabinfo, during minus before (both
    ends and every other lab on the machine count there).
    """

    connections: int
    sockstat_mem_bytes: int
    """machine-wide: TCP mem pages (sockstat) during minus before, in bytes"""
    slab_bytes: int
    """machine-wide: active objects x object size of the socket slabs, during minus before"""
    per_connection_bytes: float
    """(socket buffers + socket objects) / connections, from this end's own sockets"""
    slabs: dict[str, int] = field(default_factory=dict)
    """machine-wide, per slab: active objects during minus before"""
    socket_buffer_bytes: int = 0
    """SO_MEMINFO rmem_alloc + wmem_queued + fwd_alloc + optmem, summed over this end's connections"""
    socket_object_bytes: int = 0
    """slab object sizes of this end's sockets (MPTCP socket + one TCP socket per subflow)"""


@dataclass(slots=True)
class ProcessCpu:
    """CPU time of the process that printed the result, and of its peer when the engine knows it (iperf3)."""

    user_s: float
    sys_s: float
    source: str = "rusage"
    """rusage (our engine, at the end of the session) | iperf3 (its cpu_utilization_percent x duration)"""
    peer_user_s: float | None = None
    peer_sys_s: float | None = None


@dataclass(slots=True)
class TrafficResult:
    """The one JSON document a traffic process prints at the end of a session."""

    role: str
    """client | server"""
    engine: str
    """mptcpkit | iperf3"""
    mode: str
    proto: str
    ok: bool
    """no error, every checked stream intact, no fallback when proto == mptcp"""
    started_at: float
    ended_at: float
    error: ErrorInfo | None = None
    fallback: bool = False
    fallback_reason: str | None = None
    goodput_bps: float = 0.0
    """sum of the receiver-side goodput of every stream"""
    bytes_total: int = 0
    """receiver-side bytes of every stream"""
    streams: list[StreamResult] = field(default_factory=list)
    connections: list[ConnectionStats] = field(default_factory=list)
    rr: RrResult | None = None
    connect: ConnectResult | None = None
    paced: PacedResult | None = None
    memory: KernelMemory | None = None
    cpu: ProcessCpu | None = None
    options: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA_VERSION

    def to_json(self) -> str:
        """One line of JSON (the process prints exactly this)."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> TrafficResult:
        """Parse a document printed by `to_json` (or built by another engine's parser)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("traffic result must be a JSON object")
        return from_dict(cls, data)


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build dataclass `cls` from a dict, recursing into nested dataclasses, lists and optionals."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name])
    return cls(**kwargs)


def _convert(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], value) if len(args) == 1 else value
    if origin is list:
        (item,) = typing.get_args(tp)
        return [_convert(item, v) for v in value]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value
