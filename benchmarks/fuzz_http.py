"""Hostile HTTP against `mptcpkit check serve` (issues 14 and 15): >= 1,000 hypothesis cases, slow clients,
huge heads, 1,000 connections held open, pipelined bursts ending with `Connection: close`.

    .venv/bin/python benchmarks/fuzz_http.py [--cases 1000] [--held 1000] [--slow 200] [--bursts 200]

Everything runs against the real server process. Pass criteria: 0 tracebacks or asyncio "Exception in
callback" lines in its stderr, the process alive, and a normal client answered (its latency is measured while
the crowd is held open). Writes benchmarks/results/fuzz_http.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fuzz_targets_tools import (  # noqa: E402
    LOGGED_PROBLEM,
    hostile_streams,
    normal_answer,
    play,
    start_server,
    stop_server,
)

RESULTS = HERE / "results"
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def timed_normal(port: int, n: int = 20) -> dict[str, float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert normal_answer(port).endswith(b"MPTCP.\n")
        samples.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": round(statistics.median(samples), 3), "max_ms": round(max(samples), 3)}


def fuzz_cases(port: int, cases: int, seed: int | None) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as fixed_seed

    counts = {"cases": 0, "accepted": 0, "refused": 0}
    started = time.perf_counter()

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(hostile_streams())
    def one(case: Any) -> None:
        answer = play(port, case, read_for=0.1)
        counts["cases"] += 1
        counts["accepted" if answer.startswith(b"HTTP/1.1 2") else "refused"] += 1

    if seed is not None:
        one = fixed_seed(seed)(one)
    one()
    return counts | {"seconds": round(time.perf_counter() - started, 2)}


def held_crowd(port: int, held: int) -> tuple[list[socket.socket], dict[str, int]]:
    """Idle clients, clients stuck in a huge unfinished head, and 1000M downloads nobody reads."""
    socks, kinds = [], {"idle": 0, "half-head": 0, "unread-download": 0}
    for i in range(held):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 3 == 1:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"h" * 12000)
            kinds["half-head"] += 1
        elif i % 3 == 2:
            s.sendall(b"GET /files/1000M HTTP/1.1\r\nHost: x\r\n\r\n")
            kinds["unread-download"] += 1
        else:
            kinds["idle"] += 1
        socks.append(s)
    return socks, kinds


def slowloris(port: int, count: int, stop: threading.Event) -> int:
    """`count` clients trickling one header byte every 0.2 s until stopped; returns how many got cut."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for s in socks:
        s.setblocking(False)
    cut = 0
    while not stop.is_set():
        for s in list(socks):
            try:
                s.send(b"X")
            except (BlockingIOError, ConnectionError, OSError):
                socks.remove(s)
                s.close()
                cut += 1
        time.sleep(0.2)
    for s in socks:
        s.close()
    return cut


def bursts(port: int, count: int) -> int:
    """Pipelined bursts ending with `Connection: close` (issue 15's traceback); returns answers received."""
    total = 0
    for i in range(count):
        n = 50 + (i * 37) % 3000
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096 if i % 2 else 1 << 20)
        s.connect(("127.0.0.1", port))
        sender = threading.Thread(target=s.sendall, args=(GET * n + CLOSE,))
        sender.start()
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := s.recv(1 << 20):
                data += chunk
        sender.join()
        s.close()
        total += data.count(b"HTTP/1.1 200 OK")
    return total


def huge_heads(port: int) -> dict[str, str]:
    out = {}
    for name, payload in {
        "70k header": b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"A" * 70000 + b"\r\n\r\n",
        "200 fields": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n",
        "1 MB of garbage": b"\xff" * (1 << 20),
    }.items():
        answer = play(port, ([payload], []), read_for=2)
        out[name] = answer.split(b"\r\n", 1)[0].decode(errors="replace") or "closed"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_http.json")
    args = parser.parse_args()

    proc, port = start_server("--head-timeout", "5", "--idle-timeout", "5")
    result: dict[str, Any] = {"machine": platform.node(), "python": platform.python_version()}
    try:
        result["baseline_latency"] = timed_normal(port)
        result["hypothesis"] = fuzz_cases(port, args.cases, args.seed)
        print("hypothesis:", result["hypothesis"], flush=True)
        result["huge_heads"] = huge_heads(port)
        stop = threading.Event()
        cut: list[int] = []
        loris = threading.Thread(target=lambda: cut.append(slowloris(port, args.slow, stop)))
        loris.start()
        socks, kinds = held_crowd(port, args.held)
        time.sleep(1.0)
        result["held_open"] = kinds | {"latency_while_held": timed_normal(port)}
        for s in socks:
            s.close()
        time.sleep(6)  # past --head-timeout: the slowloris clients are cut
        stop.set()
        loris.join()
        result["slowloris"] = {"clients": args.slow, "cut_by_head_timeout": cut[0] if cut else 0}
        t0 = time.perf_counter()
        answers = bursts(port, args.bursts)
        result["pipelined_bursts"] = {
            "bursts": args.bursts,
            "answers": answers,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        result["final_latency"] = timed_normal(port)
        result["server_alive"] = proc.poll() is None
    finally:
        log = stop_server(proc)
    problems = LOGGED_PROBLEM.findall(log)
    result["logged_problems"] = len(problems)
    result["log_excerpt"] = log[:2000]
    result["pass"] = result.get("server_alive", False) and not problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "log_excerpt"}, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
