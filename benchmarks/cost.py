"""Benchmark: what MPTCP costs against TCP when the CPU is the limit, and whether the cost metrics catch changes.

Two namespaces joined by one unshaped veth pair (no emulation in the data path); the client has 8 addresses, so
MPTCP can open 1, 2, 4 or 8 subflows over the same link (`subflow` endpoints). The client namespace is pinned to
the first CPU and the server namespace to the last (lab/cpu_cost.py: sender and receiver apart). Per
configuration, interleaved in random order every repetition: our engine (integrity none) and iperf3 (TCP plain,
MPTCP through mptcpize), upload and download. Per run: goodput, the engine/iperf3 ratio, the MPTCP/TCP ratio and
CPU seconds per GB moved:

- `busy`: user+system+softirq+irq of the two pinned CPUs over the transfer (/proc/stat), i.e. everything the
  transfer caused, plus whatever else ran on those CPUs (this machine is shared: other load adds to it);
- `process`: user+system of both engine processes (rusage; iperf3: its cpu_utilization_percent), which under
  tick accounting also holds the softirq work done in their context (veth delivers in the sender's context);
- `softirq`: softirq+irq of the pinned CPUs.

`--sensitivity` then shows the CPU metrics catching a change at 5 repetitions with the comparison
`lab compare` uses (analysis.compare): process CPU/GB with net.mptcp.checksum_enabled=1, and busy CPU/GB of the
pinned CPUs with a CPU hog in the client namespace (a hog adds no CPU time to the engine processes themselves).
rr latency with +1 ms and the best-path score with more loss need emulated links: they are shown with the
scenario files and `lab compare` (docs/benchmarks.md).

    sudo .venv/bin/python benchmarks/cost.py [--reps 3] [--duration 2] [--subflows 1,2,4,8] [--sensitivity]

Writes benchmarks/results/cost.json and prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab import cpu_cost
from mptcpkit.lab.analysis.compare import compare
from mptcpkit.lab.backends import nsutil
from mptcpkit.lab.traffic import engine, iperf3
from mptcpkit.lab.traffic.model import TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions

ROOT = Path(__file__).resolve().parent
PY = (sys.executable,)
SERVER = "10.78.0.100"
CLIENT_ADDRS = [f"10.78.0.{i}" for i in range(1, 9)]
CONGESTION = "cubic"  # as the lab topologies (lab/model.py DEFAULT_SYSCTLS)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def setup() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:6]
    a, b = f"mkt-cost{tag}-a", f"mkt-cost{tag}-b"
    for ns in (a, b):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", ns, "mptcp", "limits", "set", "subflows", "8", "add_addr_accepted", "8")
        # A new namespace inherits the host's congestion control (BBR here). BBR without an fq qdisc paces
        # inside TCP, and MPTCP then stalls (0.2 Gbit/s, docs/benchmarks.md): use the lab's default, cubic.
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv4.tcp_congestion_control={CONGESTION}")
    dev_a, dev_b = f"mkc{tag}a", f"mkc{tag}b"
    sh("ip", "link", "add", dev_a, "netns", a, "type", "veth", "peer", dev_b, "netns", b)
    for addr in CLIENT_ADDRS:
        sh("ip", "-n", a, "addr", "add", f"{addr}/24", "dev", dev_a)
    sh("ip", "-n", b, "addr", "add", f"{SERVER}/24", "dev", dev_b)
    sh("ip", "-n", a, "link", "set", dev_a, "up")
    sh("ip", "-n", b, "link", "set", dev_b, "up")
    return a, b


def teardown(namespaces: tuple[str, ...]) -> None:
    """Kill what lives in the benchmark's namespaces and delete them (the lab's own teardown helpers)."""
    nsutil.kill_processes_in(list(namespaces))
    for ns in namespaces:
        nsutil.delete_netns(ns)


def set_subflows(ns: str, subflows: int) -> None:
    """MPTCP opens the initial subflow plus one per `subflow` endpoint: subflows-1 endpoints."""
    sh("ip", "-n", ns, "mptcp", "endpoint", "flush")
    for addr in CLIENT_ADDRS[1:subflows]:
        sh("ip", "-n", ns, "mptcp", "endpoint", "add", addr, "subflow")


def ns_argv(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


@contextlib.contextmanager
def pinned(a: str, b: str) -> Iterator[cpu_cost.Pinner]:
    cpus = sorted(os.sched_getaffinity(0))
    pinner = cpu_cost.Pinner({"client": (a, cpus[0]), "server": (b, cpus[-1])}, perf=False)
    pinner.start()
    try:
        yield pinner
    finally:
        pinner.stop()


def busy_between(series: list[tuple[float, dict[int, cpu_cost.CpuTimes]]], start: float, end: float) -> float:
    """Busy seconds of the sampled CPUs between two instants (nearest samples inside the window)."""
    inside = [(t, s) for t, s in series if start - 0.06 <= t <= end + 0.06]
    if len(inside) < 2:
        return float("nan")
    (_, first), (_, last) = inside[0], inside[-1]
    return sum(last[c].busy - first[c].busy for c in first if c in last)


class Sampler:
    """Full /proc/stat samples of the pinned CPUs (the Pinner keeps softirq only)."""

    def __init__(self, cpus: set[int]) -> None:
        self.cpus = cpus
        self.series: list[tuple[float, dict[int, cpu_cost.CpuTimes]]] = []

    def take(self) -> None:
        stat = cpu_cost.read_proc_stat()
        self.series.append((time.time(), {c: stat[c] for c in self.cpus}))


def run_pair(
    a: str, b: str, kind: str, proto: str, mode: str, duration: float, port: int, pinner: cpu_cost.Pinner
) -> dict[str, Any]:
    """One transfer with our engine or iperf3; goodput and CPU seconds."""
    cpus = set(pinner.series.cpus)
    sampler = Sampler(cpus)
    if kind == "engine":
        srv: subprocess.Popen[Any] = subprocess.Popen(
            ns_argv(
                b, engine.server_argv(ServerOptions(SERVER, port, proto=proto, once=True, timeout=60), PY)
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert srv.stdout is not None
        engine.parse_ready(srv.stdout.readline())
        opts = ClientOptions(SERVER, port, mode, proto=proto, duration=duration, integrity="none", timeout=60)
        argv = ns_argv(a, engine.client_argv(opts, PY))
    else:
        wrapper = iperf3.detect_wrapper()
        srv = subprocess.Popen(
            ns_argv(b, iperf3.server_argv(SERVER, port, proto=proto, wrapper=wrapper)),
            stdout=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        c = iperf3.Iperf3Client(connect=SERVER, port=port, mode=mode, proto=proto, duration=duration)
        argv = ns_argv(a, iperf3.client_argv(c, wrapper=wrapper))
    sampler.take()
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while client.poll() is None:
        time.sleep(0.05)
        sampler.take()
    sampler.take()
    out, err = client.communicate()
    if kind == "engine":
        res = engine.parse_result(out)
        server_out, _ = srv.communicate(timeout=30)
        server_res: TrafficResult | None = engine.parse_result(server_out)
    else:
        srv.kill()
        srv.wait()
        res = iperf3.parse(out, mode=mode, proto=proto)
        server_res = None
    if not res.ok or not res.streams:
        raise RuntimeError(f"{kind} {proto} {mode}: {res.error} {err[-300:]}")
    stream = res.streams[0]
    start, end = stream.start, stream.end
    gb = res.bytes_total / 1e9
    process = 0.0
    if res.cpu is not None:
        process += res.cpu.user_s + res.cpu.sys_s + (res.cpu.peer_user_s or 0) + (res.cpu.peer_sys_s or 0)
    if server_res is not None and server_res.cpu is not None:
        process += server_res.cpu.user_s + server_res.cpu.sys_s
    busy = busy_between(sampler.series, start, end)
    softirq = sum(pinner.series.between(start, end).values())
    subflows = max((len(c.subflows) for c in res.connections), default=0)
    return {
        "goodput_mbps": res.goodput_bps / 1e6,
        "bytes": res.bytes_total,
        "busy_s_per_gb": busy / gb if gb else None,
        "process_s_per_gb": process / gb if gb else None,
        "softirq_s_per_gb": softirq / gb if gb else None,
        "subflows_seen": subflows,
    }


def summary(values: list[float]) -> dict[str, float]:
    vals = [v for v in values if v is not None and v == v]
    if not vals:
        return {}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def measure(a: str, b: str, args: argparse.Namespace) -> dict[str, Any]:
    configs = [("tcp", 1)] + [("mptcp", n) for n in args.subflows]
    runs: dict[str, list[dict[str, Any]]] = {}
    failures: list[str] = []  # kept in the JSON: a failed transfer is reported, not dropped silently
    port = 46000
    with pinned(a, b) as pinner:
        for rep in range(args.reps):
            order = [
                (proto, n, kind, mode)
                for proto, n in configs
                for kind in ("engine", "iperf3")
                for mode in args.modes
            ]
            random.Random(rep).shuffle(order)
            for proto, n, kind, mode in order:
                set_subflows(a, n if proto == "mptcp" else 1)
                port += 1
                key = f"{proto}{n if proto == 'mptcp' else ''}/{kind}/{mode}"
                try:
                    r = run_pair(a, b, kind, proto, mode, args.duration, port, pinner)
                except RuntimeError as exc:  # e.g. iperf3's "control socket has closed unexpectedly"
                    failures.append(f"rep {rep} {key}: {exc}")
                    print(f"rep {rep} {key:28s} FAILED {exc}", flush=True)
                    continue
                runs.setdefault(key, []).append(r)
                print(
                    f"rep {rep} {key:28s} {r['goodput_mbps']:9.0f} Mbit/s "
                    f"busy {r['busy_s_per_gb']:.3f} s/GB process {r['process_s_per_gb']:.3f} s/GB "
                    f"subflows {r['subflows_seen']}",
                    flush=True,
                )
    table: dict[str, Any] = {}
    for key, rs in runs.items():
        table[key] = {
            field: summary([r[field] for r in rs])
            for field in ("goodput_mbps", "busy_s_per_gb", "process_s_per_gb", "softirq_s_per_gb")
        }
    for key in list(table):
        proto_n, kind, mode = key.split("/")
        tcp = table.get(f"tcp/{kind}/{mode}", {}).get("goodput_mbps", {}).get("median")
        iperf = table.get(f"{proto_n}/iperf3/{mode}", {}).get("goodput_mbps", {}).get("median")
        mine = table[key]["goodput_mbps"].get("median")
        if tcp and mine:
            table[key]["ratio_vs_tcp"] = mine / tcp
        if kind == "engine" and iperf and mine:
            table[key]["engine_vs_iperf3"] = mine / iperf
            # the test `lab compare` uses, iperf3 as the base: is the engine significantly below iperf3?
            c = compare(
                [r["goodput_mbps"] for r in runs[f"{proto_n}/iperf3/{mode}"]],
                [r["goodput_mbps"] for r in runs[key]],
                "higher",
                0.05,
            )
            table[key]["engine_vs_iperf3_test"] = {
                "verdict": c.verdict,
                "change_pct": c.change_pct,
                "ci_pct": [c.ci_low, c.ci_high],
                "p_value": c.p_value,
            }
    return {"runs": runs, "table": table, "failures": failures}


def sensitivity(a: str, b: str, args: argparse.Namespace) -> dict[str, Any]:
    """5 reps base vs 5 reps changed, interleaved; the verdict of the comparison `lab compare` uses."""
    out: dict[str, Any] = {}
    set_subflows(a, 2)
    port = 47000

    fields = ("process_s_per_gb", "busy_s_per_gb", "softirq_s_per_gb", "goodput_mbps")

    def cpu_reps(change: str) -> dict[str, dict[str, list[float]]]:
        nonlocal port
        samples: dict[str, dict[str, list[float]]] = {f: {"base": [], "new": []} for f in fields}
        with pinned(a, b) as pinner:
            for _rep in range(5):
                for changed in random.sample([False, True], 2):
                    port += 1
                    with applied(change, changed, a, b):
                        r = run_pair(a, b, "engine", "mptcp", "bulk-upload", args.duration, port, pinner)
                    for f in fields:
                        samples[f]["new" if changed else "base"].append(r[f])
        return samples

    for change in ("checksum", "cpu-hog"):
        load = [round(v, 2) for v in os.getloadavg()]
        per_metric: dict[str, Any] = {}
        for f, samples in cpu_reps(change).items():
            c = compare(samples["base"], samples["new"], "higher" if f == "goodput_mbps" else "lower", 0.05)
            per_metric[f] = {**samples, "verdict": c.verdict, "change_pct": c.change_pct, "reason": c.reason}
            print(f"sensitivity {change} {f}: {c.verdict} ({c.change_pct}%): {c.reason}", flush=True)
        out[change] = {"load_avg": load, "metrics": per_metric}
    return out


@contextlib.contextmanager
def applied(change: str, on: bool, a: str, b: str) -> Iterator[None]:
    if not on:
        yield
        return
    if change == "checksum":
        for ns in (a, b):
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.checksum_enabled=1")
        try:
            yield
        finally:
            for ns in (a, b):
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.mptcp.checksum_enabled=0")
        return
    # one CPU hog in each namespace: the pinner puts each on its host's CPU, where it competes with the transfer
    hogs = [subprocess.Popen(ns_argv(ns, [sys.executable, "-c", "while True: pass"])) for ns in (a, b)]
    try:
        time.sleep(0.1)
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--subflows", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["bulk-upload", "bulk-download"])
    p.add_argument("--sensitivity", action="store_true", help="also show the metrics catching changes")
    p.add_argument("--skip-matrix", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "cost.json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/cost.py: run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    a, b = setup()
    t0 = time.time()
    try:
        load = os.getloadavg()
        doc: dict[str, Any] = {
            "benchmark": "cost",
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            "load_avg_start": [round(v, 2) for v in load],
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "method": "see the module docstring; client ns pinned to the first CPU, server ns to the last",
            "congestion_control": CONGESTION,
        }
        if not args.skip_matrix:
            doc.update(measure(a, b, args))
        if args.sensitivity:
            doc["sensitivity"] = sensitivity(a, b, args)
        doc["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
        doc["duration_s"] = round(time.time() - t0, 1)
    finally:
        teardown((a, b))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for key, row in sorted(doc.get("table", {}).items()):
        g = row["goodput_mbps"].get("median", 0)
        busy = row["busy_s_per_gb"].get("median", float("nan"))
        proc = row["process_s_per_gb"].get("median", float("nan"))
        ratio = row.get("ratio_vs_tcp", float("nan"))
        vs = row.get("engine_vs_iperf3", float("nan"))
        test = row.get("engine_vs_iperf3_test", {})
        verdict = f" ({test['verdict']}, p={test['p_value']:.2f})" if test.get("p_value") is not None else ""
        print(
            f"{key:28s} {g:8.0f} Mbit/s  x{ratio:.2f} vs TCP  busy {busy:.3f} s/GB  process {proc:.3f} s/GB  "
            f"engine/iperf3 {vs:.2f}{verdict}"
        )
    print(f"wrote {args.out} ({doc['duration_s']} s, load {doc['load_avg_start']} -> {doc['load_avg_end']})")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        sys.exit(main())
