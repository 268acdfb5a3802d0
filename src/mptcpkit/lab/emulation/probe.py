"""Round-trip probes for checking a link, stdlib only: ICMP echo (``ping``) and UDP (``echo`` + ``rtt``).

Run inside a namespace as a script (``ip netns exec NS python -I probe.py ...``); clients print JSON.
Each probe carries its sequence number, so loss and reordering are visible, not only the RTT.
``ping`` is the accurate one: the far kernel answers in softirq and the reply is timestamped by the
local kernel (SO_TIMESTAMPNS), so no process wake-up on a busy machine inflates the RTT.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import sys
import time

PROBE = struct.Struct("!Qd")  # sequence, send time (client clock)
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP_HDR = struct.Struct("!BBHHH")  # type, code, checksum, id, sequence
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")


def inet_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


def kernel_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return float(sec + nsec / 1e9)
    return None


def ping(host: str, count: int, interval_s: float, wait_s: float, size: int) -> dict[str, object]:
    """ICMP echo with kernel receive timestamps (needs root: raw socket)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    ident = os.getpid() & 0xFFFF
    pad = b"\0" * max(0, size - 8)
    sent_at: list[float] = [0.0] * count
    rtts: list[float | None] = [None] * count
    order: list[int] = []
    sent = 0
    start = time.monotonic()
    end: float | None = None
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * interval_s:
            body = ICMP_HDR.pack(ICMP_ECHO, 0, 0, ident, sent & 0xFFFF) + pad
            packet = ICMP_HDR.pack(ICMP_ECHO, 0, inet_checksum(body), ident, sent & 0xFFFF) + pad
            sent_at[sent] = time.time()
            sock.sendto(packet, (host, 0))
            sent += 1
            if sent == count:
                end = now + wait_s
            continue
        if end is not None and now >= end:
            break
        next_send = start + sent * interval_s if sent < count else (end or now)
        if not select.select([sock], [], [], max(0.0, next_send - now))[0]:
            continue
        data, ancdata, _flags, _addr = sock.recvmsg(65536, 256)
        got = kernel_time(ancdata) or time.time()
        ihl = (data[0] & 0x0F) * 4
        kind, _code, _sum, rid, seq = ICMP_HDR.unpack_from(data, ihl)
        if kind != ICMP_ECHOREPLY or rid != ident:
            continue
        # Sequence numbers wrap at 65536: match the most recent probe with that number.
        idx = max((i for i in range(seq, sent, 65536)), default=None)
        if idx is not None and rtts[idx] is None:
            rtts[idx] = got - sent_at[idx]
            order.append(idx)
    return _result(count, rtts, order)


def _result(count: int, rtts: list[float | None], order: list[int]) -> dict[str, object]:
    received = [r for r in rtts if r is not None]
    reordered = sum(1 for i in range(1, len(order)) if order[i] < order[i - 1])
    return {"sent": count, "received": len(received), "rtt_s": received, "reordered": reordered}


def echo(port: int, idle_timeout_s: float) -> int:
    """Send every datagram back to its sender; exit after ``idle_timeout_s`` without traffic."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))
    print("ready", flush=True)
    while select.select([sock], [], [], idle_timeout_s)[0]:
        data, peer = sock.recvfrom(2048)
        sock.sendto(data, peer)
    return 0


def rtt(host: str, port: int, count: int, interval_s: float, wait_s: float, size: int) -> dict[str, object]:
    """Send ``count`` probes every ``interval_s``; collect replies until ``wait_s`` after the last one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    pad = b"\0" * max(0, size - PROBE.size)
    rtts: list[float | None] = [None] * count
    order: list[int] = []
    sent = 0
    start = time.monotonic()
    end = None
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * interval_s:
            sock.send(PROBE.pack(sent, now) + pad)
            sent += 1
            if sent == count:
                end = now + wait_s
            continue
        if end is not None and now >= end:
            break
        next_send = start + sent * interval_s if sent < count else (end or now)
        if select.select([sock], [], [], max(0.0, next_send - now))[0]:
            data = sock.recv(2048)
            got = time.monotonic()
            seq, t0 = PROBE.unpack_from(data)
            if seq < count and rtts[seq] is None:
                rtts[seq] = got - t0
                order.append(seq)
    return _result(count, rtts, order)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "echo":
        return echo(int(argv[2]), float(argv[3]) if len(argv) > 3 else 30.0)
    if len(argv) >= 6 and argv[1] == "ping":
        size = int(argv[6]) if len(argv) > 6 else 56
        print(json.dumps(ping(argv[2], int(argv[3]), float(argv[4]), float(argv[5]), size)))
        return 0
    if len(argv) >= 7 and argv[1] == "rtt":
        size = int(argv[7]) if len(argv) > 7 else 64
        print(json.dumps(rtt(argv[2], int(argv[3]), int(argv[4]), float(argv[5]), float(argv[6]), size)))
        return 0
    print(
        "usage: probe.py ping HOST COUNT INTERVAL_S WAIT_S [SIZE] | echo PORT [IDLE_S]"
        " | rtt HOST PORT COUNT INTERVAL_S WAIT_S [SIZE]",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
