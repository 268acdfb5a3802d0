"""SSH backend: topology hosts are existing machines (`ssh = "user@host"`), driven concurrently over asyncssh.

The lab applies addresses, routes, policy rules, MPTCP limits/endpoints, sysctls and tc shaping on each
machine's existing interfaces (named per link in the topology), runs traffic there through the same LabHost
interface as the namespace backend, and on teardown undoes its changes in reverse order and checks, with a
before/after snapshot, that every machine is exactly as it was. Host keys must already be in known_hosts (an
unknown key is refused, never accepted); only keys and the agent are used, no password is asked or stored.

The asyncio side runs in one background event loop thread per lab; the synchronous LabHost methods the runner
calls submit coroutines to it, so all machines are set up and torn down concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import sys
import threading
import uuid
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncssh

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.backends.base import Backend, CommandResult, HostProcess, Lab, LabHost, LabInfo
from mptcpkit.lab.backends.ssh_plan import (
    ChangePlan,
    Snapshot,
    SshTarget,
    diff_snapshots,
    implicit_leftovers,
    netem_probe_script,
    parse_snapshot,
    parse_steps_output,
    parse_target,
    plan_host,
    snapshot_script,
    steps_script,
    sysctl_keys,
)
from mptcpkit.lab.backends.tc_reshape import TcReshaper
from mptcpkit.lab.model import Topology

T = TypeVar("T")


def _short(argv: Sequence[str], limit: int = 80) -> str:
    """A command for an error message (scripts are long)."""
    text = " ".join(shlex.join(argv).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Loop:
    """A private asyncio loop in a daemon thread; `call` runs a coroutine there and waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mptcpkit-ssh", daemon=True)
        self.thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass(frozen=True, slots=True)
class SshOptions:
    """How to reach the machines. Nothing secret is kept: keys stay in files or the agent."""

    known_hosts: Path | None = None
    """known_hosts file to verify host keys against (default: ~/.ssh/known_hosts)."""
    client_keys: tuple[Path, ...] | None = None
    """private key files (default: ~/.ssh/id_* and the agent)."""
    connect_timeout: float = 10.0
    keepalive_s: float = 5.0
    targets: Mapping[str, str] = field(default_factory=dict)
    """host name -> "user@host[:port]", overriding the topology's `ssh` fields (e.g. for built-in scenarios)."""
    python: tuple[str, ...] | None = None
    """argv prefix of a Python with mptcpkit on the machines (default: the same path as here)."""


async def connect(name: str, target: SshTarget, options: SshOptions) -> asyncssh.SSHClientConnection:
    """Open one connection, turning every failure into a LabError that says what to do."""
    where = f"{target.user}@{target.host}:{target.port}"
    known = str(options.known_hosts) if options.known_hosts is not None else ()
    keys = [str(k) for k in options.client_keys] if options.client_keys is not None else ()
    try:
        return await asyncssh.connect(
            target.host,
            port=target.port,
            username=target.user,
            known_hosts=known,
            client_keys=keys,
            password=None,
            password_auth=False,
            kbdint_auth=False,
            connect_timeout=options.connect_timeout,
            keepalive_interval=options.keepalive_s,
            keepalive_count_max=3,
        )
    except asyncssh.HostKeyNotVerifiable as exc:
        raise LabError(
            f"{name}: refusing {where}: its host key is not in known_hosts ({exc.reason})",
            hint=f"check the key's fingerprint out of band, then add it: ssh-keyscan -p {target.port} "
            f"{target.host} >> ~/.ssh/known_hosts",
        ) from None
    except asyncssh.PermissionDenied:
        raise LabError(
            f"{name}: {where} refused our keys (only public-key/agent authentication is used)",
            hint="load a key into ssh-agent or add one to the remote authorized_keys",
        ) from None
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise LabError(f"{name}: cannot reach {where}: {exc or type(exc).__name__}") from None


