"""Benchmark the cost of `lab run --profile`: goodput of a CPU-bound MPTCP transfer, profiled against unprofiled.

Run as root from the repository:
    .venv/bin/python benchmarks/profiling_overhead.py [--reps 8] [--seconds 4] [--freq 499 --freq 99]
Writes benchmarks/results/profiling_overhead.json and prints a summary.

One run per frequency with two scenarios of identical configuration (one unshaped veth path, iperf3, MPTCP,
no checksums) named `plain` and `profiled`; only `profiled` is profiled. The runner interleaves their
repetitions in random order, so drifts of the shared machine hit both alike. Reported: the median goodput of
each, the relative change with its 95 % bootstrap CI and the Mann-Whitney p (lab compare's statistics), and
perf's own CPU time per profiled repetition (user+system of `perf record` and of `perf script` folding, the
latter after the repetition, outside the measurement).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--freq", type=int, action="append")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    support = perf.probe()
    if not support.ok:
        raise SystemExit(f"perf cannot record here: {support.reason}")
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for frequency in args.freq or [499, 99]:
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
                "cases": cases,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
