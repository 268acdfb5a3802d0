"""The lab's one link probe, stdlib only: round-trip time, loss and reordering, and link rate.

The self-check, the emulation testbed and the benchmarks all measure links with it; it is independent of
the traffic engine on purpose (the self-check must measure the links, not the tool under test). It runs on
a lab host as ``python -m mptcpkit.lab.probe ...`` or as a plain script (``python -I probe.py ...``);
every command prints JSON lines.

- ``ping DST``: ICMP echo, the accurate RTT probe. The far kernel answers in softirq and the reply is
  timestamped by the local kernel (SO_TIMESTAMPNS), so no process wake-up on a busy machine inflates it.
  Each probe carries its sequence number, so loss and reordering are seen, not only the RTT.
- ``echo`` / ``rtt DST``: the same over UDP, through user processes at both ends.
- ``sink`` / ``source DST``: link rate. The source sends paced UDP at a rate above the link's (GSO bursts,
  so a Python sender keeps up at Gbit/s); the bottleneck queue fills at once and stays full, so what
  arrives is exactly the link rate, whatever the delay, loss or queue: nothing like TCP's slow start
  or loss recovery can mask it. The sink counts wire bytes (Ethernet + IP + UDP + payload per datagram)
  in a window that starts ``--warmup`` after the first arrival.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import struct
import sys
import time

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
ICMP_HDR = struct.Struct("!BBHHH")  # type, code, checksum, id, sequence
UDP_PROBE = struct.Struct("!Qd")  # sequence, send time (client clock)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@qq")
SOL_UDP, UDP_SEGMENT, UDP_GRO, SO_RCVBUFFORCE = 17, 103, 104, 33
ETH_HEADER, UDP_HEADER = 14, 8
MAX_GSO_SEGMENTS = 44  # a UDP GSO send is at most 64 KiB
RATE_BIN_S = 0.1


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


def _big_receive_buffer(sock: socket.socket, size: int = 32 << 20) -> None:
    """Beyond the rmem_max sysctl where allowed (root): replies wait while the probe is descheduled."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _result(count: int, rtts: list[float | None], order: list[int]) -> dict[str, object]:
    received = [r for r in rtts if r is not None]
    reordered = sum(1 for i in range(1, len(order)) if order[i] < order[i - 1])
    return {"sent": count, "received": len(received), "rtt_s": received, "reordered": reordered}


def _raise_priority() -> None:
    """SCHED_RR 1 for the probe's short life, else nice -10, where allowed (root): on a busy machine a
    starved probe would measure its own scheduling, not the link. (The emulator runs SCHED_RR too.)"""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)


def ping(
    host: str, count: int, interval_s: float, wait_s: float, size: int = 56, bind: str | None = None
) -> dict[str, object]:
    """ICMP echo (IPv4, raw socket: needs root) with kernel receive timestamps."""
    _raise_priority()  # the send time is taken just before sendto(): no preemption in between
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _big_receive_buffer(sock)  # a descheduled probe must not lose replies to a full socket buffer
    if bind:
        sock.bind((bind, 0))
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
    sock.close()
    return _result(count, rtts, order)


def echo(port: int, idle_timeout_s: float) -> None:
    """Send every datagram back to its sender; return after ``idle_timeout_s`` without traffic."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        print(json.dumps({"ready": True}), flush=True)
        while select.select([sock], [], [], idle_timeout_s)[0]:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data, peer)


def rtt(host: str, port: int, count: int, interval_s: float, wait_s: float, size: int) -> dict[str, object]:
    """UDP echo probes every ``interval_s``; replies are collected until ``wait_s`` after the last one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _big_receive_buffer(sock)
    sock.connect((host, port))
    pad = b"\0" * max(0, size - UDP_PROBE.size)
    rtts: list[float | None] = [None] * count
    order: list[int] = []
    sent = 0
    start = time.monotonic()
    end = None
    while True:
        now = time.monotonic()
        if sent < count and now >= start + sent * interval_s:
            sock.send(UDP_PROBE.pack(sent, now) + pad)
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
            seq, t0 = UDP_PROBE.unpack_from(data)
            if seq < count and rtts[seq] is None:
                rtts[seq] = got - t0
                order.append(seq)
    sock.close()
    return _result(count, rtts, order)


def _ip_header(address: str) -> int:
    return 40 if ":" in address else 20


