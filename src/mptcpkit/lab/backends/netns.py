"""The default backend: every host is a network namespace of this machine, every link two veth pairs through a
per-lab "wire" namespace where the link is shaped.

    client ns            wire ns (patch panel)             server ns
    eth0 ====veth==== l0a --[shape a->b]--> l0b ====veth==== eth0
                          <--[shape b->a]--

Shaping in the wire namespace keeps the sender's own qdisc and TCP Small Queues out of the measurement, as on a
real link. Everything is set up over netlink (pyroute2 and our mptcp_pm client) from this process: no `ip`
process per step. The lab is recorded in the registry before anything is created, so `lab down --all` can undo a
lab whose builder was killed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mptcpkit.errors import EnvironmentProblem, LabError
from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab import kernel_checks, registry
from mptcpkit.lab.backends import nsutil
from mptcpkit.lab.backends.base import Backend, CommandResult, HostProcess, Lab, LabHost, LabInfo
from mptcpkit.lab.backends.netns_calls import NetlinkCall, netlink_calls, wire_calls
from mptcpkit.lab.model import Direction, Topology
from mptcpkit.lab.plan import HostPlan, plan_lab, to_shape

log = logging.getLogger(__name__)


Progress = Callable[[str], None]


def preflight() -> None:
    """Refuse early, with what to do, when this machine cannot run a namespace lab."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "the namespace lab needs root (it creates network namespaces and veth links)",
            hint="run it with sudo, e.g. `sudo mptcpkit lab up two-paths`",
        )
    if not Path("/proc/sys/net/mptcp").is_dir():
        raise EnvironmentProblem(
            "this kernel has no MPTCP support (/proc/sys/net/mptcp is missing)",
            hint="use a kernel built with CONFIG_MPTCP=y (any distribution kernel since 5.15), "
            "or test another kernel with `mptcpkit lab run --kernel IMAGE`",
        )
    if nsutil.read_sysctl(None, "net.mptcp.enabled") != "1":
        log.warning("net.mptcp.enabled is 0 on this host; lab namespaces enable MPTCP for themselves")


class NetnsProcess(HostProcess):
    """A process started inside a lab namespace."""

    def __init__(self, host: str, argv: Sequence[str], popen: subprocess.Popen[str]) -> None:
        self.host = host
        self.argv = tuple(argv)
        self.popen = popen

    def readline(self, timeout: float) -> str | None:
        import select

        assert self.popen.stdout is not None
        ready, _, _ = select.select([self.popen.stdout], [], [], timeout)
        if not ready:
            raise LabError(f"{self.host}: no output from `{' '.join(self.argv)}` within {timeout:.0f} s")
        line = self.popen.stdout.readline()
        return line.rstrip("\n") if line else None

    def wait(self, timeout: float | None = None) -> CommandResult:
        try:
            out, err = self.popen.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.terminate()
            out, err = self.popen.communicate()
            raise LabError(
                f"{self.host}: `{' '.join(self.argv)}` did not finish within {timeout} s"
            ) from None
        return CommandResult(self.argv, self.popen.returncode, out or "", err or "")

    def terminate(self) -> None:
        if self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=2)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait()

    @property
    def running(self) -> bool:
        return self.popen.poll() is None


