"""A link's patch cable in the wire namespace: frames entering one end leave the other, shaped.

Per direction X -> Y (X's wire end ``in_if``, Y's wire end ``out_if``):

    stage none       in_if ingress --mirred--> out_if egress
    stage netem      in_if ingress --mirred--> out_if egress [netem: rate, delay, jitter, loss, reorder]
    stage userspace  in_if ingress --mirred--> tap egress -> forwarder (rate queue, delay, jitter, loss)
                     -> tap ingress --mirred--> out_if egress
    stage tc         in_if ingress --mirred--> out_if egress [tbf]   (only on request: mode="tc")

Shaping happens in the wire namespace, not on the sender's own egress. The skb keeps its socket
reference across veth (since Linux 4.19), so a bottleneck queue must let go of it, as netem
(skb_orphan_partial) and the TAP read do; a bare tbf does not, and TCP Small Queues would then keep the
"router" queue nearly empty and a UDP sender would be throttled instead of losing packets.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pyroute2 import IPRoute

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.emulation import control, forwarder, tc
from mptcpkit.lab.emulation.netem import netem_available
from mptcpkit.lab.emulation.shape import (
    LinkShape,
    Mode,
    Stage,
    WireMode,
    choose_mode,
    direction_stage,
    seed_for,
    tap_gso,
    tap_name,
    tbf_params,
)

Priority = Literal["adaptive", "rr", "fair", "normal"]
FORWARDER_PATH = Path(forwarder.__file__).resolve()
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 3.0
TAP_TXQUEUELEN = 10000


@dataclass
class Wire:
    """A built link. ``close()`` undoes everything build_wire did; calling it again does nothing."""

    netns: str
    a_if: str
    b_if: str
    mode: WireMode
    pids: list[int]
    description: dict[str, Any]
    state_path: Path | None = None
    stats_paths: list[Path] = field(default_factory=list)
    control_path: Path | None = None
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _qdisc_ifs: list[str] = field(default_factory=list, repr=False)
    _closed: bool = field(default=False, repr=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for pid in self.pids:
            _stop_emulator(pid, next((p for p in self._procs if p.pid == pid), None))
        if _netns_exists(self.netns):
            with contextlib.suppress(LabError, OSError), tc.open_netns(self.netns) as ipr:
                _remove_tc(ipr, [self.a_if, self.b_if], self._qdisc_ifs)
        if self.state_path is not None:
            self.state_path.unlink(missing_ok=True)

    def emulator_stats(self) -> list[dict[str, Any]]:
        """Counters the forwarder wrote when it stopped (frames in/lost/out per direction); [] if none."""
        out: list[dict[str, Any]] = []
        for path in self.stats_paths:
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(path.read_text()))
        return out

    @classmethod
    def from_state(cls, path: Path) -> Wire:
        """Rebuild a Wire from its state file (written by build_wire), e.g. in a later `lab down`."""
        data = json.loads(path.read_text())
        return cls(
            netns=data["netns"],
            a_if=data["a_if"],
            b_if=data["b_if"],
            mode=data["mode"],
            pids=list(data["pids"]),
            description=data["description"],
            state_path=path,
            stats_paths=[Path(p) for p in data.get("stats_paths", [])],
            control_path=Path(data["control_path"]) if data.get("control_path") else None,
            _qdisc_ifs=list(data.get("qdisc_ifs", [])),
        )


def build_wire(
    wire_netns: str,
    a_if: str,
    b_if: str,
    a_to_b: LinkShape,
    b_to_a: LinkShape,
    *,
    mode: Mode = "auto",
    state_dir: Path,
    seed: int = 0,
    emulator_priority: Priority = "adaptive",
) -> Wire:
    """Join ``a_if`` and ``b_if`` (both UP, in ``wire_netns``) so each direction is shaped as given.

    ``seed`` seeds the userspace emulator's loss/jitter PRNG. ``emulator_priority``: "adaptive" runs the
    forwarder SCHED_RR while it is lightly loaded (on-time frames on a busy machine) and nice -20 once it
    uses over half a CPU (never monopolises a core); "rr", "fair" (nice -20) or "normal" pin one policy.
    """
    shaped = a_to_b.shaped or b_to_a.shaped
    has_netem = netem_available() if mode == "netem" or (mode == "auto" and shaped) else None
    wire_mode = choose_mode(a_to_b, b_to_a, mode, has_netem)
    state_dir.mkdir(parents=True, exist_ok=True)
    directions: list[tuple[str, str, str, LinkShape, Stage]] = [
        ("ab", a_if, b_if, a_to_b, direction_stage(a_to_b, wire_mode)),
        ("ba", b_if, a_if, b_to_a, direction_stage(b_to_a, wire_mode)),
    ]
    wire = Wire(wire_netns, a_if, b_if, wire_mode, [], {}, state_path=state_dir / f"wire-{a_if}-{b_if}.json")
    try:
        with tc.open_netns(wire_netns) as ipr:
            index = {name: tc.ifindex(ipr, name) for name in (a_if, b_if)}
            mtu = max(_mtu(ipr, index[a_if]), _mtu(ipr, index[b_if]))
            user = [d for d in directions if d[4] == "userspace"]
            if user:
                _start_emulator(wire, user, state_dir, seed, emulator_priority)
                for key, *_ in user:
                    name = tap_name(a_if, b_if, key)  # type: ignore[arg-type]
                    index[name] = tc.ifindex(ipr, name)
            described = {}
            for key, in_if, out_if, shape, stage in directions:
                described["a_to_b" if key == "ab" else "b_to_a"] = _plumb(
                    ipr, wire, index, key, in_if, out_if, shape, stage, mtu
                )
    except BaseException as e:
        wire.close()
        if isinstance(e, LabError | KeyboardInterrupt | SystemExit):
            raise
        raise LabError(f"building the emulated link {a_if} <-> {b_if} in {wire_netns} failed: {e}") from e
    wire.description = {
        "mode": wire_mode,
        "netns": wire_netns,
        "a_if": a_if,
        "b_if": b_if,
        "netem_available": has_netem,
        "emulator": "mptcpkit forwarder: TAP + link model (rate queue, delay, jitter, loss)"
        if wire.pids
        else None,
        "requested": mode,
        "seed": seed,
        "emulator_priority": emulator_priority if wire.pids else None,
        "pids": list(wire.pids),
        **described,
    }
    _write_state(wire)
    return wire


def reshape_wire(wire: Wire, a_to_b: LinkShape, b_to_a: LinkShape, *, state_dir: Path) -> Wire:
    """Give a built wire new shapes: in place when each direction keeps its stage, else rebuilt.

    In place: the forwarder gets a control command, netem a `tc qdisc change`, tbf a replace; packets
    already queued or in the delay line keep their times. A stage change (an unshaped direction gets a
    shape, or a shaped one becomes a plain cable again, as a restore does) rebuilds the wire: the link
    is cut for the few milliseconds the forwarder takes to start, and what was in flight is lost.
    Returns the wire now in place (``wire`` itself, or the rebuilt one).
    """
    requested: Mode = wire.description.get("requested", "auto")
    has_netem = wire.description.get("netem_available")
    if has_netem is None and (
        requested == "netem" or (requested == "auto" and (a_to_b.shaped or b_to_a.shaped))
    ):
        has_netem = netem_available()
    try:
        new_mode = choose_mode(a_to_b, b_to_a, requested, has_netem)
    except UsageError as e:  # e.g. a delay on a tbf-only wire: this repetition fails, the run goes on
        raise LabError(f"link {wire.a_if} <-> {wire.b_if}: {e.message}") from e
    shapes = {"a_to_b": a_to_b, "b_to_a": b_to_a}
    stages = {key: direction_stage(shape, new_mode) for key, shape in shapes.items()}
    same = new_mode == wire.mode and all(
        wire.description.get(k, {}).get("stage") == v for k, v in stages.items()
    )
    if not same or ("userspace" in stages.values() and wire.control_path is None):
        wire.close()
        return build_wire(
            wire.netns,
            wire.a_if,
            wire.b_if,
            a_to_b,
            b_to_a,
            mode=requested,
            state_dir=state_dir,
            seed=int(wire.description.get("seed") or 0),
            emulator_priority=wire.description.get("emulator_priority") or "adaptive",
        )
    try:
        kernel = any(
            stage in ("netem", "tc") for stage in stages.values()
        )  # userspace alone needs no netlink
        with tc.open_netns(wire.netns) if kernel else contextlib.nullcontext() as ipr:
            for key, shape in shapes.items():
                info = wire.description[key]
                out_if = wire.b_if if key == "a_to_b" else wire.a_if
                if stages[key] == "userspace":
                    assert wire.control_path is not None
                    answer = control.request(wire.control_path, control.set_command(info["tap"], shape))
                    info["emulator"] = next(d for d in answer["directions"] if d["tap"] == info["tap"])
                    info["gso"] = tap_gso(shape)
                elif stages[key] == "netem":
                    assert ipr is not None
                    tc.add_netem(wire.netns, out_if, shape, _mtu(ipr, tc.ifindex(ipr, out_if)), verb="change")
                elif stages[key] == "tc":
                    assert ipr is not None
                    index = tc.ifindex(ipr, out_if)
                    tbf = tbf_params(shape, _mtu(ipr, index))
                    if tbf is not None:
                        tc.add_tbf(ipr, index, tbf)
                        info["tbf"] = vars(tbf)
                info["shape"] = shape.as_dict()
    except (OSError, KeyError, StopIteration) as e:
        raise LabError(f"changing the emulated link {wire.a_if} <-> {wire.b_if} failed: {e}") from e
    _write_state(wire)
    return wire


def emulator_settings(wire: Wire) -> list[dict[str, Any]]:
    """What the running forwarder applies now, per direction (rate, delay, jitter, loss, queue); [] if none."""
    if wire.control_path is None or not wire.pids:
        return []
    return list(control.request(wire.control_path, {"op": "get"})["directions"])


def _plumb(
    ipr: IPRoute,
    wire: Wire,
    index: dict[str, int],
    key: str,
    in_if: str,
    out_if: str,
    shape: LinkShape,
    stage: Stage,
    mtu: int,
) -> dict[str, Any]:
    tbf = tbf_params(shape, mtu) if stage == "tc" else None
    info: dict[str, Any] = {"shape": shape.as_dict(), "stage": stage}
    tc.add_clsact(ipr, index[in_if])
    if stage == "userspace":
        tap = tap_name(wire.a_if, wire.b_if, key)  # type: ignore[arg-type]
        tc.redirect_ingress(ipr, index[in_if], index[tap])
        tc.add_clsact(ipr, index[tap])
        tc.redirect_ingress(ipr, index[tap], index[out_if])
        info.update(tap=tap, gso=tap_gso(shape))
        return info
    tc.redirect_ingress(ipr, index[in_if], index[out_if])
    if stage == "netem":
        wire._qdisc_ifs.append(out_if)
        tc.add_netem(wire.netns, out_if, shape, mtu)
    elif stage == "tc" and tbf is not None:
        wire._qdisc_ifs.append(out_if)
        tc.add_tbf(ipr, index[out_if], tbf)
        info["tbf"] = vars(tbf)
    return info


def _start_emulator(
    wire: Wire,
    user: list[tuple[str, str, str, LinkShape, Stage]],
    state_dir: Path,
    seed: int,
    priority: Priority,
) -> None:
    """Spawn the forwarder in its own session (it outlives the builder, as the lab does) and wait for it."""
    base = f"{wire.a_if}-{wire.b_if}"
    stats_path = state_dir / f"emulator-{base}.stats.json"
    stats_path.unlink(missing_ok=True)
    wire.control_path = state_dir / f"ctl-{base}.sock"
    config = {
        "control_path": str(wire.control_path),
        "netns": wire.netns,
        "watch": [wire.a_if, wire.b_if],
        "stats_path": str(stats_path),
        "txqueuelen": TAP_TXQUEUELEN,
        "priority": priority,
        "directions": [
            {
                "tap": tap_name(wire.a_if, wire.b_if, key),  # type: ignore[arg-type]
                "gso": tap_gso(shape),
                "rate_bps": shape.rate_bps,
                "queue_packets": shape.queue_packets,
                "delay_s": shape.delay_s,
                "jitter_s": shape.jitter_s,
                "loss": shape.loss,
                "seed": seed_for(seed, wire.a_if, wire.b_if, key),
            }
            for key, _in, _out, shape, _stage in user
        ],
    }
    read_fd, write_fd = os.pipe()
    config["ready_fd"] = write_fd
    log = open(state_dir / f"emulator-{base}.log", "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(FORWARDER_PATH), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write_fd,),
            start_new_session=True,
        )
    finally:
        os.close(write_fd)
        log.close()
    wire._procs.append(proc)
    wire.pids.append(proc.pid)
    wire.stats_paths.append(stats_path)
    try:
        answer = _read_ready(read_fd)
    finally:
        os.close(read_fd)
    if answer != "ok":
        raise LabError(f"the link emulator for {wire.a_if} <-> {wire.b_if} did not start: {answer}")


def _read_ready(fd: int) -> str:
    deadline = time.monotonic() + READY_TIMEOUT_S
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return "no answer within 10 s"
        chunk = os.read(fd, 256)
        if not chunk:
            return "it exited before it was ready" if not data else data.decode(errors="replace").strip()
        data += chunk
    return data.decode(errors="replace").strip()


def _stop_emulator(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after a grace time. Only kills a pid that still runs our forwarder."""
    if proc is None and not _is_forwarder(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _is_forwarder(pid):
            return
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _is_forwarder(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return str(FORWARDER_PATH).encode() in cmdline and state != "Z"


def _remove_tc(ipr: IPRoute, wire_ends: list[str], qdisc_ifs: list[str]) -> None:
    for name in wire_ends:
        found = ipr.link_lookup(ifname=name)
        if not found:
            continue
        tc.delete_clsact(ipr, found[0])
        if name in qdisc_ifs:
            tc.delete_root(ipr, found[0])


def _mtu(ipr: IPRoute, index: int) -> int:
    links = ipr.get_links(index)
    return int(links[0].get_attr("IFLA_MTU") or 1500)


def _netns_exists(name: str) -> bool:
    return os.path.exists(f"/run/netns/{name}")


def _write_state(wire: Wire) -> None:
    assert wire.state_path is not None
    data = {
        "netns": wire.netns,
        "a_if": wire.a_if,
        "b_if": wire.b_if,
        "mode": wire.mode,
        "pids": wire.pids,
        "stats_paths": [str(p) for p in wire.stats_paths],
        "control_path": str(wire.control_path) if wire.control_path else None,
        "qdisc_ifs": wire._qdisc_ifs,
        "description": wire.description,
    }
    tmp = wire.state_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(wire.state_path)
