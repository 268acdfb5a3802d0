"""MPTCP socket constants and pure decoders for the SOL_MPTCP socket options (uapi/linux/mptcp.h).

Decoding is pure (bytes -> dataclass); `mptcp_info()`, `subflow_tcp_info()` and `subflow_addrs()` are the thin
getsockopt layer around it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_TCPINFO = 2
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_FULL_INFO = 4

MPTCP_INFO_FLAG_FALLBACK = 1 << 0
MPTCP_INFO_FLAG_REMOTE_KEY_RECEIVED = 1 << 1

_MPTCP_INFO = struct.Struct("<6B2xIIQQQ3BxIQQQQB3xIII")
MPTCP_INFO_SIZE = _MPTCP_INFO.size  # 96 bytes in kernels >= 6.10; older kernels return a prefix
_SUBFLOW_DATA = struct.Struct("<IIII")
_SOCKADDR_STORAGE = 128


@dataclass(frozen=True, slots=True)
class MptcpInfo:
    """`struct mptcp_info`: one MPTCP connection's state as the kernel reports it."""

    subflows: int
    add_addr_signal: int
    add_addr_accepted: int
    subflows_max: int
    add_addr_signal_max: int
    add_addr_accepted_max: int
    flags: int
    token: int
    write_seq: int
    snd_una: int
    rcv_nxt: int
    local_addr_used: int
    local_addr_max: int
    csum_enabled: int
    retransmits: int
    bytes_retrans: int
    bytes_sent: int
    bytes_received: int
    bytes_acked: int
    subflows_total: int
    last_data_sent: int
    last_data_recv: int
    last_ack_recv: int

    @property
    def fallback(self) -> bool:
        """True when the connection fell back to plain TCP."""
        return bool(self.flags & MPTCP_INFO_FLAG_FALLBACK)


