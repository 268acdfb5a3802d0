"""Benchmark: is the traffic engine ever the bottleneck? Engine goodput vs iperf3 via mptcpize, same run.

Two namespaces joined by one unshaped veth pair; upload bulk transfers of --duration seconds, receiver-side
goodput. Runs are interleaved (engine sha256, engine verify, engine none, iperf3, then again) so machine noise
hits all alike; the ratio is median(engine) / median(iperf3). Also measures the receiver's in-memory checking
cost per integrity mode (no network), which bounds what the engine can receive on one core.

    sudo .venv/bin/python benchmarks/traffic_engine.py [--reps 5] [--duration 3] [--out FILE]

Writes benchmarks/results/traffic_engine.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mptcpkit.lab.traffic import engine, iperf3, stream
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions

ROOT = Path(__file__).resolve().parent
PY = (sys.executable,)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True)


def setup() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"mkt-tr-bench{tag}-a", f"mkt-tr-bench{tag}-b"
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "link", "add", "mkttrb0", "netns", a, "type", "veth", "peer", "mkttrb1", "netns", b)
    for ns, dev, addr in ((a, "mkttrb0", "10.77.0.1/24"), (b, "mkttrb1", "10.77.0.2/24")):
        sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
        sh("ip", "-n", ns, "link", "set", dev, "up")
    return a, b


def teardown(namespaces: tuple[str, ...]) -> None:
    for ns in namespaces:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], check=False)


def ns_argv(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def run_engine(cli: str, srv: str, duration: float, integrity: str) -> dict[str, Any]:
    sopts = ServerOptions(bind="10.77.0.2", port=0, once=True, timeout=duration + 30)
    server = subprocess.Popen(
        ns_argv(srv, engine.server_argv(sopts, python=PY)), stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = engine.parse_ready(server.stdout.readline())
        copts = ClientOptions(
            connect="10.77.0.2",
            port=port,
            mode="bulk-upload",
            duration=duration,
            integrity=integrity,
            timeout=duration + 30,
        )
        t = time.perf_counter()
        cp = subprocess.run(
            ns_argv(cli, engine.client_argv(copts, python=PY)), capture_output=True, text=True
        )
        wall = time.perf_counter() - t
        res = engine.parse_result(cp.stdout)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    s = res.streams[0] if res.streams else None
    return {
        "ok": res.ok,
        "goodput_bps": res.goodput_bps,
        "bytes": res.bytes_total,
        "wall_s": wall,
        "integrity_ok": s.integrity_ok if s else None,
        "error": res.error.message if res.error else None,
    }


def run_iperf3(cli: str, srv: str, duration: float, port: int) -> dict[str, Any]:
    server = subprocess.Popen(
        ns_argv(srv, iperf3.server_argv("10.77.0.2", port, wrapper="mptcpize")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.4)
        argv = iperf3.client_argv(
            iperf3.Iperf3Client(connect="10.77.0.2", port=port, duration=duration), wrapper="mptcpize"
        )
        cp = subprocess.run(ns_argv(cli, argv), capture_output=True, text=True, timeout=duration + 30)
        res = iperf3.parse(cp.stdout, mode="bulk-upload")
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return {
        "ok": res.ok,
        "goodput_bps": res.goodput_bps,
        "bytes": res.bytes_total,
        "error": res.error.message if res.error else None,
    }


def checking_cost(total: int = 256 << 20) -> dict[str, float]:
    """In-memory receiver cost: GB/s of StreamSink.consume per integrity mode (best of 3)."""
    data = bytes(stream.StreamSource(1, sha256=False).next_chunk())
    out = {}
    for mode in ("sha256", "verify", "none"):
        best = 0.0
        for _ in range(3):
            sink = stream.StreamSink(1, integrity=mode, size=total)
            t = time.perf_counter()
            fed = 0
            while fed < total:
                sink.view[:] = data  # stands in for recv_into (one copy, like the kernel's)
                sink.consume(stream.BUFFER)
                fed += stream.BUFFER
            best = max(best, total / (time.perf_counter() - t) / 1e9)
        out[mode] = round(best, 3)
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "cv": statistics.pstdev(values) / statistics.mean(values) if statistics.mean(values) else 0.0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--modes", default="sha256,verify,none", help="engine integrity modes to measure")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "traffic_engine.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    modes = args.modes.split(",")
    cost = checking_cost()
    print("in-memory receiver checking cost (GB/s, one core):", cost, flush=True)
    a, b = setup()
    raw: dict[str, list[dict[str, Any]]] = {f"engine-{m}": [] for m in modes}
    raw["iperf3-mptcpize"] = []
    try:
        for rep in range(args.reps):
            order = [*[f"engine-{m}" for m in modes], "iperf3-mptcpize"]
            random.Random(rep).shuffle(order)
            for name in order:
                if name == "iperf3-mptcpize":
                    r = run_iperf3(a, b, args.duration, 5300 + rep)
                else:
                    r = run_engine(a, b, args.duration, name.removeprefix("engine-"))
                raw[name].append(r)
                print(
                    f"rep {rep + 1}/{args.reps} {name:16s} {r['goodput_bps'] / 1e9:7.3f} Gbit/s ok={r['ok']}",
                    flush=True,
                )
    finally:
        teardown((a, b))
    stats = {name: summary([r["goodput_bps"] for r in runs]) for name, runs in raw.items()}
    ref = stats["iperf3-mptcpize"]["median"]
    ratios = {
        name: (s["median"] / ref if ref else None) for name, s in stats.items() if name.startswith("engine")
    }
    doc = {
        "benchmark": "traffic_engine",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "reps": args.reps,
        "link": "unshaped veth between two namespaces, MPTCP, 1 subflow, upload",
        "checking_cost_gbytes_per_s": cost,
        "goodput_bps": stats,
        "ratio_vs_iperf3": ratios,
        "raw": raw,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{'engine':18s} {'median Gbit/s':>14s} {'min':>8s} {'max':>8s} {'cv':>6s} {'vs iperf3':>9s}")
    for name, s in stats.items():
        ratio = ratios.get(name)
        print(
            f"{name:18s} {s['median'] / 1e9:14.3f} {s['min'] / 1e9:8.3f} {s['max'] / 1e9:8.3f} {s['cv']:6.2f} "
            f"{'' if ratio is None else f'{ratio:9.2f}'}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
