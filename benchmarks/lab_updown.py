"""Benchmark: time to bring a topology up and tear it down with the namespace backend.

    sudo .venv/bin/python benchmarks/lab_updown.py [--topology two-paths] [--reps 10]

Writes benchmarks/results/lab_updown.json (median, p90, min of up, down, and up+down). Goal for two-paths:
up+down < 0.5 s (Mininet takes seconds). Emulation is built but no self-check runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.topology_file import load_topology

RESULTS = Path(__file__).resolve().parent / "results"


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_s": round(statistics.median(ordered), 4),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4),
        "min_s": round(ordered[0], 4),
        "max_s": round(ordered[-1], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--topology", default="two-paths")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    topology = load_topology(args.topology)
    backend = NetnsBackend()
    ups, downs = [], []
    mode = ""
    for _ in range(args.reps):
        t0 = time.perf_counter()
        lab = backend.up(topology)
        t1 = time.perf_counter()
        mode = lab.info.emulation.get("mode", "")
        lab.close()
        t2 = time.perf_counter()
        ups.append(t1 - t0)
        downs.append(t2 - t1)
    result = {
        "benchmark": "lab_updown",
        "topology": args.topology,
        "reps": args.reps,
        "emulation": mode,
        "up": summary(ups),
        "down": summary(downs),
        "up_plus_down": summary([u + d for u, d in zip(ups, downs, strict=True)]),
        "goal_up_plus_down_s": 0.5,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "lab_updown.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
