"""A minimal TCP source/sink used by the emulation self-check (independent of the traffic engine on purpose:
the self-check must measure the links, not the tool under test).

    python -m mptcpkit.lab.probe sink --bind ADDR --port P --duration S   -> prints one JSON line when done
    python -m mptcpkit.lab.probe source --connect ADDR --port P --duration S [--bind SRC]

The sink prints `{"ready": true}` once listening, then `{"bytes": [...], "interval": 0.1, "mss": N}` with bytes
received in each interval, so the caller can skip slow start and measure the steady state.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time


def sink(bind: str, port: int, duration: float, interval: float) -> dict[str, object]:
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((bind, port))
        listener.listen(1)
        print(json.dumps({"ready": True}), flush=True)
        listener.settimeout(10)
        conn, _ = listener.accept()
    with conn:
        conn.settimeout(duration + 10)
        buf = bytearray(1 << 20)
        counts: list[int] = []
        start = time.monotonic()
        slot_end = start + interval
        current = 0
        while True:
            n = conn.recv_into(buf)
            now = time.monotonic()
            while now >= slot_end:
                counts.append(current)
                current = 0
                slot_end += interval
            if not n:
                break
            current += n
        counts.append(current)
        mss = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    return {"bytes": counts, "interval": interval, "mss": mss}


def source(connect: str, port: int, duration: float, bind: str | None) -> None:
    family = socket.AF_INET6 if ":" in connect else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if bind:
            sock.bind((bind, 0))
        sock.settimeout(10)
        sock.connect((connect, port))
        block = b"\0" * (256 * 1024)
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        while sock.recv(65536):
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mptcpkit.lab.probe", description=__doc__)
    sub = parser.add_subparsers(dest="role", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--duration", type=float, default=2.0)
    s.add_argument("--interval", type=float, default=0.1)
    c = sub.add_parser("source")
    c.add_argument("--connect", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--duration", type=float, default=2.0)
    c.add_argument("--bind")
    args = parser.parse_args(argv)
    try:
        if args.role == "sink":
            print(json.dumps(sink(args.bind, args.port, args.duration, args.interval)), flush=True)
        else:
            source(args.connect, args.port, args.duration, args.bind)
    except OSError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
