"""UDP round-trip probe for checking a link: ``echo`` server and ``rtt`` client, stdlib only.

Run inside a namespace as a script (``ip netns exec NS python -I probe.py ...``); the client prints JSON.
Each probe carries its sequence number, so loss and reordering are visible, not only the RTT.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

PROBE = struct.Struct("!Qd")  # sequence, send time (client clock)


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
    received = [r for r in rtts if r is not None]
    reordered = sum(1 for i in range(1, len(order)) if order[i] < order[i - 1])
    return {"sent": count, "received": len(received), "rtt_s": received, "reordered": reordered}


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "echo":
        return echo(int(argv[2]), float(argv[3]) if len(argv) > 3 else 30.0)
    if len(argv) >= 7 and argv[1] == "rtt":
        size = int(argv[7]) if len(argv) > 7 else 64
        print(json.dumps(rtt(argv[2], int(argv[3]), int(argv[4]), float(argv[5]), float(argv[6]), size)))
        return 0
    print(
        "usage: probe.py echo PORT [IDLE_S] | rtt HOST PORT COUNT INTERVAL_S WAIT_S [SIZE]", file=sys.stderr
    )
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
