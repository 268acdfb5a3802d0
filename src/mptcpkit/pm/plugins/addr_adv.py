"""`addr_adv`: the in-kernel path manager's address advertiser, as in mptcpd 0.12/0.13.

Each new local address becomes an in-kernel endpoint with the configured `addr-flags`; a removed address
removes its endpoint. The limits follow mptcpd exactly: a counter starts at 2 (at plugin start), goes up by
one per added address and down by one per removed address, and is written to the kernel only while it lies
in 2..8 (the kernel's maximum). `add_addr_accepted` is set to the same value when `addr-flags` contains
`subflow` (the host is then assumed to be a client that accepts the server's ADD_ADDRs), else to 0.

Beyond mptcpd: `reconcile()` compares the kernel's endpoint table with the addresses in use and repairs it
(stale endpoints removed, missing ones added), and the daemon removes the endpoints and restores the limits on
exit.
"""

from __future__ import annotations

import logging

from mptcpkit.netlink.errors import KernelError
from mptcpkit.netlink.mptcp_pm import EndpointFlags
from mptcpkit.netlink.rtnetlink import Interface
from mptcpkit.pm.plugin import PRIORITY_DEFAULT, Plugin, SockAddr

MIN_SUBFLOWS = 2
MAX_SUBFLOWS = 8

log = logging.getLogger("mptcpkit.pm.addr_adv")


def limits_for(count: int, addr_flags: int) -> tuple[int, int] | None:
    """mptcpd's rule: (subflows, add_addr_accepted) to write for `count`, None outside 2..8 (unchanged)."""
    if not MIN_SUBFLOWS <= count <= MAX_SUBFLOWS:
        return None
    return count, count if addr_flags & EndpointFlags.SUBFLOW else 0


class AddrAdvPlugin(Plugin):
    """Endpoint per local address, limits adjusted per address (in-kernel PM)."""

    name = "addr_adv"
    priority = PRIORITY_DEFAULT
    description = "Address advertiser path manager (in-kernel endpoints)"

    count = 0

    def start(self) -> None:
        self.count = 0
        self.failed: set[str] = set()
        self._update_limits(MIN_SUBFLOWS)

    def _update_limits(self, delta: int) -> None:
        self.count += delta
        lim = limits_for(self.count, self.pm.config.addr_flags)
        if lim is None:
            return
        try:
            self.pm.kpm_set_limits(subflows=lim[0], add_addr_accepted=lim[1])
        except KernelError as exc:
            log.warning("can't update limits to %d: %s", self.count, exc)

    def _flags(self, ifindex: int, addr: object) -> int:
        """addr-flags, or the per-interface / per-address flags of the config (beyond mptcpd)."""
        link = self.pm.network.links.get(ifindex)
        return int(self.pm.config.flags_for(link.name if link else "", addr))

    def new_local_address(self, iface: Interface, addr: SockAddr) -> None:
        id = self.pm.idm.get_id(addr.addr)
        if id == 0:
            log.error("unable to map %s to an address id", addr)
            return
        try:  # the endpoint first (as mptcpd): it is what a new subflow waits for
            self.pm.kpm_add_addr(addr.addr, id, self._flags(iface.index, addr.addr), iface.index)
        except KernelError as exc:
            # ERANGE: the kernel's table is full (8 endpoints); retried when an endpoint goes away
            self.failed.add(str(addr.addr))
            log.error("unable to add endpoint %s: %s", addr, exc)
        self._update_limits(+1)

    def delete_local_address(self, iface: Interface, addr: SockAddr) -> None:
        id = self.pm.idm.remove_id(addr.addr)
        if id == 0:
            log.info("no address id for %s", addr)
            return
        self.failed.discard(str(addr.addr))
        try:
            self.pm.kpm_remove_addr(id)
        except KernelError as exc:
            log.error("unable to remove endpoint %s: %s", addr, exc)
        self._update_limits(-1)
        if self.failed:
            self._retry_failed()  # beyond mptcpd: a freed slot goes to an address that did not fit

    def _retry_failed(self) -> None:
        """Give freed endpoint slots to addresses that did not fit, stopping at the first refusal (so a storm
        of removals costs one kernel request each, not one per waiting address)."""
        in_use = {str(a.addr): a for a in self.pm.network.reported_addresses()}
        for key in list(self.failed):
            a = in_use.get(key)
            if a is None:
                self.failed.discard(key)
                continue
            id = self.pm.idm.get_id(a.addr)
            if not id:
                return
            try:
                self.pm.kpm_add_addr(a.addr, id, self._flags(a.ifindex, a.addr), a.ifindex)
            except KernelError:
                return
            self.failed.discard(key)

    def reconcile(self) -> None:
        """Make the kernel's endpoints match the addresses in use (for the endpoints this daemon owns)."""
        try:
            kernel = {e.id: e for e in self.pm.kpm_dump_addrs()}
        except KernelError as exc:
            log.warning("cannot read endpoints: %s", exc)
            return
        in_use = {a.addr: a for a in self.pm.network.reported_addresses()}
        for id, ep in list(self.pm.owned.items()):
            if ep.addr not in in_use:
                log.info("removing stale endpoint %s id %d", ep.addr, id)
                if ep.addr is not None:
                    self.pm.idm.remove_id(ep.addr)
                self.pm.kpm_remove_addr(id)
            elif id not in kernel:
                log.info("endpoint %s id %d vanished; adding it again", ep.addr, id)
                del self.pm.owned[id]
                a = in_use[ep.addr]
                self.pm.kpm_add_addr(a.addr, id, self._flags(a.ifindex, a.addr), a.ifindex)
        owned_addrs = {e.addr for e in self.pm.owned.values()}
        for addr, a in in_use.items():
            if addr not in owned_addrs:
                id = self.pm.idm.get_id(addr)
                if id:
                    log.info("adding missing endpoint %s id %d", addr, id)
                    try:
                        self.pm.kpm_add_addr(addr, id, self._flags(a.ifindex, addr), a.ifindex)
                        self.failed.discard(str(addr))
                    except KernelError as exc:
                        self.failed.add(str(addr))
                        log.debug("still unable to add endpoint %s: %s", addr, exc)