def decode_mptcp_info(data: bytes) -> MptcpInfo:
    """Decode `struct mptcp_info`; a shorter (older kernel) struct is zero-padded."""
    padded = data[: _MPTCP_INFO.size].ljust(_MPTCP_INFO.size, b"\0")
    return MptcpInfo(*_MPTCP_INFO.unpack(padded))


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The fields of `struct tcp_info` the lab reports per subflow."""

    state: int
    retransmits: int
    snd_mss: int
    rcv_mss: int
    rtt_us: int
    rttvar_us: int
    snd_cwnd: int
    total_retrans: int
    pacing_rate: int
    bytes_acked: int
    bytes_received: int
    segs_out: int
    segs_in: int
    min_rtt_us: int
    delivery_rate: int
    busy_time_us: int
    bytes_sent: int
    bytes_retrans: int


def decode_tcp_info(data: bytes) -> TcpInfo:
    """Decode the leading part of `struct tcp_info` (as returned by TCP_INFO or MPTCP_TCPINFO).

    Offsets are uapi and stable: snd_mss 16, rtt 68, snd_cwnd 80, total_retrans 100, pacing_rate 104,
    bytes_acked 120, segs_out 136, min_rtt 148, delivery_rate 160, bytes_sent 200, bytes_retrans 208.
    """
    buf = data.ljust(232, b"\0")
    state, _ca_state, retransmits = buf[0], buf[1], buf[2]
    (snd_mss, rcv_mss) = struct.unpack_from("<II", buf, 16)
    (rtt, rttvar, _ssthresh, snd_cwnd) = struct.unpack_from("<IIII", buf, 68)
    (total_retrans,) = struct.unpack_from("<I", buf, 100)
    (pacing_rate, _max_pacing, bytes_acked, bytes_received) = struct.unpack_from("<QQQQ", buf, 104)
    (segs_out, segs_in) = struct.unpack_from("<II", buf, 136)
    (min_rtt,) = struct.unpack_from("<I", buf, 148)
    (delivery_rate, busy_time) = struct.unpack_from("<QQ", buf, 160)
    (bytes_sent, bytes_retrans) = struct.unpack_from("<QQ", buf, 200)
    return TcpInfo(
        state=state,
        retransmits=retransmits,
        snd_mss=snd_mss,
        rcv_mss=rcv_mss,
        rtt_us=rtt,
        rttvar_us=rttvar,
        snd_cwnd=snd_cwnd,
        total_retrans=total_retrans,
        pacing_rate=pacing_rate,
        bytes_acked=bytes_acked,
        bytes_received=bytes_received,
        segs_out=segs_out,
        segs_in=segs_in,
        min_rtt_us=min_rtt,
        delivery_rate=delivery_rate,
        busy_time_us=busy_time,
        bytes_sent=bytes_sent,
        bytes_retrans=bytes_retrans,
    )


@dataclass(frozen=True, slots=True)
class SubflowData:
    """`struct mptcp_subflow_data`: the header of MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS answers."""

    size_subflow_data: int
    num_subflows: int
    size_kernel: int
    size_user: int


def encode_subflow_request(elem_size: int, count: int) -> bytes:
    """The getsockopt buffer to ask for `count` elements of `elem_size` bytes each."""
    header = _SUBFLOW_DATA.pack(_SUBFLOW_DATA.size, 0, 0, elem_size)
    return header + b"\0" * (elem_size * count)


def decode_subflow_array(data: bytes) -> tuple[SubflowData, list[bytes]]:
    """Split an MPTCP_TCPINFO / MPTCP_SUBFLOW_ADDRS answer into its header and per-subflow elements."""
    if len(data) < _SUBFLOW_DATA.size:
        raise ValueError(f"subflow data too short: {len(data)} bytes")
    head = SubflowData(*_SUBFLOW_DATA.unpack_from(data))
    elems: list[bytes] = []
    offset = head.size_subflow_data
    # num_subflows is the total; the kernel copies at most as many elements as the buffer held.
    while offset + head.size_user <= len(data) and len(elems) < head.num_subflows and head.size_user:
        elems.append(data[offset : offset + head.size_user])
        offset += head.size_user
    return head, elems


@dataclass(frozen=True, slots=True)
class SubflowAddrs:
    """`struct mptcp_subflow_addrs`: the local and remote address of one subflow."""

    local: tuple[str, int]
    remote: tuple[str, int]


def decode_sockaddr(data: bytes) -> tuple[str, int]:
    """Decode a sockaddr_in / sockaddr_in6 in a sockaddr_storage."""
    (family,) = struct.unpack_from("=H", data, 0)
    (port,) = struct.unpack_from("!H", data, 2)
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(data[4:8])), port
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(data[8:24])), port
    return "", 0


def decode_subflow_addrs(elem: bytes) -> SubflowAddrs:
    """Decode one `struct mptcp_subflow_addrs` element."""
    return SubflowAddrs(
        local=decode_sockaddr(elem[:_SOCKADDR_STORAGE]),
        remote=decode_sockaddr(elem[_SOCKADDR_STORAGE : 2 * _SOCKADDR_STORAGE]),
    )


# ---- thin I/O layer -------------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def mptcp_socket(family: int = socket.AF_INET) -> socket.socket:
    """A new MPTCP stream socket; raises OSError (EPROTONOSUPPORT/ENOPROTOOPT) where MPTCP is missing."""
    return socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)


def is_mptcp_socket(sock: socket.socket) -> bool:
    """True when the socket was created with IPPROTO_MPTCP."""
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == IPPROTO_MPTCP


def mptcp_info(sock: socket.socket) -> MptcpInfo | None:
    """MPTCP_INFO for a connected MPTCP socket, or None when it fell back to TCP (the kernel refuses then)."""
    try:
        data = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, MPTCP_INFO_SIZE)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT):
            return None
        raise
    return decode_mptcp_info(data)


def _getsockopt_inout(sock: socket.socket, level: int, optname: int, request: bytes) -> bytes:
    """getsockopt() with an input buffer (the kernel reads the request header); Python's own cannot."""
    buf = ctypes.create_string_buffer(request, len(request))
    size = ctypes.c_uint32(len(request))
    if _libc.getsockopt(sock.fileno(), level, optname, buf, ctypes.byref(size)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return buf.raw[: size.value]


def _subflow_elems(sock: socket.socket, optname: int, elem_size: int, count: int = 16) -> list[bytes]:
    try:
        data = _getsockopt_inout(sock, SOL_MPTCP, optname, encode_subflow_request(elem_size, count))
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT):
            return []
        raise
    _, elems = decode_subflow_array(data)
    return elems


def subflow_tcp_info(sock: socket.socket) -> list[TcpInfo]:
    """MPTCP_TCPINFO: `struct tcp_info` of every subflow."""
    return [decode_tcp_info(e) for e in _subflow_elems(sock, MPTCP_TCPINFO, 232)]


def subflow_addrs(sock: socket.socket) -> list[SubflowAddrs]:
    """MPTCP_SUBFLOW_ADDRS: local and remote address of every subflow."""
    return [decode_subflow_addrs(e) for e in _subflow_elems(sock, MPTCP_SUBFLOW_ADDRS, 2 * _SOCKADDR_STORAGE)]