class SshProcess(HostProcess):
    """A remote process; its pid (printed first by a wrapper) lets `terminate` kill it from a new command."""

    def __init__(
        self, host: SshHost, process: asyncssh.SSHClientProcess[str], pid: int, argv: Sequence[str]
    ) -> None:
        self._host = host
        self._process = process
        self._pid = pid
        self._argv = tuple(argv)

    def readline(self, timeout: float) -> str | None:
        try:
            line = self._host.loop.call(self._process.stdout.readline(), timeout)
        except TimeoutError:
            raise LabError(
                f"{self._host.name}: no output from {shlex.join(self._argv)} within {timeout} s"
            ) from None
        return line.rstrip("\n") if line else None

    def wait(self, timeout: float | None = None) -> CommandResult:
        async def finish() -> tuple[int, str, str]:
            await self._process.wait_closed()
            out = await self._process.stdout.read()
            err = await self._process.stderr.read()
            return self._process.returncode or 0, out, err

        try:
            code, out, err = self._host.loop.call(finish(), timeout)
        except TimeoutError:
            raise LabError(
                f"{self._host.name}: {shlex.join(self._argv)} still runs after {timeout} s"
            ) from None
        return CommandResult(self._argv, code, out, err)

    def terminate(self) -> None:
        if not self.running:
            return
        kill = f"kill -TERM {self._pid} 2>/dev/null; sleep 1; kill -KILL {self._pid} 2>/dev/null; true"
        with contextlib.suppress(LabError, TimeoutError):
            self._host.run(["sh", "-c", kill], check=False, timeout=10)
        with contextlib.suppress(Exception):
            self._process.close()

    @property
    def running(self) -> bool:
        return self._process.returncode is None and not self._process.is_closing()


class SshHost(LabHost):
    """One remote machine."""

    def __init__(
        self,
        name: str,
        target: SshTarget,
        conn: asyncssh.SSHClientConnection,
        loop: _Loop,
        options: SshOptions,
    ) -> None:
        self.name = name
        self.target = target
        self.conn = conn
        self.loop = loop
        self.options = options
        self.sudo: list[str] = [] if target.user == "root" else ["sudo", "-n", "--"]
        self.processes: list[SshProcess] = []

    def _command(self, argv: Sequence[str]) -> str:
        return shlex.join([*self.sudo, *argv])

    async def arun(
        self, argv: Sequence[str], *, timeout: float = 60.0, input: str | None = None
    ) -> CommandResult:
        try:
            done = await asyncio.wait_for(
                self.conn.run(self._command(argv), input=input, check=False), timeout
            )
        except TimeoutError:
            raise LabError(f"{self.name}: `{shlex.join(argv)}` did not finish within {timeout} s") from None
        except (OSError, asyncssh.Error) as exc:
            raise LabError(
                f"{self.name}: connection lost while running `{shlex.join(argv)}`: {exc}"
            ) from None
        code = done.exit_status if done.exit_status is not None else 255
        return CommandResult(tuple(argv), code, str(done.stdout or ""), str(done.stderr or ""))

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, input: str | None = None
    ) -> CommandResult:
        result = self.loop.call(self.arun(argv, timeout=timeout, input=input), timeout + 5)
        return result.check(self.name) if check else result

    def spawn(self, argv: Sequence[str]) -> HostProcess:
        async def start() -> tuple[asyncssh.SSHClientProcess[str], int]:
            wrapped = self._command(["sh", "-c", 'echo "$$"; exec "$@"', "sh", *argv])
            try:
                process = await self.conn.create_process(wrapped)
                pid_line = await asyncio.wait_for(process.stdout.readline(), 30)
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                raise LabError(f"{self.name}: cannot start `{shlex.join(argv)}`: {exc}") from None
            return process, int(pid_line.strip() or 0)

        process, pid = self.loop.call(start(), 40)
        handle = SshProcess(self, process, pid, argv)
        self.processes.append(handle)
        return handle

    def python_argv(self) -> list[str]:
        return list(self.options.python) if self.options.python is not None else [sys.executable]

    def set_link_up(self, ifname: str, up: bool) -> None:
        self.run(["ip", "link", "set", "dev", ifname, "up" if up else "down"])

    async def snapshot(self, keys: Sequence[str]) -> Snapshot:
        result = (await self.arun(["sh", "-c", snapshot_script(keys)], timeout=30)).check(self.name)
        return parse_snapshot(result.stdout)


