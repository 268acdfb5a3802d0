"""Benchmark the cost of `lab run --profile`: goodput of a CPU-bound MPTCP transfer, profiled against unprofiled.

Run as root from the repository:
    .venv/bin/python benchmarks/profiling_overhead.py [--reps 8] [--seconds 4] [--freq 499 --freq 99]
Writes benchmarks/results/profiling_overhead.json and prints a summary.

One run per frequency with two scenarios of identical configuration (one unshaped veth path, iperf3, MPTCP,
no checksums) named `plain` and `profiled`; only `profiled` is profiled. The runner interleaves their
repetitions in random order, so drifts of the shared machine hit both alike. Reported: the median goodput of
each, the relative change with its 95 % bootstrap CI and the Mann-Whitney p (lab compare's statistics), and
the samples per profiled repetition.

Goodput on a shared 2-CPU machine is noisy (other users' load: +-30 % between repetitions), far noisier than a
~1 % effect. The second part therefore measures the cost per sample, amplified: the CPU time of a fixed MPTCP
transfer (--bytes over loopback, sender and receiver threads in this process, RUSAGE_THREAD of both; the
sampling interrupt and stack walk are charged to the interrupted thread) with and without `perf record -a -g`
at --amplify Hz (default 10000, 20x the default), trials interleaved and paired. The paired median increase,
scaled by frequency / amplify, is the overhead at the lab's frequencies (sampling cost is linear in the rate).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.analysis.compare import compare
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.profiling import perf
from mptcpkit.lab.profiling.cpu_bound import cpu_bound
from mptcpkit.lab.profiling.session import ProfileOptions
from mptcpkit.lab.profiling.storage import load_profiles
from mptcpkit.lab.runner import RunOptions, run
from mptcpkit.lab.store import open_store

RESULTS = Path(__file__).resolve().parent / "results" / "profiling_overhead.json"


def one_frequency(frequency: int, reps: int, seconds: float, db: str, seed: int) -> dict[str, Any]:
    base = cpu_bound(seconds=seconds)
    plain = dataclasses.replace(base, name="plain")
    profiled = dataclasses.replace(base, name="profiled")
    options = RunOptions(
        [plain, profiled],
        reps=reps,
        self_check=False,
        seed=seed,
        label=f"overhead-{frequency}hz",
        profile=ProfileOptions(frequency=frequency, scenarios=frozenset({"profiled"})),
    )
    started = time.monotonic()
    with open_store(db) as store:
        report = run(options, NetnsBackend(), store)
        results = {r.scenario: r for r in store.results(report.run_id)}
        profiles = load_profiles(store, report.run_id, "profiled")
    a, b = results["plain"].samples, results["profiled"].samples
    cmp = compare(a, b, "higher", 0.03)
    return {
        "frequency_hz": frequency,
        "reps": reps,
        "seconds": seconds,
        "plain_mbit": a,
        "profiled_mbit": b,
        "plain_median_mbit": statistics.median(a),
        "profiled_median_mbit": statistics.median(b),
        "change_pct": cmp.change_pct,
        "ci_pct": [cmp.ci_low, cmp.ci_high],
        "p_value": cmp.p_value,
        "verdict": cmp.verdict,
        "samples_per_rep": [p.samples for p in profiles],
        "window_s": [round(p.seconds, 3) for p in profiles],
        "wall_s": round(time.monotonic() - started, 1),
    }


def _transfer_cpu(size: int) -> float:
    """CPU seconds (user+system, both threads) of one MPTCP transfer of `size` bytes over loopback."""
    import resource
    import socket
    import threading

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    used: list[float] = []

    def receive() -> None:
        conn, _ = listener.accept()
        start = resource.getrusage(resource.RUSAGE_THREAD)
        buf = bytearray(1 << 20)
        got = 0
        while got < size:
            n = conn.recv_into(buf)
            if not n:
                break
            got += n
        end = resource.getrusage(resource.RUSAGE_THREAD)
        used.append(end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime)
        conn.close()

    thread = threading.Thread(target=receive)
    thread.start()
    sender = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    sender.connect(listener.getsockname())
    chunk = b"x" * (1 << 20)
    start = resource.getrusage(resource.RUSAGE_THREAD)
    for _ in range(size // len(chunk)):
        sender.sendall(chunk)
    end = resource.getrusage(resource.RUSAGE_THREAD)
    sender.close()
    thread.join()
    listener.close()
    return end.ru_utime - start.ru_utime + end.ru_stime - start.ru_stime + used[0]


def cpu_cost(amplify: int, trials: int, size: int, frequencies: list[int]) -> dict[str, Any]:
    """Paired trials without / with perf at `amplify` Hz; the overhead there and scaled to `frequencies`."""
    import signal
    import subprocess

    support = perf.probe()
    plain, profiled = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(trials):
            plain.append(_transfer_cpu(size) / (size / 1e9))
            argv = perf.record_argv(support.perf, f"{tmp}/p.data", event=support.event, frequency=amplify)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)  # perf's start-up (outside a repetition's window in the lab too)
            profiled.append(_transfer_cpu(size) / (size / 1e9))
            proc.send_signal(signal.SIGINT)
            proc.wait()
    paired = [100 * (b / a - 1) for a, b in zip(plain, profiled, strict=True)]
    at_amplify = statistics.median(paired)
    return {
        "amplify_hz": amplify,
        "trials": trials,
        "bytes": size,
        "cpu_s_per_gb_plain": plain,
        "cpu_s_per_gb_profiled": profiled,
        "paired_increase_pct": paired,
        "overhead_pct_at_amplify": at_amplify,
        "overhead_pct": {str(f): at_amplify * f / amplify for f in frequencies},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--freq", type=int, action="append")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--trials", type=int, default=10, help="CPU-cost trials")
    parser.add_argument("--amplify", type=int, default=10000, help="sampling rate of the CPU-cost trials")
    parser.add_argument("--bytes", type=int, default=2 << 30, help="bytes per CPU-cost trial")
    parser.add_argument("--skip-goodput", action="store_true")
    args = parser.parse_args()
    support = perf.probe()
    if not support.ok:
        raise SystemExit(f"perf cannot record here: {support.reason}")
    cases = []
    frequencies = args.freq or [499, 99]
    cost = cpu_cost(args.amplify, args.trials, args.bytes, frequencies)
    print(
        f"CPU per GB {statistics.median(cost['cpu_s_per_gb_plain']):.3f} s -> "
        f"{statistics.median(cost['cpu_s_per_gb_profiled']):.3f} s with perf at {args.amplify} Hz: paired "
        f"median {cost['overhead_pct_at_amplify']:+.1f} %; scaled: "
        + ", ".join(f"{f} Hz {v:+.2f} %" for f, v in cost["overhead_pct"].items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        for frequency in [] if args.skip_goodput else (args.freq or [499, 99]):
            case = one_frequency(frequency, args.reps, args.seconds, f"{tmp}/r.db", args.seed)
            cases.append(case)
            lo, hi = case["ci_pct"]
            print(
                f"{frequency:5d} Hz: plain {case['plain_median_mbit']:.0f} Mbit/s, profiled "
                f"{case['profiled_median_mbit']:.0f} Mbit/s, change {case['change_pct']:+.1f} % "
                f"[{lo if lo is None else round(lo, 1)}, {hi if hi is None else round(hi, 1)}] "
                f"p={case['p_value']:.2f} ({case['verdict']}); samples/rep "
                f"{int(np.median(case['samples_per_rep']))}"
            )
    RESULTS.write_text(
        json.dumps(
            {
                "benchmark": "profiling_overhead",
                "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                "machine": {"cpus": len(__import__("os").sched_getaffinity(0)), "kernel": platform.release()},
                "event": support.event,
                "perf": support.version,
                "cpu_cost": cost,
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
