"""Blocking `mptcp_pm` client: every command of the family, plus event subscription.

    with MptcpPmClient(netns="lab-a") as pm:
        pm.set_limits(subflows=4, add_addr_accepted=4)
        pm.add_endpoint("10.0.2.1", flags="subflow", dev="eth1")
        for ev in pm.events(timeout=5):
            print(ev.to_dict())

The codec lives in `mptcp_pm`, the socket in `socket`; this module only sends, receives and matches.
"""

from __future__ import annotations

import errno as _errno
import itertools
import select
import socket
import time
from collections.abc import AsyncGenerator, Iterable, Iterator
from types import TracebackType

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink import genl_ctrl, nlmsg
from mptcpkit.netlink import mptcp_pm as pm
from mptcpkit.netlink.errors import DecodeError, FamilyNotFound, KernelError, NetlinkError
from mptcpkit.netlink.mptcp_events import MptcpEvent, decode_event
from mptcpkit.netlink.mptcp_pm import EndpointFlags, IPAddress, KernelEndpoint, Limits, parse_ip
from mptcpkit.netlink.session import Overrun, pending_datagrams, transact
from mptcpkit.netlink.socket import NETLINK_GENERIC, add_membership, open_netlink
from mptcpkit.netlink.socket import ifindex as nl_ifindex

FlagsSpec = str | Iterable[str] | int | EndpointFlags
_BUF = 1 << 16  # netlink messages are at most 32 KiB; a 1 MiB recv() costs an mmap per call


class EventsLost(NetlinkError):
    """The kernel dropped events (ENOBUFS: receive buffer overflow); state must be re-read from the kernel."""


class GenlSocket:
    """One generic-netlink socket bound to one family, with synchronous request/ack handling."""

    def __init__(self, family: str, netns: str | None = None) -> None:
        self.netns = netns
        self.sock = open_netlink(NETLINK_GENERIC, netns)
        self._seq = itertools.count(int(time.time()) & 0xFFFF)
        try:
            self.family = self._resolve(family)
        except BaseException:
            self.sock.close()
            raise

    def _resolve(self, name: str) -> genl_ctrl.FamilyInfo:
        try:
            (reply,) = self._transact(
                genl_ctrl.GENL_ID_CTRL, genl_ctrl.encode_getfamily(name), "resolve family"
            )
        except KernelError as exc:
            if exc.errno == _errno.ENOENT:
                raise FamilyNotFound(
                    f"generic netlink family {name!r} not found",
                    hint="is the kernel built with CONFIG_MPTCP?",
                ) from None
            raise
        return genl_ctrl.decode_family(reply)

    def _transact(self, msg_type: int, payload: bytes, what: str, *, dump: bool = False) -> list[bytes]:
        seq = next(self._seq) & 0xFFFFFFFF
        try:
            replies = transact(self.sock, msg_type, payload, seq, what, dump=dump)
        except PermissionError:
            raise EnvironmentProblem(
                f"{what}: permission denied", hint="needs CAP_NET_ADMIN (run as root)"
            ) from None
        except KernelError as exc:
            if exc.errno == _errno.EPERM:
                raise EnvironmentProblem(
                    f"{what}: operation not permitted", hint="needs CAP_NET_ADMIN (run as root)"
                ) from None
            raise
        return [m.payload for m in replies]

    def request(self, payload: bytes, what: str, *, dump: bool = False) -> list[bytes]:
        return self._transact(self.family.id, payload, what, dump=dump)

    def join(self, group: str) -> None:
        try:
            add_membership(self.sock, self.family.mcast_groups[group])
        except KeyError:
            raise FamilyNotFound(f"family {self.family.name!r} has no multicast group {group!r}") from None

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()


