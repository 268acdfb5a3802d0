"""What a scenario is: a topology, the flows to run on it, timed actions (a link pulled mid-transfer), and how
to turn the flows' results into metrics with an analytic expectation and a pass rule.

A scenario runs one repetition at a time on a lab that is already up; the runner does repetitions, ordering and
storage. Flows run as separate traffic-engine processes on the lab hosts, so a scenario never knows the backend.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.base import HostProcess, Lab
from mptcpkit.lab.model import Topology
from mptcpkit.lab.traffic.model import TrafficResult

if TYPE_CHECKING:
    from mptcpkit.lab.scenarios.spec import ScenarioSpec

Better = Literal["higher", "lower"]
BASE_PORT = 45000


@dataclass(frozen=True, slots=True)
class Rule:
    """A pass rule on the median of a metric: median >= factor*expected ('ge') or <= ('le')."""

    kind: Literal["ge", "le"]
    factor: float = 1.0

    def check(self, value: float, expected: float) -> bool:
        return value >= self.factor * expected if self.kind == "ge" else value <= self.factor * expected

    def text(self, expected: float, unit: str) -> str:
        sign = ">=" if self.kind == "ge" else "<="
        scaled = (
            f"{self.factor:.3g} x expected ({self.factor * expected:.4g} {unit})"
            if self.factor != 1
            else (f"expected ({expected:.4g} {unit})")
        )
        return f"median {sign} {scaled}"


@dataclass(slots=True)
class Measurement:
    """One metric of one repetition."""

    metric: str
    unit: str
    better: Better
    value: float
    expected: float | None = None
    rule: Rule | None = None


@dataclass(frozen=True, slots=True)
class Flow:
    """One traffic-engine session between two lab hosts."""

    client: str = "client"
    server: str = "server"
    proto: Literal["mptcp", "tcp"] = "mptcp"
    mode: str = "bulk-download"
    bytes: int | None = None
    duration: float | None = None
    parallel: int = 1
    rr_size: tuple[int, int] = (1, 1)
    count: int | None = None
    server_address: str | None = None  # default: the server's first IPv4 address
    engine: Literal["mptcpkit", "iperf3"] = "mptcpkit"
    server_proto: Literal["mptcp", "tcp"] | None = None  # a plain-TCP peer: the client must fall back
    name: str = "flow0"
    start_s: float = 0.0  # seconds after the first flow starts
    local: str | None = None  # client source address
    rate_bps: int | None = None  # stream mode
    message_bytes: int | None = None  # stream mode
    join: int = 0  # connect mode: wait for N more subflows
    concurrency: int = 1  # connect mode
    memory: bool = False  # bulk: kernel memory per connection
    integrity: str = "sha256"  # bulk: sha256 | verify | none

    def client_argv(self, address: str, port: int, interval: float) -> list[str]:
        argv = [
            "client",
            "--connect",
            address,
            "--port",
            str(port),
            "--proto",
            self.proto,
            "--mode",
            self.mode,
            "--interval",
            str(interval),
        ]
        if self.bytes is not None:
            argv += ["--bytes", str(self.bytes)]
        if self.duration is not None:
            argv += ["--duration", str(self.duration)]
        if self.parallel != 1:
            argv += ["--parallel", str(self.parallel)]
        if self.mode == "rr":
            argv += ["--rr-size", f"{self.rr_size[0]}:{self.rr_size[1]}"]
        if self.count is not None:
            argv += ["--count", str(self.count)]
        if self.local is not None:
            argv += ["--local", self.local]
        if self.mode == "stream":
            argv += ["--rate", str(self.rate_bps), "--message-size", str(self.message_bytes)]
        argv += ["--join", str(self.join)] if self.join else []
        argv += ["--concurrency", str(self.concurrency)] if self.concurrency != 1 else []
        argv += ["--memory"] if self.memory else []
        argv += ["--integrity", self.integrity] if self.integrity != "sha256" else []
        return argv


@dataclass(frozen=True, slots=True)
class Action:
    """Something done to the lab `at_s` seconds after the flows started (e.g. a link pulled)."""

    at_s: float
    description: str
    apply: Callable[[Lab], None]


@dataclass(slots=True)
class FlowOutcome:
    """Both ends' results of one flow."""

    flow: Flow
    client: TrafficResult
    server: TrafficResult | None
    started_at: float


