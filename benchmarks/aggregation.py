"""Benchmark: MPTCP goodput over two 50 Mbit/s paths, mptcpkit's engine against iperf3 via mptcpize.

    sudo .venv/bin/python benchmarks/aggregation.py [--reps 5]

Runs the `aggregate-50-50` scenario (two-paths, 50/50 Mbit/s, 5 ms one-way) with both generators, repetitions
interleaved in random order in the same run, and writes benchmarks/results/aggregation.json: per engine the
median goodput, its share of the analytic limit 2 x 50 Mbit/s x 1424/1514 = 94.06 Mbit/s, and the ratio
mptcpkit / iperf3. Goals: mptcpkit median >= 98.5 % of the limit and not below iperf3.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.runner import RunOptions, run
from mptcpkit.lab.scenarios import default_suite, with_engine
from mptcpkit.lab.store import open_store

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    base = next(s for s in default_suite() if s.name == "aggregate-50-50")
    iperf = dataclasses.replace(with_engine(base, "iperf3"), name="aggregate-50-50-iperf3")
    with tempfile.TemporaryDirectory() as tmp, open_store(f"{tmp}/bench.db") as store:
        report = run(
            RunOptions(scenarios=[base, iperf], reps=args.reps, label="benchmark"), NetnsBackend(), store
        )
    engines = {}
    for result in report.results:
        if result.metric != "goodput":
            continue
        engine = "iperf3-mptcpize" if result.scenario.endswith("iperf3") else "mptcpkit"
        engines[engine] = {
            "samples_mbit": [round(x, 3) for x in result.samples],
            "median_mbit": round(statistics.median(result.samples), 3),
            "limit_mbit": round(result.expected or 0, 3),
            "share_of_limit": round(statistics.median(result.samples) / (result.expected or 1), 4),
        }
    out = {
        "benchmark": "aggregation_50_50",
        "reps": args.reps,
        "emulation": report.environment.get("emulation"),
        "kernel": report.environment.get("kernel_release"),
        "engines": engines,
        "ratio_mptcpkit_over_iperf3": round(
            engines["mptcpkit"]["median_mbit"] / engines["iperf3-mptcpize"]["median_mbit"], 4
        ),
        "failures": {k: v for k, v in report.failures.items() if v},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "aggregation.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