class MptcpPmClient:
    """Synchronous client of the kernel's MPTCP path manager, optionally inside a named network namespace."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._cmd = GenlSocket(pm.FAMILY_NAME, netns)
        self._ev: GenlSocket | None = None
        self.decode_errors = 0

    # -- lifecycle
    def __enter__(self) -> MptcpPmClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._cmd.close()
        if self._ev is not None:
            self._ev.close()
            self._ev = None

    # -- in-kernel endpoints
    def add_endpoint(
        self,
        addr: str | IPAddress,
        id: int | None = None,
        flags: FlagsSpec = 0,
        ifindex: int | None = None,
        dev: str | None = None,
        port: int | None = None,
    ) -> KernelEndpoint:
        """Add an endpoint and return it as the kernel stored it (with the id the kernel chose)."""
        ip = parse_ip(addr)
        if dev is not None:
            ifindex = self.ifindex(dev)
        f = _flags(flags)
        self._cmd.request(
            pm.req_add_addr(ip, id=id, flags=f, ifindex=ifindex, port=port), f"add endpoint {ip}"
        )
        if id is not None:  # the kernel stored what we sent: no need for a dump round trip
            return KernelEndpoint(id, ip, EndpointFlags(f), port or 0, ifindex or 0)
        for ep in self.dump_endpoints():
            if ep.addr == ip and (port is None or ep.port == port):
                return ep
        raise NetlinkError(f"endpoint {ip} added but not found in the dump")

    def del_endpoint(self, id: int, addr: str | IPAddress | None = None) -> None:
        """Delete endpoint `id` (the id 0 endpoint needs `addr`)."""
        ip = parse_ip(addr) if addr is not None else None
        self._cmd.request(pm.req_del_addr(id, ip), f"delete endpoint {id}")

    def get_endpoint(self, id: int, token: int | None = None) -> KernelEndpoint:
        (reply,) = self._cmd.request(pm.req_get_addr(id, token), f"get endpoint {id}")
        return pm.decode_endpoint(reply)

    def dump_endpoints(self, token: int | None = None) -> list[KernelEndpoint]:
        replies = self._cmd.request(pm.req_get_addr(None, token), "dump endpoints", dump=True)
        return [pm.decode_endpoint(r) for r in replies]

    def flush_endpoints(self) -> None:
        self._cmd.request(pm.req_flush_addrs(), "flush endpoints")

    def set_limits(self, subflows: int | None = None, add_addr_accepted: int | None = None) -> None:
        """Set the per-namespace limits (None leaves that limit unchanged); the kernel caps both at 8."""
        self._cmd.request(pm.req_set_limits(subflows, add_addr_accepted), "set limits")

    def get_limits(self) -> Limits:
        (reply,) = self._cmd.request(pm.req_get_limits(), "get limits")
        return pm.decode_limits(reply)

    def set_flags(
        self,
        id: int | None = None,
        addr: str | IPAddress | None = None,
        flags: FlagsSpec = 0,
        *,
        token: int | None = None,
        port: int | None = None,
        remote: str | IPAddress | None = None,
        remote_port: int | None = None,
    ) -> None:
        """Change backup/fullmesh of an endpoint (id or addr) or of a user-space PM subflow (token+addrs)."""
        if id is None and addr is None:
            raise UsageError("set_flags needs an endpoint id or an address")
        self._cmd.request(
            pm.req_set_flags(
                id=id,
                addr=parse_ip(addr) if addr is not None else None,
                flags=_flags(flags),
                token=token,
                port=port,
                remote=parse_ip(remote) if remote is not None else None,
                remote_port=remote_port,
            ),
            "set flags",
        )

    # -- user-space PM
    def announce(
        self,
        token: int,
        addr: str | IPAddress,
        id: int,
        port: int | None = None,
        flags: FlagsSpec = EndpointFlags.SIGNAL,
        ifindex: int | None = None,
    ) -> None:
        """Send ADD_ADDR for `addr` with local id `id` on connection `token` (user-space PM)."""
        ip = parse_ip(addr)
        self._cmd.request(
            pm.req_announce(token, ip, id, port=port, flags=_flags(flags), ifindex=ifindex), f"announce {ip}"
        )

    def remove(self, token: int, loc_id: int) -> None:
        """Send RM_ADDR for local id `loc_id` on connection `token` (user-space PM)."""
        self._cmd.request(pm.req_remove(token, loc_id), f"remove id {loc_id}")

    def subflow_create(
        self,
        token: int,
        local: str | IPAddress,
        remote: str | IPAddress,
        remote_port: int,
        local_id: int | None = None,
        flags: FlagsSpec | None = None,
        ifindex: int | None = None,
    ) -> None:
        self._cmd.request(
            pm.req_subflow_create(
                token,
                parse_ip(local),
                parse_ip(remote),
                remote_port,
                local_id=local_id,
                flags=None if flags is None else _flags(flags),
                ifindex=ifindex,
            ),
            "create subflow",
        )

    def subflow_destroy(
        self, token: int, local: str | IPAddress, local_port: int, remote: str | IPAddress, remote_port: int
    ) -> None:
        self._cmd.request(
            pm.req_subflow_destroy(token, parse_ip(local), local_port, parse_ip(remote), remote_port),
            "destroy subflow",
        )

    # -- events
    def subscribe(self, rcvbuf: int | None = None) -> GenlSocket:
        """Open (once) the event socket joined to `mptcp_pm_events`; its fileno() suits select/asyncio.
        `rcvbuf` shrinks the receive buffer (tests use it to provoke an overrun)."""
        if self._ev is None:
            self._ev = GenlSocket(pm.FAMILY_NAME, self.netns)
            if rcvbuf is not None:
                self._ev.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self._ev.join(pm.GROUP_EVENTS)
            self._ev.sock.setblocking(False)
        return self._ev

    def read_events(self) -> list[MptcpEvent]:
        """Decode every event queued now, without blocking; raises EventsLost on overflow."""
        ev = self.subscribe()
        out: list[MptcpEvent] = []
        try:
            datagrams = pending_datagrams(ev.sock)
        except Overrun:
            raise EventsLost("mptcp_pm events lost: socket receive buffer overflowed") from None
        for data in datagrams:
            try:
                for msg in nlmsg.iter_nlmsgs(data):
                    if msg.type == ev.family.id:
                        out.append(decode_event(msg.payload))
            except DecodeError:
                self.decode_errors += 1  # a malformed datagram is skipped; the others still count
        return out

    def events(self, timeout: float | None = None) -> Iterator[MptcpEvent]:
        """Yield events as they arrive; stop after `timeout` seconds in total (None = forever)."""
        ev = self.subscribe()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            ready, _, _ = select.select([ev.sock], [], [], left)
            if ready:
                yield from self.read_events()

    async def aevents(self) -> AsyncGenerator[MptcpEvent, None]:
        """Async iterator over events for asyncio programs (the socket is watched with loop.add_reader)."""
        import asyncio  # only here: importing asyncio costs a daemon that never uses it ~10 MB (ssl)

        ev = self.subscribe()
        loop = asyncio.get_running_loop()
        ready = asyncio.Event()
        loop.add_reader(ev.fileno(), ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                for e in self.read_events():
                    yield e
        finally:
            loop.remove_reader(ev.fileno())

    # -- helpers
    def ifindex(self, dev: str) -> int:
        """Interface index of `dev` in this client's namespace."""
        idx = nl_ifindex(dev, self.netns)
        if idx is None:
            raise UsageError(
                f"no interface {dev!r}" + (f" in namespace {self.netns!r}" if self.netns else "")
            )
        return idx


def _flags(spec: FlagsSpec) -> int:
    try:
        return int(EndpointFlags.parse(spec))
    except ValueError as exc:
        raise UsageError(str(exc)) from None


__all__ = ["EventsLost", "GenlSocket", "MptcpPmClient"]
