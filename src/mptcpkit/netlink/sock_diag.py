"""The kernel's list of MPTCP connections through sock_diag (what `ss -M` shows): codec + one blocking dump.

The daemon uses it to rebuild its connection table after `mptcp_pm` events were lost (ENOBUFS): the events
cannot be replayed, but every open MPTCP socket can be listed with its token (from `struct mptcp_info`).
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import struct
from dataclasses import dataclass

from mptcpkit.mptcp_socket import IPPROTO_MPTCP, decode_mptcp_info
from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError
from mptcpkit.netlink.session import transact

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
INET_DIAG_INFO = 2
INET_DIAG_REQ_PROTOCOL = 3  # protocols above 255 (MPTCP is 262) go in this u32 attribute
TCP_LISTEN = 10
_REQ = struct.Struct("=BBBxI48x")  # family, protocol, ext, pad, states, inet_diag_sockid (zeroed)
_MSG = struct.Struct("=BBBBHH16s16sI8sIIIII")  # inet_diag_msg; ports are big-endian
_SEQ = itertools.count(1)


@dataclass(frozen=True, slots=True)
class DiagConnection:
    token: int
    laddr: str
    raddr: str
    state: int


def req_dump(family: int) -> bytes:
    """Every MPTCP socket of `family` except listeners, with INET_DIAG_INFO (struct mptcp_info)."""
    states = 0xFFFFFFFF & ~(1 << TCP_LISTEN)
    head = _REQ.pack(family, 0, 1 << (INET_DIAG_INFO - 1), states)
    return head + nlmsg.pack_attr(INET_DIAG_REQ_PROTOCOL, nlmsg.u32(IPPROTO_MPTCP))


def _addr(family: int, raw: bytes, port: int) -> str:
    if family == socket.AF_INET:
        return f"{ipaddress.IPv4Address(raw[:4])}:{port}"
    return f"[{ipaddress.IPv6Address(raw)}]:{port}"


def decode_connection(payload: bytes) -> DiagConnection | None:
    """One inet_diag_msg; None when it carries no mptcp_info. Raises only DecodeError."""
    if len(payload) < _MSG.size:
        raise DecodeError("truncated inet_diag_msg")
    family, state, _, _, sport_be, dport_be, src, dst, *_ = _MSG.unpack_from(payload)
    if family not in (socket.AF_INET, socket.AF_INET6):
        raise DecodeError(f"inet_diag_msg of family {family}")
    info = nlmsg.attr_map(payload[_MSG.size :]).get(INET_DIAG_INFO)
    if info is None:
        return None
    sport, dport = socket.ntohs(sport_be), socket.ntohs(dport_be)
    token = decode_mptcp_info(info).token
    return DiagConnection(token, _addr(family, src, sport), _addr(family, dst, dport), state)


def mptcp_connections() -> list[DiagConnection]:
    """Open MPTCP connections of the calling thread's namespace (run it through `run_in_netns`)."""
    out: list[DiagConnection] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG) as s:
        s.settimeout(2.0)
        for family in (socket.AF_INET, socket.AF_INET6):
            for m in transact(s, SOCK_DIAG_BY_FAMILY, req_dump(family), next(_SEQ), "sock_diag", dump=True):
                try:
                    c = decode_connection(m.payload)
                except DecodeError:
                    continue
                if c is not None and c.token:
                    out.append(c)
    return out
