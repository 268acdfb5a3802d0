"""Benchmark of `mptcpkit check serve`: requests/s measured with wrk on loopback.

Runs the server as a subprocess, then wrk with keep-alive connections, once as plain TCP clients and once
under `mptcpkit run` (MPTCP clients), for each connection count. Writes JSON into benchmarks/results/.

    .venv/bin/python benchmarks/check_serve.py [--duration 5] [--connections 50,200] [--threads 2]
        [--baseline-src DIR]

--baseline-src DIR runs a second server from another source tree (e.g. `git archive main src | tar -x -C
/tmp/base`) side by side, alternating runs with the current one, and reports the ratio current / baseline per
cell. `--micro` measures instead the CPU time of one request through the Python path (parse, ask the socket,
answer, serialize) with process_time, best of 5, which a loaded machine disturbs far less than wrk.

The machine is shared (2 cores: wrk and the server compete for them), so numbers are indicative; each cell
is the median of --repeat runs, with min and max kept.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mptcpkit.interrupts import sigterm_as_interrupt

ROOT = Path(__file__).resolve().parent
MPTCPKIT = str(Path(sys.executable).with_name("mptcpkit"))


def start_server(src: Path | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """`mptcpkit check serve` of this installation, or of the source tree `src` (its src/ first on the path)."""
    args = ["check", "serve", "--host", "127.0.0.1", "--port", "0"]
    argv, env = [MPTCPKIT, *args], None
    if src is not None:
        argv = [sys.executable, "-m", "mptcpkit", *args]
        env = {**__import__("os").environ, "PYTHONPATH": str(src / "src")}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.search(r":(\d+)$", line.strip())
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, int(m.group(1))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _seconds(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def run_wrk(port: int, connections: int, threads: int, duration: float, mptcp: bool) -> dict[str, float]:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{int(duration)}s",
        "--latency",
        f"http://127.0.0.1:{port}/",
    ]
    if mptcp:
        argv = [MPTCPKIT, "run", "--", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, flags=re.M)
        if m:
            lat[f"p{pct}_latency_ms"] = _seconds(m.group(1), m.group(2)) * 1000
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rps,
        **lat,
        "socket_errors": errors.group(1) if errors else "none",  # type: ignore[dict-item]
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


MICRO = """
import socket, sys, time
from mptcpkit.tools.checkpage import render, respond
from mptcpkit.tools.checkserve import conn_info
from mptcpkit.tools.httpparse import RequestParser
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
lst.bind(("127.0.0.1", 0)); lst.listen()
cli = socket.create_connection(lst.getsockname()); conn, _ = lst.accept()
req = b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\nUser-Agent: wrk\\r\\n\\r\\n"
n, best = 100000, 1e9
for _ in range(5):
    t0 = time.process_time()
    for _ in range(n):
        parser = RequestParser(); parser.feed(req); r = parser.next_event()
        render(respond(r, conn_info(conn)), head_only=False, keep_alive=True)
    best = min(best, time.process_time() - t0)
print(best / n * 1e6)
"""


def micro(src: Path | None) -> float:
    """CPU microseconds per request through the Python path, of this installation or of source tree `src`."""
    env = {**__import__("os").environ}
    if src is not None:
        env["PYTHONPATH"] = str(src / "src")
    out = subprocess.run([sys.executable, "-c", MICRO], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout)


def main_micro(args: argparse.Namespace) -> None:
    rows = []
    for _ in range(args.repeat):  # alternate current and baseline
        row = {"current_us": round(micro(None), 3)}
        if args.baseline_src:
            row["baseline_us"] = round(micro(args.baseline_src), 3)
        rows.append(row)
        print(row, flush=True)
    cur = statistics.median(r["current_us"] for r in rows)
    result: dict[str, object] = {
        "benchmark": "check_serve_micro",
        "current_us_per_request": cur,
        "runs": rows,
    }
    if args.baseline_src:
        base = statistics.median(r["baseline_us"] for r in rows)
        result |= {"baseline_us_per_request": base, "ratio_to_baseline": round(cur / base, 3)}
    result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"check_serve_micro-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}), f"\nwrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", default="50,200")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument(
        "--baseline-src", type=Path, default=None, help="source tree of the server to compare with"
    )
    ap.add_argument("--micro", action="store_true", help="CPU time per request of the Python path only")
    args = ap.parse_args()
    if args.micro:
        main_micro(args)
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt install wrk)")
    proc, port = start_server()
    base, base_port = start_server(args.baseline_src) if args.baseline_src else (None, 0)
    cells = []
    try:
        rss_start = rss_kib(proc.pid)
        for conns in [int(c) for c in args.connections.split(",")]:
            for mptcp in (False, True):
                runs, base_runs = [], []
                for _ in range(args.repeat):  # alternate: load changes hit both servers alike
                    if base is not None:
                        base_runs.append(run_wrk(base_port, conns, args.threads, args.duration, mptcp))
                    runs.append(run_wrk(port, conns, args.threads, args.duration, mptcp))
                rps = [r["requests_per_s"] for r in runs]
                cell = {
                    "clients": "mptcp" if mptcp else "tcp",
                    "connections": conns,
                    "requests_per_s_median": statistics.median(rps),
                    "requests_per_s_min": min(rps),
                    "requests_per_s_max": max(rps),
                    "runs": runs,
                }
                if base_runs:
                    base_median = statistics.median(r["requests_per_s"] for r in base_runs)
                    cell["baseline_requests_per_s_median"] = base_median
                    cell["ratio_to_baseline"] = round(cell["requests_per_s_median"] / base_median, 3)
                    cell["baseline_runs"] = base_runs
                cells.append(cell)
                print(
                    f"{cell['clients']:5} c={conns:4}: {cell['requests_per_s_median']:10.0f} req/s "
                    f"(min {min(rps):.0f}, max {max(rps):.0f})"
                    + (
                        f"  baseline {cell['baseline_requests_per_s_median']:.0f}, ratio {cell['ratio_to_baseline']}"
                        if base_runs
                        else ""
                    ),
                    flush=True,
                )
        rss_end = rss_kib(proc.pid)
    finally:
        for p in (proc, base):
            if p is not None:
                p.terminate()
                p.wait(timeout=10)
    result = {
        "benchmark": "check_serve",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": __import__("os").cpu_count(),
        },
        "settings": {
            "duration_s": args.duration,
            "threads": args.threads,
            "repeat": args.repeat,
            "loopback": True,
            "keep_alive": True,
            "baseline_src": str(args.baseline_src) if args.baseline_src else None,
        },
        "server_rss_kib": {"start": rss_start, "end": rss_end},
        "results": cells,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"check_serve-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