@dataclass
class _HostState:
    host: SshHost
    before: Snapshot
    keys: list[str]
    plan: ChangePlan
    applied: int = 0
    failures: list[str] = field(default_factory=list)


class SshLab(Lab):
    """Machines configured for a topology; `close` undoes everything and checks the machines are as before."""

    def __init__(self, topology: Topology, info: LabInfo, loop: _Loop, states: dict[str, _HostState]) -> None:
        self.topology = topology
        self.info = info
        self._loop = loop
        self._states = states
        self._closed = False
        self.teardown_report: dict[str, list[str]] = {}
        self.set_link_shape = TcReshaper(self)  # set-link actions: `tc qdisc replace` on the senders

    def host(self, name: str) -> LabHost:
        return self._states[name].host

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.teardown_report = self._loop.call(_teardown_all(list(self._states.values())), 300)
        finally:
            self._loop.stop()
        self.info.details["teardown"] = self.teardown_report
        problems = {h: p for h, p in self.teardown_report.items() if p}
        if problems:
            text = "; ".join(f"{h}: {', '.join(p[:5])}" for h, p in problems.items())
            raise LabError(f"teardown did not restore every machine exactly: {text}")


async def _teardown_host(state: _HostState) -> list[str]:
    """Stop our processes, undo applied steps in reverse, compare with the first snapshot."""
    host = state.host
    problems: list[str] = []
    for proc in host.processes:
        if proc.running:
            with contextlib.suppress(Exception):
                await host.arun(["kill", "-KILL", str(proc._pid)], timeout=10)
    undo = [s for s in reversed(state.plan.steps[: state.applied]) if s.undo is not None]
    if undo:
        script = steps_script([s.undo for s in undo if s.undo is not None], stop_on_error=False)
        try:
            result = await host.arun(["sh", "-c", script], timeout=120)
        except LabError as exc:
            return [f"cannot undo ({exc})"]
        _, failed = parse_steps_output(result.stdout)
        problems += [f"undo of {undo[i].what} failed: {message}" for i, message in sorted(failed.items())]
    try:
        listed = await host.arun(["ip", "-j", "mptcp", "endpoint", "show"], timeout=30)
        for eid in implicit_leftovers(state.before.endpoints, _json_list(listed.stdout)):
            await host.arun(["ip", "mptcp", "endpoint", "delete", "id", str(eid)], timeout=30)
        after = await host.snapshot(state.keys)
    except LabError as exc:
        return [*problems, f"no final snapshot ({exc})"]
    problems += diff_snapshots(state.before, after)
    host.conn.close()
    with contextlib.suppress(Exception):
        await host.conn.wait_closed()
    return problems


def _json_list(text: str) -> list[dict[str, Any]]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        return []
    return value if isinstance(value, list) else []


async def _teardown_all(states: list[_HostState]) -> dict[str, list[str]]:
    results = await asyncio.gather(*(_teardown_host(s) for s in states), return_exceptions=True)
    return {
        s.host.name: (r if isinstance(r, list) else [f"teardown error: {r}"])
        for s, r in zip(states, results, strict=True)
    }


async def _has_netem(host: SshHost) -> bool:
    """Detect netem by trying: add it on a throwaway veth pair (deleted again at once)."""
    script = netem_probe_script(f"mkt{uuid.uuid4().hex[:8]}")
    result = await host.arun(["sh", "-c", script], timeout=20)
    return result.returncode == 0