def source(
    connect: str,
    port: int,
    rate_bps: float,
    duration: float,
    size: int,
    burst: int,
    bind: str | None,
    prefill: int = 0,
) -> dict[str, object]:
    """Send ``size``-byte datagrams at ``rate_bps`` (wire bytes) for ``duration`` s, ``burst`` per send.

    ``prefill`` datagrams go out at once first, to fill the bottleneck queue: a full queue keeps the link
    busy while this process is descheduled. Bursts go out as one UDP GSO send where the kernel has
    UDP_SEGMENT; a late wake-up is caught up at once, so the average rate holds on a busy machine.
    """
    _raise_priority()
    family = socket.AF_INET6 if ":" in connect else socket.AF_INET
    wire = size + UDP_HEADER + _ip_header(connect) + ETH_HEADER
    burst = max(1, min(burst, MAX_GSO_SEGMENTS))
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        if bind:
            sock.bind((bind, 0))
        sock.connect((connect, port))
        gso = burst > 1
        if gso:
            try:
                sock.setsockopt(SOL_UDP, UDP_SEGMENT, size)
            except OSError:
                gso = False
        block = b"\0" * (size * burst if gso else size)
        period = burst * wire * 8 / rate_bps
        start = time.monotonic()
        end = start + duration
        sent = errors = 0
        late = 0.0
        next_at = start - prefill / burst * period  # the prefill is a backlog sent at once
        while True:
            now = time.monotonic()
            if now >= end:
                break
            if now < next_at:
                time.sleep(next_at - now)
                continue
            if now - next_at > late and sent > prefill:
                late = now - next_at
            try:
                if gso:
                    sock.send(block)
                else:
                    for _ in range(burst):
                        sock.send(block)
                sent += burst
            except OSError:  # ENOBUFS and the like: the local queue is full, as a router's would be
                errors += 1
            next_at += period
    return {"sent": sent, "send_errors": errors, "gso": gso, "wire_bytes": wire, "max_late_s": late}


def sink(bind: str, port: int, window: float, warmup: float, timeout: float) -> dict[str, object]:
    """Count wire bytes arriving in [first + warmup, first + warmup + window); report the rate.

    Arrival times are the kernel's receive timestamps, so a late wake-up of this process does not move
    datagrams across the window's edges.
    """
    _raise_priority()
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    header = UDP_HEADER + _ip_header(bind) + ETH_HEADER
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        _big_receive_buffer(sock)
        with contextlib.suppress(OSError):
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)  # whole GSO frames: one receive per 64 KiB
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.bind((bind, port))
        print(json.dumps({"ready": True}), flush=True)
        buf = bytearray(1 << 16)
        first: float | None = None
        start = stop = 0.0
        datagrams = wire_bytes = 0
        bins: list[int] = []
        deadline = time.time() + timeout
        while True:
            now = time.time()  # the kernel stamps with the real-time clock
            limit = deadline if first is None else stop + 0.05
            if now >= limit or not select.select([sock], [], [], limit - now)[0]:
                if first is None:
                    return {"error": f"nothing arrived within {timeout:g} s"}
                break
            n, ancdata, _flags, _addr = sock.recvmsg_into([buf], 256)
            now = kernel_time(ancdata) or time.time()
            if first is None:
                first = now
                start, stop = now + warmup, now + warmup + window
            if not start <= now < stop:
                continue
            segment = n
            for level, kind, data in ancdata:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = struct.unpack("@i", data[:4])[0] or n
            count = -(-n // segment) if n else 1
            datagrams += count
            wire_bytes += n + count * header
            slot = int((now - start) / RATE_BIN_S)
            while len(bins) <= slot:
                bins.append(0)
            bins[slot] += n + count * header
    return {
        "rate_bps": 8 * wire_bytes / window,
        "datagrams": datagrams,
        "wire_bytes": wire_bytes,
        "window_s": window,
        "bin_s": RATE_BIN_S,
        "bins_bps": [8 * b / RATE_BIN_S for b in bins[: round(window / RATE_BIN_S)]],
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mptcpkit.lab.probe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ping", help="ICMP echo with kernel timestamps")
    p.add_argument("host")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for replies after the last")
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--bind")
    e = sub.add_parser("echo", help="UDP echo server")
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--idle", type=float, default=30.0)
    r = sub.add_parser("rtt", help="UDP echo client")
    r.add_argument("host")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--count", type=int, default=20)
    r.add_argument("--interval", type=float, default=0.05)
    r.add_argument("--wait", type=float, default=1.0)
    r.add_argument("--size", type=int, default=64)
    s = sub.add_parser("sink", help="rate probe receiver")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--window", type=float, default=1.0)
    s.add_argument("--warmup", type=float, default=0.2)
    s.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the first datagram")
    c = sub.add_parser("source", help="paced UDP rate probe sender")
    c.add_argument("host")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--rate", type=float, required=True, help="wire bit/s to send")
    c.add_argument("--duration", type=float, default=1.5)
    c.add_argument("--size", type=int, default=1472, help="UDP payload bytes (MTU - 28 fills a frame)")
    c.add_argument("--burst", type=int, default=MAX_GSO_SEGMENTS, help="datagrams per send")
    c.add_argument("--prefill", type=int, default=0, help="datagrams sent at once first (the queue's size)")
    c.add_argument("--bind")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ping":
            out = ping(args.host, args.count, args.interval, args.wait, args.size, args.bind)
        elif args.command == "echo":
            echo(args.port, args.idle)
            return 0
        elif args.command == "rtt":
            out = rtt(args.host, args.port, args.count, args.interval, args.wait, args.size)
        elif args.command == "sink":
            out = sink(args.bind, args.port, args.window, args.warmup, args.timeout)
        else:
            out = source(
                args.host, args.port, args.rate, args.duration, args.size, args.burst, args.bind, args.prefill
            )
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
