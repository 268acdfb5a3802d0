"""The path-manager handle given to plugins: act on the kernel, remember what the daemon added.

Everything a plugin adds through the handle is recorded (in-kernel endpoints, listening sockets) so the
daemon can remove it on exit and a restart does not collide with leftovers.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from mptcpkit.netlink.client import MptcpPmClient
from mptcpkit.netlink.errors import KernelError
from mptcpkit.netlink.mptcp_pm import EndpointFlags, IPAddress, KernelEndpoint, Limits
from mptcpkit.netlink.rtnetlink import Interface
from mptcpkit.netlink.socket import run_in_netns
from mptcpkit.pm.config import Config
from mptcpkit.pm.netmon import NetworkMonitor
from mptcpkit.pm.plugin import SockAddr

log = logging.getLogger("mptcpkit.pm")
IPPROTO_MPTCP = 262  # not from mptcp_socket: it imports subprocess/shutil, RSS the daemon does not need


class IdManager:
    """Local address ids 1..255: stable per address while in use, lowest free first (mptcpd's idm)."""

    def __init__(self) -> None:
        self.ids: dict[IPAddress, int] = {}

    def get_id(self, addr: IPAddress) -> int:
        """The address's id, allocating one; 0 when all 255 are taken."""
        if addr in self.ids:
            return self.ids[addr]
        used = set(self.ids.values())
        for i in range(1, 256):
            if i not in used:
                self.ids[addr] = i
                return i
        return 0

    def reserve(self, addr: IPAddress, id: int) -> None:
        self.ids[addr] = id

    def remove_id(self, addr: IPAddress) -> int:
        """Release and return the id of `addr` (0 if it had none)."""
        return self.ids.pop(addr, 0)

    def find(self, addr: IPAddress) -> int:
        return self.ids.get(addr, 0)


@dataclass
class _Listener:
    sock: socket.socket
    port: int
    users: int = 1


@dataclass
class PathManager:
    """What plugins call. `kpm_*` act on the in-kernel PM's endpoints; the rest drive the user-space PM."""

    client: MptcpPmClient
    config: Config
    network: NetworkMonitor
    netns: str | None = None
    idm: IdManager = field(default_factory=IdManager)
    owned: dict[int, KernelEndpoint] = field(default_factory=dict)
    """In-kernel endpoints added through this handle, by id (removed at exit)."""
    listeners: dict[tuple[IPAddress, int], _Listener] = field(default_factory=dict)
    limits_before: Limits | None = None
    on_monitor_loopback: Callable[[bool], None] | None = None

    # -- network view
    def interfaces(self) -> list[Interface]:
        return [i for i in self.network.links.values() if self.network.usable(i)]

    def monitor_loopback(self, on: bool = True) -> None:
        """mptcpd's mptcpd_nm_monitor_loopback(): also report loopback links and their addresses."""
        if self.on_monitor_loopback is not None:
            self.on_monitor_loopback(on)
        else:
            self.network.monitor_loopback = on

    def interface_of(self, addr: IPAddress) -> Interface | None:
        return self.network.interface_of(addr)

    def addresses_of(self, ifindex: int) -> list[IPAddress]:
        """Addresses of `ifindex` reported to plugins (after the notify-flags filters)."""
        return [a.addr for a in self.network.reported_addresses() if a.ifindex == ifindex]

    def network_addresses(self, ifindex: int) -> list[IPAddress]:
        """Every address the kernel has on `ifindex` (mptcpd's interface address list)."""
        return [a for (i, a) in self.network.addrs if i == ifindex]

    # -- in-kernel path manager
    def kpm_add_addr(
        self, addr: IPAddress | SockAddr, id: int, flags: int, ifindex: int | None = None
    ) -> KernelEndpoint:
        """Add an endpoint; if an identical address is already there (a previous run), adopt it.

        Given a `SockAddr` with a port, the endpoint gets that port and the `signal` flag, which the kernel
        requires for a port (mptcpd 0.13 adds it the same way)."""
        port = None
        if isinstance(addr, SockAddr):
            port = addr.port or None
            addr = addr.addr
        if port:
            flags |= EndpointFlags.SIGNAL
        for ep in self.owned.values():
            if ep.addr == addr and ep.flags & ~EndpointFlags.IMPLICIT == flags:
                self.idm.reserve(addr, ep.id)
                return ep  # taken over from a previous run
        try:
            ep = self.client.add_endpoint(
                addr, id=id or None, flags=flags, ifindex=ifindex or None, port=port
            )
        except KernelError as exc:
            if exc.errno not in (errno.EEXIST, errno.EBUSY):  # the kernel reports a duplicate as EBUSY
                raise
            existing = next((e for e in self.client.dump_endpoints() if e.addr == addr), None)
            if existing is None:
                raise  # the id is taken by another address
            if existing.flags & ~EndpointFlags.IMPLICIT != flags:
                self.client.del_endpoint(existing.id, existing.addr)
                ep = self.client.add_endpoint(
                    addr, id=existing.id, flags=flags, ifindex=ifindex or None, port=port
                )
            else:
                ep = existing
            log.info("adopted existing endpoint %s id %d", addr, ep.id)
        self.owned[ep.id] = ep
        self.idm.reserve(addr, ep.id)
        return ep

    def kpm_remove_addr(self, id: int) -> None:
        ep = self.owned.pop(id, None)
        try:
            self.client.del_endpoint(id, ep.addr if ep is not None else None)
        except KernelError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOENT):  # already gone: fine
                raise

    def kpm_get_addr(self, id: int) -> KernelEndpoint:
        return self.client.get_endpoint(id)

    def kpm_dump_addrs(self) -> list[KernelEndpoint]:
        return self.client.dump_endpoints()

    def kpm_flush_addrs(self) -> None:
        self.client.flush_endpoints()
        self.owned.clear()

    def kpm_set_limits(self, subflows: int | None = None, add_addr_accepted: int | None = None) -> None:
        if self.limits_before is None:
            self.limits_before = self.client.get_limits()
        self.client.set_limits(subflows=subflows, add_addr_accepted=add_addr_accepted)

    def kpm_get_limits(self) -> Limits:
        return self.client.get_limits()

    def kpm_set_flags(self, addr: IPAddress, flags: int) -> None:
        self.client.set_flags(addr=addr, flags=flags)

    # -- user-space path manager
    def add_addr(self, addr: SockAddr, id: int, token: int, *, listen: bool = True) -> int:
        """Announce `addr` on connection `token`; with `listen`, first open an MPTCP listener so the peer's
        MP_JOIN to it succeeds (its port is announced). Returns the announced port."""
        port = addr.port
        if listen:
            port = self._listen(addr)
        self.client.announce(token, addr.addr, id, port=port or None)
        return port

    def add_addr_no_listener(self, addr: SockAddr, id: int, token: int) -> None:
        self.add_addr(addr, id, token, listen=False)

    def remove_addr(self, id: int, token: int, addr: SockAddr | None = None) -> None:
        self.client.remove(token, id)
        if addr is not None:
            self._unlisten(addr)

    def add_subflow(
        self, token: int, local_id: int, laddr: SockAddr, raddr: SockAddr, backup: bool = False
    ) -> None:
        self.client.subflow_create(
            token,
            laddr.addr,
            raddr.addr,
            raddr.port,
            local_id=local_id or None,
            flags=EndpointFlags.BACKUP if backup else None,
        )

    def set_backup(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None:
        self.client.set_flags(
            addr=laddr.addr,
            port=laddr.port or None,
            flags=EndpointFlags.BACKUP if backup else 0,
            token=token,
            remote=raddr.addr,
            remote_port=raddr.port or None,
        )

    def remove_subflow(self, token: int, laddr: SockAddr, raddr: SockAddr) -> None:
        self.client.subflow_destroy(token, laddr.addr, laddr.port, raddr.addr, raddr.port)

    # -- listeners
    def _listen(self, addr: SockAddr) -> int:
        key = (addr.addr, addr.port)
        if key in self.listeners:
            self.listeners[key].users += 1
            return self.listeners[key].port

        def make() -> socket.socket:
            fam = socket.AF_INET if addr.addr.version == 4 else socket.AF_INET6
            s = socket.socket(fam, socket.SOCK_STREAM | socket.SOCK_CLOEXEC, IPPROTO_MPTCP)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((str(addr.addr), addr.port))
            s.listen(16)
            return s

        s = run_in_netns(self.netns, make)
        port = int(s.getsockname()[1])
        self.listeners[key] = _Listener(s, port)
        return port

    def release_listener(self, addr: SockAddr) -> None:
        """Drop one use of the listener opened for `addr` by add_addr (closed when unused)."""
        self._unlisten(addr)

    def _unlisten(self, addr: SockAddr) -> None:
        for key, lst in list(self.listeners.items()):
            if key[0] == addr.addr and (addr.port in (0, key[1], lst.port)):
                lst.users -= 1
                if lst.users <= 0:
                    lst.sock.close()
                    del self.listeners[key]
                return

    # -- shutdown
    def cleanup(self) -> None:
        """Remove every endpoint this handle added, close listeners and put the limits back."""
        for id in list(self.owned):
            try:
                self.kpm_remove_addr(id)
            except KernelError as exc:
                log.warning("could not remove endpoint %d: %s", id, exc)
        for lst in self.listeners.values():
            lst.sock.close()
        self.listeners.clear()
        if self.limits_before is not None:
            try:
                self.client.set_limits(self.limits_before.subflows, self.limits_before.add_addr_accepted)
            except KernelError as exc:
                log.warning("could not restore limits: %s", exc)