@dataclass(slots=True)
class RepOutcome:
    """Everything one repetition produced."""

    measurements: list[Measurement]
    failure: str | None = None
    series: list[tuple[str, float, list[float]]] = field(default_factory=list)  # (name, interval, values)
    details: dict[str, Any] = field(default_factory=dict)


Evaluate = Callable[["Scenario", Lab, list[FlowOutcome], dict[str, float], dict[str, Any]], RepOutcome]
"""(scenario, lab, outcomes in flow order, action description -> seconds after start, hook extras)."""


@dataclass(frozen=True)
class Scenario:
    """A named lab experiment with its expectation."""

    name: str
    description: str
    topology: Callable[[], Topology]
    flows: tuple[Flow, ...]
    evaluate: Evaluate
    actions: tuple[Action, ...] = ()
    interval: float = 0.1
    timeout: float = 120.0
    restore: Callable[[Lab], None] | None = None  # undo the actions after each repetition
    tags: tuple[str, ...] = ()
    spec: ScenarioSpec | None = None  # what it was built from (files, the Python API)
    origin: str = "python"  # 'built-in', a file path, or 'python'

    def run_once(self, lab: Lab) -> RepOutcome:
        """Run all flows concurrently (with the timed actions and repetition hooks), then evaluate."""
        extras: dict[str, Any] = {}
        try:
            with ExitStack() as stack:
                if self.spec is not None:
                    from mptcpkit.lab.scenarios.registry import rep_hooks

                    for hook in rep_hooks().values():
                        stack.enter_context(hook(lab, self.spec, extras))
                outcomes, action_times = run_flows(lab, self.flows, self.actions, self.interval, self.timeout)
        finally:
            if self.restore is not None:
                self.restore(lab)
        failure = flow_failure(outcomes)
        outcome = self.evaluate(self, lab, outcomes, action_times, extras)
        if failure and not outcome.failure:
            outcome.failure = failure
        outcome.details.setdefault("actions", action_times)
        outcome.details["connections"] = connection_summaries(outcomes)
        return outcome


def connection_summaries(outcomes: Sequence[FlowOutcome]) -> list[dict[str, Any]]:
    """Per flow and connection: MPTCP_INFO and every subflow's addresses and tcp_info counters (kept raw)."""
    summaries = []
    for index, outcome in enumerate(outcomes):
        for conn in outcome.client.connections:
            summaries.append(
                {
                    "flow": index,
                    "engine": outcome.client.engine,
                    "proto": conn.proto,
                    "local": conn.local,
                    "remote": conn.remote,
                    "mss": conn.mss,
                    "fallback": conn.fallback,
                    "fallback_reason": conn.fallback_reason,
                    "mptcp_info": conn.mptcp_info,
                    "subflows": [dataclasses.asdict(sub) for sub in conn.subflows],
                }
            )
    return summaries


def with_engine(scenario: Scenario, engine: str) -> Scenario:
    """The same scenario with every flow generated by `engine` ("mptcpkit" or "iperf3")."""
    flows = tuple(dataclasses.replace(f, engine=engine) for f in scenario.flows)  # type: ignore[arg-type]
    return dataclasses.replace(scenario, flows=flows, name=scenario.name)


def _server_address(lab: Lab, flow: Flow) -> str:
    if flow.server_address:
        return flow.server_address
    for _ifname, address in lab.topology.addresses_of(flow.server):
        if address.version == 4:
            return str(address.ip)
    raise LabError(f"host {flow.server} has no IPv4 address")


