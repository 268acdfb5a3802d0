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

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.backends import nsutil
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
    """Kill what lives in the benchmark's namespaces and delete them (the lab's own teardown helpers)."""
    nsutil.kill_processes_in(list(namespaces))
    for ns in namespaces:
        nsutil.delete_netns(ns)


def ns_argv(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


def wait_cpu(proc: subprocess.Popen[Any], timeout: float) -> float:
    """Wait for a child and return its user+sys CPU seconds (`ip netns exec` execs, so it is the program)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, _status, ru = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = 0
            return float(ru.ru_utime + ru.ru_stime)
        time.sleep(0.02)
    proc.kill()
    _pid, _status, ru = os.wait4(proc.pid, 0)
    proc.returncode = -9
    return float(ru.ru_utime + ru.ru_stime)


def run_engine(
    cli: str, srv: str, duration: float, integrity: str, size: int | None = None
) -> dict[str, Any]:
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
        client = subprocess.Popen(
            ns_argv(cli, engine.client_argv(copts, python=PY)), stdout=subprocess.PIPE, text=True
        )
        assert client.stdout is not None
        out = client.stdout.read()
        cpu_cli = wait_cpu(client, 30)
        cpu_srv = wait_cpu(server, 30)
        res = engine.parse_result(out)
    finally:
        for p in (server,):
            if p.returncode is None and p.poll() is None:
                p.kill()
                p.wait()
    s = res.streams[0] if res.streams else None
    gb = max(res.bytes_total, 1) / 1e9
    return {
        "ok": res.ok,
        "goodput_bps": res.goodput_bps,
        "bytes": res.bytes_total,
        "integrity_ok": s.integrity_ok if s else None,
        "error": res.error.message if res.error else None,
        "cpu_s_per_gb_sender": cpu_cli / gb,
        "cpu_s_per_gb_receiver": cpu_srv / gb,
        "cpu_s_sender": cpu_cli,
        "cpu_s_receiver": cpu_srv,
    }


def run_iperf3(cli: str, srv: str, duration: float, port: int, size: int | None = None) -> dict[str, Any]:
    server = subprocess.Popen(
        ns_argv(srv, iperf3.server_argv("10.77.0.2", port, wrapper="mptcpize")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.4)
        argv = iperf3.client_argv(
            iperf3.Iperf3Client(
                connect="10.77.0.2", port=port, duration=None if size else duration, bytes=size
            ),
            wrapper="mptcpize",
        )
        client = subprocess.Popen(ns_argv(cli, argv), stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        out = client.stdout.read()
        cpu_cli = wait_cpu(client, duration + 30)
        cpu_srv = wait_cpu(server, 30)
        res = iperf3.parse(out, mode="bulk-upload")
    finally:
        if server.returncode is None and server.poll() is None:
            server.kill()
            server.wait()
    gb = max(res.bytes_total, 1) / 1e9
    return {
        "ok": res.ok,
        "goodput_bps": res.goodput_bps,
        "bytes": res.bytes_total,
        "error": res.error.message if res.error else None,
        "cpu_s_per_gb_sender": cpu_cli / gb,
        "cpu_s_per_gb_receiver": cpu_srv / gb,
        "cpu_s_sender": cpu_cli,
        "cpu_s_receiver": cpu_srv,
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


def measure(a: str, b: str, args: argparse.Namespace, cc: str) -> dict[str, Any]:
    """One interleaved series in namespaces a (client) and b (server) with congestion control `cc`."""
    if cc != "default":
        for ns in (a, b):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")
    used = subprocess.run(
        ["ip", "netns", "exec", a, "sysctl", "-n", "net.ipv4.tcp_congestion_control"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    modes = args.modes.split(",")
    # fixed per-process cost (interpreter start, handshake): a 1-byte transfer; subtracted for CPU per GB
    base = {
        "engine": [run_engine(a, b, 1.0, "none", size=1) for _ in range(3)],
        "iperf3": [run_iperf3(a, b, 1.0, 5290 + i, size=1) for i in range(3)],
    }
    baseline = {
        k: {side: min(float(r[f"cpu_s_{side}"]) for r in v) for side in ("sender", "receiver")}
        for k, v in base.items()
    }
    raw: dict[str, list[dict[str, Any]]] = {f"engine-{m}": [] for m in modes}
    raw["iperf3-mptcpize"] = []
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
                f"[{used}] rep {rep + 1}/{args.reps} {name:16s} {r['goodput_bps'] / 1e9:7.3f} Gbit/s",
                flush=True,
            )
    stats = {name: summary([r["goodput_bps"] for r in runs]) for name, runs in raw.items()}

    def marginal(name: str, r: dict[str, Any], side: str) -> float:
        fixed = float(baseline["iperf3" if name.startswith("iperf3") else "engine"][side])
        return max(0.0, float(r[f"cpu_s_{side}"]) - fixed) / max(float(r["bytes"]) / 1e9, 1e-9)

    cpu = {
        name: {
            side: statistics.median(marginal(name, r, side) for r in runs) for side in ("sender", "receiver")
        }
        for name, runs in raw.items()
    }
    ref = stats["iperf3-mptcpize"]["median"]
    ratios = {
        name: (s["median"] / ref if ref else None) for name, s in stats.items() if name.startswith("engine")
    }
    head = f"{'engine [' + used + ']':18s} {'median Gbit/s':>13s} {'min':>7s} {'max':>7s} {'cv':>5s} {'ratio':>6s}"
    print(head + " CPU s/GB sender/receiver")
    for name, st in stats.items():
        ratio = ratios.get(name)
        line = f"{name:18s} {st['median'] / 1e9:13.3f} {st['min'] / 1e9:7.3f} {st['max'] / 1e9:7.3f} {st['cv']:5.2f}"
        line += f" {'' if ratio is None else f'{ratio:6.2f}':>6s}"
        line += f" {cpu[name]['sender']:.3f}/{cpu[name]['receiver']:.3f}"
        print(line, flush=True)
    return {
        "congestion_control": used,
        "goodput_bps": stats,
        "ratio_vs_iperf3": ratios,
        "cpu_seconds_per_gb_median": cpu,
        "cpu_fixed_seconds_per_process": baseline,
        "raw": raw,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--modes", default="sha256,verify,none", help="engine integrity modes to measure")
    ap.add_argument(
        "--cc", default="default,cubic", help="congestion controls to run with (default = system's)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "traffic_engine.json")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    cost = checking_cost()
    print("in-memory receiver checking cost (GB/s, one core):", cost, flush=True)
    a, b = setup()
    try:
        series = [measure(a, b, args, cc) for cc in args.cc.split(",")]
    finally:
        teardown((a, b))
    doc = {
        "benchmark": "traffic_engine",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "duration_s": args.duration,
        "reps": args.reps,
        "link": "unshaped veth between two namespaces, MPTCP, 1 subflow, upload",
        "checking_cost_gbytes_per_s": cost,
        "series": series,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        sys.exit(main())