class NetnsHost(LabHost):
    """A lab host that is a network namespace of this machine."""

    def __init__(self, name: str, netns: str) -> None:
        self.name = name
        self.netns = netns
        self._children: list[NetnsProcess] = []

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(
        self, argv: Sequence[str], *, timeout: float = 60.0, check: bool = True, input: str | None = None
    ) -> CommandResult:
        try:
            proc = subprocess.run(
                self._argv(argv),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise LabError(f"{self.name}: `{' '.join(argv)}` did not finish within {timeout} s") from None
        except FileNotFoundError as exc:
            raise EnvironmentProblem(f"cannot run {exc.filename}: not installed") from None
        result = CommandResult(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        return result.check(self.name) if check else result

    def spawn(self, argv: Sequence[str]) -> NetnsProcess:
        popen = subprocess.Popen(
            self._argv(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        proc = NetnsProcess(self.name, argv, popen)
        self._children.append(proc)
        return proc

    def python_argv(self) -> list[str]:
        return [sys.executable]

    def read_file(self, path: str) -> str:
        if path.startswith("/proc/sys/"):
            with nsutil.entered(self.netns):
                return Path(path).read_text()
        return super().read_file(path)

    def sysctl(self, key: str) -> str:
        return nsutil.read_sysctl(self.netns, key)

    def set_sysctl(self, key: str, value: str) -> None:
        try:
            nsutil.write_sysctl(self.netns, key, value)
        except FileNotFoundError:
            raise LabError(f"{self.name}: sysctl {key} does not exist on this kernel") from None
        except OSError as exc:
            raise LabError(f"{self.name}: cannot set {key}={value}: {exc.strerror}") from None

    def set_link_up(self, ifname: str, up: bool) -> None:
        with _ipr(self.netns) as ipr:
            (index,) = ipr.link_lookup(ifname=ifname) or [None]
            if index is None:
                raise LabError(f"{self.name}: no interface {ifname}")
            ipr.link("set", index=index, state="up" if up else "down")

    def stop_children(self) -> None:
        for child in self._children:
            child.terminate()
        self._children.clear()


class NetnsLab(Lab):
    """A topology running on network namespaces of this machine."""

    def __init__(self, topology: Topology, record: registry.LabRecord) -> None:
        self.topology = topology
        self.plan = plan_lab(topology)
        self.record = record
        self.hosts = {name: NetnsHost(name, ns) for name, ns in record.namespaces.items()}
        self.info = LabInfo(
            lab_id=record.lab_id, backend="netns", topology=topology.name, emulation=record.emulation
        )
        self.wires: list[Any] = []
        self._closed = False

    def host(self, name: str) -> NetnsHost:
        try:
            return self.hosts[name]
        except KeyError:
            raise LabError(
                f"lab {self.lab_id} has no host '{name}' (hosts: {', '.join(self.hosts)})"
            ) from None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for host in self.hosts.values():
            host.stop_children()
        for wire in self.wires:
            with contextlib.suppress(Exception):
                wire.close()
        teardown_record(self.record)

    def detach(self) -> None:
        """Leave the lab running after this process exits (for `lab up`)."""
        self._closed = True

    def set_link_shape(self, name: str, a_to_b: Direction, b_to_a: Direction) -> None:
        """Shape link `name` anew while the lab runs (set-link actions, and their restore)."""
        from mptcpkit.lab import emulation

        wire, at = self._wire(name)
        new = emulation.reshape_wire(
            wire, to_shape(a_to_b), to_shape(b_to_a), state_dir=registry.STATE_DIR / self.lab_id
        )
        if at is None:
            self.wires.append(new)
        else:
            self.wires[at] = new
        self.record.pids = [p for p in self.record.pids if p not in wire.pids or p in new.pids]
        self.record.pids += [p for p in new.pids if p not in self.record.pids]
        links = dict(self.record.emulation.get("links", {}))
        links[name] = new.description
        self.record.emulation = {**self.record.emulation, "links": links}
        self.info.emulation = self.record.emulation
        registry.save(self.record)

    def link_settings(self, name: str) -> list[dict[str, Any]]:
        """What the link's running emulator applies now, per direction ([] when no forwarder shapes it)."""
        from mptcpkit.lab import emulation

        return emulation.emulator_settings(self._wire(name)[0])

    def _wire(self, name: str) -> tuple[Any, int | None]:
        """The built wire of link `name` and its place in self.wires (None: read from its state file)."""
        from mptcpkit.lab.emulation import Wire

        index = next((s.index for s in self.plan.shaping if s.link == name), None)
        if index is None or self.record.wire_netns is None:
            raise LabError(f"lab {self.lab_id} has no link '{name}'")
        a_if = f"l{index}a"
        for at, wire in enumerate(self.wires):
            if wire.a_if == a_if:
                return wire, at
        path = registry.STATE_DIR / self.lab_id / f"wire-{a_if}-l{index}b.json"
        try:
            return Wire.from_state(path), None
        except (OSError, ValueError, KeyError) as e:
            raise LabError(f"lab {self.lab_id}: cannot read the state of link '{name}' ({path}): {e}") from e


def attach(lab_id: str) -> NetnsLab:
    """The running lab `lab_id` (built by another process, e.g. `lab up`)."""
    record = registry.load(lab_id)
    if record is None:
        known = ", ".join(r.lab_id for r in registry.all_records()) or "none"
        raise LabError(f"no lab '{lab_id}' on this machine (running labs: {known})")
    if record.backend != "netns":
        raise LabError(
            f"lab {lab_id} is a {record.backend} lab; open a shell there with `mptcpkit lab console {lab_id} HOST`"
        )
    if record.state != "up":
        raise LabError(
            f"lab {lab_id} is not up (state: {record.state}); remove it with `mptcpkit lab down {lab_id}`"
        )
    missing = [ns for ns in record.all_netns if nsutil.netns_inode(ns) is None]
    if missing:
        raise LabError(
            f"lab {lab_id} is broken: namespaces {', '.join(missing)} are gone; "
            f"remove it with `mptcpkit lab down {lab_id}`"
        )
    topology = pickle.loads((registry.STATE_DIR / lab_id / "topology.pickle").read_bytes())
    return NetnsLab(topology, record)


def teardown_record(record: registry.LabRecord) -> None:
    """Remove every namespace, process and state file of a recorded lab; idempotent; the record always goes."""
    try:
        names = record.all_netns
        nsutil.kill_processes_in(names)
        for pid in record.pids:
            with contextlib.suppress(ProcessLookupError, PermissionError, OverflowError):
                os.kill(pid, signal.SIGKILL)
        for name in names:
            nsutil.delete_netns(name)
        state_dir = registry.STATE_DIR / record.lab_id
        if state_dir.is_dir():
            for path in sorted(state_dir.rglob("*"), reverse=True):
                with contextlib.suppress(OSError):
                    path.unlink() if not path.is_dir() else path.rmdir()
            with contextlib.suppress(OSError):
                state_dir.rmdir()
    finally:
        registry.remove(record.lab_id)


def teardown_all() -> list[str]:
    """Remove every lab this project created on this machine (and nothing else); returns the lab ids."""
    removed = []
    for record in registry.all_records():
        if record.backend in ("vm", "multi-vm"):  # VM labs share the registry: their supervisor closes them
            from mptcpkit.lab.backends.vm.detached import vm_lab_down

            vm_lab_down(record.lab_id)
        else:  # a namespace lab, or a record too broken to say: whatever it names that is ours goes
            teardown_record(record)
        removed.append(record.lab_id)
    # Namespaces with our prefix whose record was never written (builder killed between two syscalls).
    orphans: dict[str, list[str]] = {}
    for name in nsutil.list_netns():
        match = registry.OUR_NETNS_RE.match(name)
        if match:
            orphans.setdefault(match.group(1), []).append(name)
    for lab_id, names in orphans.items():
        teardown_record(
            registry.LabRecord(lab_id=lab_id, backend="netns", topology="?", namespaces={n: n for n in names})
        )
        if lab_id not in removed:
            removed.append(lab_id)
    return removed


class NetnsBackend(Backend):
    """Builds labs out of network namespaces, veth pairs and a wire namespace."""

    name = "netns"

    def __init__(self, progress: Progress | None = None) -> None:
        self.progress = progress or (lambda message: log.debug(message))

    def up(self, topology: Topology, *, emulation: str = "auto") -> NetnsLab:
        preflight()
        kernel_checks.preflight(
            topology
        )  # scheduler, path manager, congestion control, sysctls: before creating
        lab_id = registry.new_lab_id()
        record = registry.LabRecord(
            lab_id=lab_id,
            backend=self.name,
            topology=topology.name,
            namespaces={h.name: registry.netns_name(lab_id, h.name) for h in topology.hosts},
            wire_netns=registry.wire_netns_name(lab_id) if topology.links else None,
            topology_file=topology.source,
        )
        registry.save(record)
        state_dir = registry.STATE_DIR / lab_id
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "topology.pickle").write_bytes(pickle.dumps(topology))
        lab = NetnsLab(topology, record)
        try:
            with sigterm_as_interrupt():
                self._build(lab, emulation)
            record.state = "up"
            registry.save(record)
        except BaseException:
            lab.close()
            raise
        return lab

    # -- building steps -----------------------------------------------------------------------------------

    def _build(self, lab: NetnsLab, emulation: str) -> None:
        from pyroute2 import netns as pr_netns

        topo, record = lab.topology, lab.record
        started = time.monotonic()
        self.progress(f"lab {record.lab_id}: creating {len(record.all_netns)} namespaces")
        for name in record.all_netns:
            pr_netns.create(name)
        for name in record.all_netns:
            nsutil.write_sysctl(name, "net.ipv6.conf.all.disable_ipv6", "0")
            with _ipr(name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        if record.wire_netns:
            # The wire is a patch panel: its ends must not send neighbour discovery of their own to the hosts.
            nsutil.write_sysctl(record.wire_netns, "net.ipv6.conf.all.disable_ipv6", "1")
            nsutil.write_sysctl(record.wire_netns, "net.ipv6.conf.default.disable_ipv6", "1")
        self.progress(f"lab {record.lab_id}: creating {len(topo.links)} links")
        for host in lab.plan.hosts:
            self._apply(lab, host)
        self._emulation(lab, emulation)
        self.progress(f"lab {record.lab_id}: up in {time.monotonic() - started:.2f} s")

    def _apply(self, lab: NetnsLab, plan: HostPlan) -> None:
        """Render one host plan as netlink calls (see netns_calls.py) and send them."""
        host = lab.host(plan.name)
        links = {link.name: index for index, link in enumerate(lab.topology.links)}
        ipr = _ipr(host.netns)
        ifindex: dict[str, int] = {}
        pm: Any = None
        try:
            for call in netlink_calls(plan):
                _apply_call(lab, host, ipr, call, links, ifindex)
                if call.kind in ("limits", "endpoint"):
                    if pm is None:
                        from mptcpkit.netlink.client import MptcpPmClient

                        pm = MptcpPmClient(netns=host.netns)
                        pm.__enter__()
                    _mptcp_call(host.name, pm, call)
        finally:
            ipr.close()
            if pm is not None:
                pm.__exit__(None, None, None)

    def _emulation(self, lab: NetnsLab, mode: str) -> None:
        from mptcpkit.lab import emulation

        wire = lab.record.wire_netns
        if wire is None:
            return
        state_dir = registry.STATE_DIR / lab.record.lab_id  # made by up() before building
        modes = set()
        links = {}
        for call in wire_calls(lab.plan):
            ab, ba = call.args["a_to_b"], call.args["b_to_a"]
            built = emulation.build_wire(
                wire,
                call.args["a_if"],
                call.args["b_if"],
                ab.shape,
                ba.shape,
                mode=mode,  # type: ignore[arg-type]
                state_dir=state_dir,
            )
            lab.wires.append(built)
            lab.record.pids.extend(built.pids)
            modes.add(built.mode)
            links[ab.link] = built.description
            registry.save(lab.record)
        used = sorted(modes - {"none"}) or ["none"]
        lab.record.emulation = {"mode": "+".join(used), "links": links}
        lab.info.emulation = lab.record.emulation


def allow_congestion_control(name: str) -> None:
    """Namespaces may only pick congestion controls the host allows: allow `name` (it is already built in).

    This widens net.ipv4.tcp_allowed_congestion_control of the host, which only lets unprivileged programs choose
    that algorithm too; it changes no default.
    """
    allowed_path = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    if name not in available:
        raise LabError(
            f"congestion control '{name}' is not available on this kernel (available: {', '.join(available)})"
        )
    allowed = allowed_path.read_text().split()
    if name not in allowed:
        log.info("allowing congestion control %s in net.ipv4.tcp_allowed_congestion_control", name)
        allowed_path.write_text(" ".join([*allowed, name]))


def _apply_call(
    lab: NetnsLab,
    host: NetnsHost,
    ipr: Any,
    call: NetlinkCall,
    links: dict[str, int],
    ifindex: dict[str, int],
) -> None:
    """Send one rendered call into `host`'s namespace (MPTCP calls go through `_mptcp_call`)."""
    a = dict(call.args)
    if call.kind == "sysctl":
        if a["key"] == "net.ipv4.tcp_congestion_control":
            allow_congestion_control(a["value"])
        host.set_sysctl(a["key"], a["value"])
    elif call.kind == "path_manager":
        if Path("/proc/sys/net/mptcp/path_manager").exists():
            host.set_sysctl("net.mptcp.path_manager", a["value"])
        else:
            host.set_sysctl("net.mptcp.pm_type", "1" if a["value"] == "userspace" else "0")
    elif call.kind == "scheduler":
        available = nsutil.read_sysctl(host.netns, "net.mptcp.available_schedulers").split()
        if a["value"] not in available:
            raise LabError(
                f"{host.name}: MPTCP scheduler '{a['value']}' is not available on this kernel "
                f"(available: {', '.join(available)})"
            )
        host.set_sysctl("net.mptcp.scheduler", a["value"])
    elif call.kind == "veth":
        wire = lab.record.wire_netns
        side = "a" if lab.topology.link(a["link"]).a.host == host.name else "b"
        peer = {"ifname": f"l{links[a['link']]}{side}", "net_ns_fd": wire, "mtu": a["mtu"]}
        _netlink_step(
            functools.partial(ipr.link, "add", ifname=a["ifname"], kind="veth", mtu=a["mtu"], peer=peer),
            f"{host.name}: create {a['ifname']} for link {a['link']} (a veth pair; needs CONFIG_VETH)",
        )
        with _ipr(wire) as wipr:  # type: ignore[arg-type]
            wipr.link("set", index=wipr.link_lookup(ifname=peer["ifname"])[0], state="up")
    elif call.kind == "up":
        ipr.link("set", index=_index(ipr, a.pop("ifname"), ifindex), state="up")
    elif call.kind == "addr":
        _netlink_step(
            functools.partial(ipr.addr, "add", index=_index(ipr, a.pop("ifname"), ifindex), **a),
            f"{host.name}: address {a['address']}/{a['prefixlen']}",
        )
    elif call.kind == "route":
        if "ifname" in a:
            a["oif"] = _index(ipr, a.pop("ifname"), ifindex)
        _netlink_step(functools.partial(ipr.route, "add", **a), f"{host.name}: route {a['dst']}")
    elif call.kind == "rule":
        _netlink_step(functools.partial(ipr.rule, "add", **a), f"{host.name}: rule {a}")


def _mptcp_call(host: str, pm: Any, call: NetlinkCall) -> None:
    a = call.args
    if call.kind == "limits":
        _netlink_step(
            lambda: pm.set_limits(subflows=a["subflows"], add_addr_accepted=a["add_addr_accepted"]),
            f"{host}: set MPTCP limits",
        )
    else:
        _netlink_step(
            lambda: pm.add_endpoint(a["address"], id=a["id"], flags=a["flags"], dev=a["dev"], port=a["port"]),
            f"{host}: add MPTCP endpoint {a['address']}",
        )


def _index(ipr: Any, ifname: str, cache: dict[str, int]) -> int:
    """The interface's index, looked up once per host (a lookup dumps every link: it is not cheap)."""
    if ifname not in cache:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise LabError(f"no interface {ifname}")
        cache[ifname] = int(found[0])
    return cache[ifname]


def _ipr(netns: str) -> Any:
    """An rtnetlink socket bound to `netns`: created while this thread is inside it (no helper process)."""
    from pyroute2 import IPRoute

    with nsutil.entered(netns):
        return IPRoute()


def _netlink_step(step: Callable[[], object], what: str) -> None:
    """Run one netlink call, turning a kernel refusal into a LabError that says which step failed."""
    try:
        step()
    except Exception as exc:  # pyroute2 and our client raise various error types carrying the errno text
        raise LabError(f"{what}: {exc}") from None


__all__ = ["NetnsBackend", "NetnsHost", "NetnsLab", "teardown_all", "teardown_record"]
