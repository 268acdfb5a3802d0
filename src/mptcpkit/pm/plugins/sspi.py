"""`sspi`: single subflow per interface, a user-space path manager as in mptcpd 0.12/0.13.

On a new connection, the addresses of every *other* interface are announced to the peer (each behind a
listening socket so the peer's MP_JOIN can land); a second subflow of one connection on the same interface
is closed. A new local address is announced on every tracked connection; a removed one is withdrawn.
Needs net.mptcp.path_manager = userspace (net.mptcp.pm_type = 1) in the daemon's namespace.

Beyond mptcpd: only addresses of the connection's own family are announced, and IPv6 link-local addresses
(unusable without a scope) are not. The announcements wait for `connection_established` (mptcpd sends them
at `new_connection`): until then the client's ACKs still carry MP_CAPABLE, the kernel holds the ADD_ADDR
back, and it leaves only with a later pure ACK, which a client that only sends never emits.
"""

from __future__ import annotations

import logging

from mptcpkit.netlink.errors import KernelError
from mptcpkit.netlink.mptcp_pm import IPAddress
from mptcpkit.netlink.rtnetlink import Interface
from mptcpkit.pm.plugin import PRIORITY_DEFAULT, Plugin, SockAddr

log = logging.getLogger("mptcpkit.pm.sspi")


def _usable(addr: IPAddress, family_of: IPAddress) -> bool:
    return addr.version == family_of.version and not addr.is_link_local and not addr.is_loopback


class SspiPlugin(Plugin):
    """One subflow per network interface per connection (user-space PM)."""

    name = "sspi"
    priority = PRIORITY_DEFAULT
    description = "Single-subflow-per-interface path manager (user-space PM)"
    needs_userspace_pm = True

    def start(self) -> None:
        self.tokens_by_iface: dict[int, set[int]] = {}
        self.advs: dict[int, dict[IPAddress, int]] = {}  # token -> announced addr -> id
        self.family: dict[int, IPAddress] = {}
        self.established: set[int] = set()

    def _iface(self, addr: IPAddress) -> int | None:
        iface = self.pm.interface_of(addr)
        return iface.index if iface is not None else None

    def _announce(self, token: int, addr: IPAddress) -> None:
        if addr in self.advs.setdefault(token, {}):
            return
        id = self.pm.idm.get_id(addr)
        if id == 0:
            log.error("unable to map %s to an address id", addr)
            return
        try:
            self.pm.add_addr(SockAddr(addr), id, token)
            self.advs[token][addr] = id
        except (KernelError, OSError) as exc:
            log.error("unable to advertise %s on token %08x: %s", addr, token, exc)

    def new_connection(self, token: int, laddr: SockAddr, raddr: SockAddr, server_side: bool) -> None:
        index = self._iface(laddr.addr)
        if index is None:
            log.error("no interface carries %s; connection %08x not tracked", laddr.addr, token)
            return
        self.tokens_by_iface.setdefault(index, set()).add(token)
        self.family[token] = laddr.addr

    def connection_established(self, token: int, laddr: SockAddr, raddr: SockAddr, server_side: bool) -> None:
        """Announce the addresses of every other interface (see the module docstring for why now)."""
        if token not in self.family:  # not seen created (events lost): track it now
            self.new_connection(token, laddr, raddr, server_side)
        index = self._iface(laddr.addr)
        if index is None or token not in self.family:
            return
        self.established.add(token)
        for iface in self.pm.interfaces():
            if iface.index == index:
                continue
            for addr in self.pm.network_addresses(iface.index):
                if _usable(addr, laddr.addr):
                    self._announce(token, addr)

    def connection_closed(self, token: int) -> None:
        for tokens in self.tokens_by_iface.values():
            tokens.discard(token)
        for addr in self.advs.pop(token, {}):
            self.pm.release_listener(SockAddr(addr))
        self.family.pop(token, None)
        self.established.discard(token)

    def new_subflow(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None:
        index = self._iface(laddr.addr)
        if index is None:
            log.error("unable to track new subflow from %s", laddr)
            return
        tokens = self.tokens_by_iface.setdefault(index, set())
        if token in tokens:
            log.warning(
                "subflow already exists on interface %d; closing new subflow %s -> %s", index, laddr, raddr
            )
            try:
                self.pm.remove_subflow(token, laddr, raddr)
            except KernelError as exc:
                log.error("unable to close subflow: %s", exc)
            return
        tokens.add(token)

    def subflow_closed(self, token: int, laddr: SockAddr, raddr: SockAddr, backup: bool) -> None:
        index = self._iface(laddr.addr)
        if index is not None:
            self.tokens_by_iface.get(index, set()).discard(token)

    def new_local_address(self, iface: Interface, addr: SockAddr) -> None:
        for token, fam in list(self.family.items()):
            if token in self.established and _usable(addr.addr, fam):
                self._announce(token, addr.addr)

    def delete_local_address(self, iface: Interface, addr: SockAddr) -> None:
        for token, announced in self.advs.items():
            id = announced.pop(addr.addr, None)
            if id is not None:
                try:
                    self.pm.remove_addr(id, token, SockAddr(addr.addr))
                except KernelError as exc:
                    log.error("unable to withdraw %s: %s", addr, exc)