async def _setup_host(host: SshHost, topology: Topology) -> _HostState:
    keys = sysctl_keys(topology, host.name)
    before = await host.snapshot(keys)
    needs_netem = any(
        (d.delay_s or d.jitter_s or d.loss or d.reorder)
        for link in topology.links_of(host.name)
        for d in (link.direction_from(host.name),)
    )
    has_netem = await _has_netem(host) if needs_netem else False
    plan = plan_host(topology, host.name, before, has_netem=has_netem)
    return _HostState(host, before, keys, plan)


async def _apply(state: _HostState) -> None:
    """Apply the whole plan in one round trip; stop at the first failing step (the rest is never applied)."""
    steps = state.plan.steps
    if not steps:
        return
    script = steps_script([s.apply for s in steps], stop_on_error=True)
    result = await state.host.arun(["sh", "-c", script], timeout=120)
    ok, failed = parse_steps_output(result.stdout)
    state.applied = len(ok)
    if failed or len(ok) != len(steps):
        index = min(failed) if failed else len(ok)
        message = failed.get(index) or result.stderr.strip() or "no output"
        raise LabError(f"{state.host.name}: {steps[index].what} failed: {message}")


async def _gather_all(aws: Sequence[Awaitable[T]]) -> list[T | BaseException]:
    return list(await asyncio.gather(*aws, return_exceptions=True))


async def _gather_or_raise(aws: Sequence[Awaitable[T]]) -> list[T]:
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        first = errors[0]
        raise first if isinstance(first, LabError) else LabError(f"{type(first).__name__}: {first}")
    return list(results)  # type: ignore[arg-type]


class SshBackend(Backend):
    """Map topology hosts to machines over SSH."""

    name = "ssh"

    def __init__(self, options: SshOptions | None = None) -> None:
        self.options = options or SshOptions()

    def up(self, topology: Topology, *, emulation: str = "auto") -> Lab:
        targets: dict[str, SshTarget] = {}
        for host in topology.hosts:
            text = self.options.targets.get(host.name, host.ssh)
            if text is None:
                raise UsageError(
                    f"host '{host.name}' has no `ssh = \"user@host\"`: the SSH backend needs one"
                )
            targets[host.name] = parse_target(text)
        unknown = set(self.options.targets) - {h.name for h in topology.hosts}
        if unknown:
            raise UsageError(f"ssh targets for unknown hosts: {', '.join(sorted(unknown))}")
        if emulation not in ("auto", "netem", "tc"):
            raise UsageError(f"the SSH backend shapes with tc/netem on the machines, not with '{emulation}'")
        loop = _Loop()
        states: dict[str, _HostState] = {}
        lab_id = "ssh-" + uuid.uuid4().hex[:8]
        info = LabInfo(
            lab_id,
            "ssh",
            topology.name,
            emulation={"kind": "tc on the machines"},
            details={"hosts": {n: f"{t.user}@{t.host}:{t.port}" for n, t in targets.items()}},
        )
        results = loop.call(
            _gather_all([connect(n, t, self.options) for n, t in targets.items()]),
            self.options.connect_timeout * 3 + 10,
        )
        conns = [r for r in results if isinstance(r, asyncssh.SSHClientConnection)]
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for conn in conns:
                conn.close()
            loop.stop()
            first = failures[0]
            raise first if isinstance(first, LabError) else LabError(str(first))
        hosts = [SshHost(n, targets[n], c, loop, self.options) for n, c in zip(targets, conns, strict=True)]
        try:
            prepared = loop.call(_gather_or_raise([_setup_host(h, topology) for h in hosts]), 120)
            states = {s.host.name: s for s in prepared}
            loop.call(_gather_or_raise([_apply(s) for s in prepared]), 300)
        except BaseException:
            if states:
                with contextlib.suppress(LabError):
                    SshLab(topology, info, loop, states).close()  # undo what was applied, verify
            else:
                for conn in conns:
                    conn.close()
                loop.stop()
            raise
        info.details["steps"] = {n: [s.what for s in st.plan.steps] for n, st in states.items()}
        return SshLab(topology, info, loop, states)