def _parse_result(text: str, who: str) -> TrafficResult:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{") and '"role"' in line:
            return TrafficResult.from_json(line)
    raise LabError(f"{who}: the traffic engine printed no result: {text.strip()[-300:]!r}")


def run_flows(
    lab: Lab, flows: Sequence[Flow], actions: Sequence[Action], interval: float, timeout: float
) -> tuple[list[FlowOutcome], dict[str, float]]:
    """Start one server per flow, then each client at its start time; apply actions on time (from a thread,
    times measured from the first start); collect both ends."""
    servers: list[HostProcess] = []
    clients: list[HostProcess] = []
    started: list[float] = []
    action_times: dict[str, float] = {}
    try:
        ports = []
        for index, flow in enumerate(flows):
            proc, port = _start_server(lab, flow, BASE_PORT + index, interval, timeout)
            servers.append(proc)
            ports.append(port)
        argvs = [
            _client_argv(lab, flow, port, interval, timeout) for flow, port in zip(flows, ports, strict=True)
        ]
        stop = threading.Event()
        errors: list[BaseException] = []
        t0 = time.monotonic()

        def run_actions() -> None:
            for action in sorted(actions, key=lambda a: a.at_s):
                if stop.wait(max(0.0, t0 + action.at_s - time.monotonic())):
                    return
                try:
                    action.apply(lab)
                    action_times[action.description] = time.monotonic() - t0
                except BaseException as exc:  # reported after the flows end
                    errors.append(exc)

        worker = threading.Thread(target=run_actions, daemon=True)
        worker.start()
        spawned: dict[int, tuple[HostProcess, float]] = {}
        try:
            # Flows start in start-time order; a flow with start_s > 0 is spawned that much later.
            for index in sorted(range(len(flows)), key=lambda i: flows[i].start_s):
                delay = t0 + flows[index].start_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                spawned[index] = (lab.host(flows[index].client).spawn(argvs[index]), time.time())
                clients.append(spawned[index][0])
        except BaseException:
            stop.set()
            raise
        clients = [spawned[i][0] for i in range(len(flows))]
        started = [spawned[i][1] for i in range(len(flows))]
        results = [proc.wait(timeout=timeout + 30) for proc in clients]
        stop.set()
        worker.join(timeout=10)
        if errors:
            raise LabError(f"scenario action failed: {errors[0]}")
        server_results = [proc.wait(timeout=60) for proc in servers]
    finally:
        for proc in clients + servers:
            proc.terminate()
    outcomes = []
    for flow, client, server, start in zip(flows, results, server_results, started, strict=True):
        if flow.engine == "iperf3":
            outcomes.append(FlowOutcome(flow, _parse_iperf3(flow, client.stdout, client.stderr), None, start))
            continue
        client_result = _parse_result(client.stdout, f"traffic client on {flow.client}")
        try:
            server_result: TrafficResult | None = _parse_result(
                server.stdout, f"traffic server on {flow.server}"
            )
        except LabError:
            server_result = None
        outcomes.append(FlowOutcome(flow, client_result, server_result, start))
    return outcomes, action_times


def _start_server(
    lab: Lab, flow: Flow, port: int, interval: float, timeout: float
) -> tuple[HostProcess, int]:
    """Start the flow's server and wait until it listens; returns it and its port."""
    host = lab.host(flow.server)
    if flow.engine == "iperf3":
        from mptcpkit.lab.traffic import iperf3

        wrapper = iperf3.detect_wrapper()
        proc = host.spawn(
            iperf3.server_argv("0.0.0.0", port, proto=flow.proto, wrapper=wrapper, interval=interval)
        )
        deadline = time.monotonic() + 20
        while f":{port} " not in host.run(["ss", "-Hltn"], check=False).stdout:
            if not proc.running or time.monotonic() > deadline:
                raise LabError(f"iperf3 server on {flow.server} did not start: {proc.wait(5).stderr.strip()}")
            time.sleep(0.05)
        return proc, port
    proc = host.spawn(
        [
            *host.python_argv(),
            "-m",
            "mptcpkit.lab.traffic",
            "server",
            "--bind",
            "0.0.0.0",
            "--port",
            str(port),
            "--proto",
            flow.server_proto or flow.proto,
            "--once",
            "--interval",
            str(interval),
            "--timeout",
            str(timeout),
        ]
    )
    line = proc.readline(timeout=20)
    if line is None or "ready" not in line:
        done = proc.wait(5)
        raise LabError(
            f"traffic server on {flow.server} did not start: {(line or '') + done.stdout + done.stderr}"
        )
    return proc, int(json.loads(line).get("port", port))


def _client_argv(lab: Lab, flow: Flow, port: int, interval: float, timeout: float) -> list[str]:
    address = _server_address(lab, flow)
    if flow.engine == "iperf3":
        from mptcpkit.lab.traffic import iperf3

        if not flow.mode.startswith("bulk-"):
            raise LabError(f"iperf3 runs bulk transfers only, not {flow.mode}")
        opts = iperf3.Iperf3Client(
            connect=address,
            port=port,
            mode=flow.mode,
            proto=flow.proto,
            bytes=flow.bytes,
            duration=flow.duration,
            interval=interval,
            parallel=flow.parallel,
        )
        return iperf3.client_argv(opts, wrapper=iperf3.detect_wrapper())
    host = lab.host(flow.client)
    argv = flow.client_argv(address, port, interval)
    return [*host.python_argv(), "-m", "mptcpkit.lab.traffic", *argv, "--timeout", str(timeout)]


def _parse_iperf3(flow: Flow, stdout: str, stderr: str) -> TrafficResult:
    from mptcpkit.lab.traffic import iperf3

    try:
        return iperf3.parse(stdout, mode=flow.mode, proto=flow.proto)
    except ValueError:
        raise LabError(
            f"iperf3 on {flow.client} printed no result: {(stderr or stdout).strip()[-300:]}"
        ) from None


def flow_failure(outcomes: Sequence[FlowOutcome]) -> str | None:
    """Why a repetition failed (error, fallback to TCP, corrupted stream), or None."""
    for outcome in outcomes:
        res, flow = outcome.client, outcome.flow
        if res.error is not None:
            return f"{flow.client}->{flow.server}: {res.error.kind}: {res.error.message}"
        if flow.proto == "mptcp" and res.fallback:
            return (
                f"{flow.client}->{flow.server}: fell back to TCP ({res.fallback_reason or 'no reason given'})"
            )
        for stream in res.streams:
            if stream.integrity_ok is False:
                offset = f" at byte {stream.first_bad_offset}" if stream.first_bad_offset is not None else ""
                return f"{flow.client}->{flow.server}: {stream.direction} stream corrupted{offset} (hash mismatch)"
        if not res.ok:
            return f"{flow.client}->{flow.server}: traffic engine reported failure"
    return None


# ---- helpers for evaluators ---------------------------------------------------------------------------


def steady_goodput(result: TrafficResult, skip_s: float = 1.0) -> float:
    """Receiver-side goodput (bit/s) of all streams in the steady state.

    The window starts at the first sample after `skip_s` (slow start left out) and ends at the last periodic
    sample before the stream ended: the final sample is taken when the end of the stream is processed, after the
    last byte, and would count idle time. Every engine's samples (ours, iperf3's intervals) are cut the same way.
    """
    total = 0.0
    for stream in result.streams:
        samples = stream.samples
        if len(samples) < 4 or samples[-2].t <= skip_s + 0.5:
            total += stream.goodput_bps
            continue
        first = next(s for s in samples if s.t >= skip_s)
        last = samples[-2]
        total += 8 * (last.bytes - first.bytes) / (last.t - first.t)
    return total


def goodput_series(result: TrafficResult) -> tuple[float, list[float]]:
    """(interval, goodput in Mbit/s per interval) of the first stream, for plots."""
    if not result.streams or not result.streams[0].samples:
        return 0.0, []
    samples = result.streams[0].samples
    interval = samples[1].t - samples[0].t if len(samples) > 1 else samples[0].t
    return interval, [s.bps / 1e6 for s in samples]


def connection_mss(result: TrafficResult) -> int | None:
    """The MSS the engine read from the socket (first connection)."""
    for conn in result.connections:
        if conn.mss:
            return conn.mss
    return None


def subflow_bytes_by_link(lab: Lab, result: TrafficResult, host: str) -> dict[str, list[tuple[float, int]]]:
    """Per link: (t, cumulative bytes received+sent on the subflow using that link) from `host`'s samples."""
    owner: dict[str, str] = {}
    for link in lab.topology.links_of(host):
        for address in link.end(host).addresses:
            owner[str(address.ip)] = link.name
    series: dict[str, list[tuple[float, int]]] = {}
    for conn in result.connections:
        for sample in conn.subflow_samples:
            per_link: dict[str, int] = {}
            for sub in sample.subflows:
                link_name = owner.get(sub.local, sub.local)
                per_link[link_name] = per_link.get(link_name, 0) + sub.bytes_received + sub.bytes_acked
            for link_name, value in per_link.items():
                series.setdefault(link_name, []).append((sample.t, value))
    return series


def per_link_rate_series(by_link: dict[str, list[tuple[float, int]]]) -> list[tuple[str, float, list[float]]]:
    """Turn cumulative per-link byte counters into Mbit/s per interval series."""
    out = []
    for link, points in sorted(by_link.items()):
        if len(points) < 2:
            continue
        values = []
        for (t0, b0), (t1, b1) in itertools.pairwise(points):
            values.append(8 * (b1 - b0) / max(t1 - t0, 1e-6) / 1e6)
        interval = statistics.median(t1 - t0 for (t0, _), (t1, _) in itertools.pairwise(points))
        out.append((f"subflow:{link}", interval, values))
    return out


def metric(
    name: str,
    unit: str,
    better: Better,
    value: float,
    expected: float | None = None,
    rule: Rule | None = None,
) -> Measurement:
    return Measurement(name, unit, better, value, expected, rule)
