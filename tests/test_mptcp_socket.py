"""mptcp_socket: pure decoders on hand-built kernel structs, then the getsockopt layer on real sockets."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest

from mptcpkit import mptcp_socket as ms


def _sockaddr_in(addr: str, port: int) -> bytes:
    raw = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(addr)
    return raw.ljust(128, b"\0")


def _sockaddr_in6(addr: str, port: int) -> bytes:
    raw = struct.pack("=H", socket.AF_INET6) + struct.pack("!H", port) + b"\0" * 4
    return (raw + socket.inet_pton(socket.AF_INET6, addr)).ljust(128, b"\0")


def test_decode_mptcp_info_full_and_short() -> None:
    values = [2, 1, 1, 8, 8, 8, 3, 0xDEADBEEF, 10, 9, 8, 2, 8, 1, 4, 100, 2000, 3000, 1900, 3, 11, 12, 13]
    info = ms.decode_mptcp_info(struct.pack("<6B2xIIQQQ3BxIQQQQB3xIII", *values))
    assert info.subflows == 2 and info.token == 0xDEADBEEF and info.bytes_sent == 2000
    assert info.bytes_received == 3000 and info.subflows_total == 3 and info.last_ack_recv == 13
    assert info.fallback  # flags bit 0
    short = ms.decode_mptcp_info(bytes([1, 0, 0, 2, 0, 0, 0, 0]) + struct.pack("<II", 2, 7))
    assert short.subflows == 1 and short.flags == 2 and short.token == 7 and short.bytes_sent == 0
    assert not short.fallback


def test_decode_tcp_info_offsets() -> None:
    buf = bytearray(232)
    buf[0], buf[2] = 1, 3
    struct.pack_into("<II", buf, 16, 1448, 1424)
    struct.pack_into("<IIII", buf, 68, 250, 40, 10, 33)
    struct.pack_into("<I", buf, 100, 5)
    struct.pack_into("<QQQQ", buf, 104, 1_000_000, 0, 123_456, 654_321)
    struct.pack_into("<II", buf, 136, 77, 88)
    struct.pack_into("<I", buf, 148, 200)
    struct.pack_into("<QQ", buf, 160, 999, 55)
    struct.pack_into("<QQ", buf, 200, 130_000, 1_000)
    ti = ms.decode_tcp_info(bytes(buf))
    assert (ti.state, ti.retransmits, ti.snd_mss, ti.rcv_mss) == (1, 3, 1448, 1424)
    assert (ti.rtt_us, ti.rttvar_us, ti.snd_cwnd, ti.total_retrans) == (250, 40, 33, 5)
    assert (ti.bytes_acked, ti.bytes_received, ti.segs_out, ti.segs_in) == (123_456, 654_321, 77, 88)
    assert (ti.min_rtt_us, ti.delivery_rate, ti.busy_time_us) == (200, 999, 55)
    assert (ti.bytes_sent, ti.bytes_retrans) == (130_000, 1_000)
    assert ms.decode_tcp_info(bytes(buf[:20])).snd_mss == 1448  # short struct is zero-padded


def test_subflow_array_and_addrs() -> None:
    elem = _sockaddr_in("10.0.1.1", 40000) + _sockaddr_in("10.0.1.2", 5201)
    elem6 = _sockaddr_in6("fd00::1", 1) + _sockaddr_in6("fd00::2", 2)
    head = struct.pack("<IIII", 16, 3, 256, 256)  # kernel has 3 subflows, buffer held 2
    hdr, elems = ms.decode_subflow_array(head + elem + elem6)
    assert hdr.num_subflows == 3 and len(elems) == 2
    a, b = (ms.decode_subflow_addrs(e) for e in elems)
    assert a.local == ("10.0.1.1", 40000) and a.remote == ("10.0.1.2", 5201)
    assert b.local == ("fd00::1", 1) and b.remote == ("fd00::2", 2)
    assert ms.decode_sockaddr(b"\0" * 128) == ("", 0)
    req = ms.encode_subflow_request(232, 4)
    assert len(req) == 16 + 232 * 4 and struct.unpack_from("<IIII", req) == (16, 0, 0, 232)
    with pytest.raises(ValueError):
        ms.decode_subflow_array(b"\0" * 8)


LIVE = """
import socket, sys
from mptcpkit import mptcp_socket as ms
ls = ms.mptcp_socket(); ls.bind(("127.0.0.1", 0)); ls.listen()
tcp = socket.socket(); tcp.bind(("127.0.0.1", 0)); tcp.listen()
c = ms.mptcp_socket(); c.connect(ls.getsockname()); s, _ = ls.accept()
c.sendall(b"x" * 100000); got = 0
while got < 100000: got += len(s.recv(65536))
info = ms.mptcp_info(c); tis = ms.subflow_tcp_info(c); addrs = ms.subflow_addrs(c)
assert ms.is_mptcp_socket(c) and info is not None and not info.fallback, info
assert info.bytes_sent >= 100000 and info.subflows_total == 1, info
assert len(tis) == 1 and tis[0].bytes_acked >= 100000 and tis[0].snd_mss > 0, tis
assert addrs[0].local == c.getsockname() and addrs[0].remote == ls.getsockname(), addrs
fb = ms.mptcp_socket(); fb.connect(tcp.getsockname())
assert ms.mptcp_info(fb) is None and ms.subflow_addrs(fb) == []
print("ok")
"""


@pytest.mark.needs_root
def test_getsockopt_layer_on_real_connections(make_netns: Callable[[str], str]) -> None:
    ns = make_netns("trsock")
    cp = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", LIVE], capture_output=True, text=True
    )
    assert cp.stdout.strip() == "ok", cp.stderr
