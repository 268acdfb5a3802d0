"""Benchmark: how long a set-link action takes on the namespace backend, live and with a wire rebuild.

    sudo .venv/bin/python benchmarks/set_link.py [--live 20 --rebuilds 5]

On the built-in two-paths lab (userspace emulator): `--live` changes of path2's rate (each direction keeps its
stage: one control datagram per direction to the forwarder, answered with its settings), then `--rebuilds`
round trips of path1 between unshaped and 10 Mbit/s (a stage change: the wire and its forwarder are rebuilt,
and the link carries nothing meanwhile). Writes benchmarks/results/set_link.json (raw samples, median, max).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from mptcpkit.interrupts import sigterm_as_interrupt
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.model import Direction
from mptcpkit.lab.topology_file import load_topology

RESULTS = Path(__file__).resolve().parent / "results" / "set_link.json"


def summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(samples) * 1e3, "max_ms": max(samples) * 1e3, "n": len(samples)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=20)
    parser.add_argument("--rebuilds", type=int, default=5)
    args = parser.parse_args()
    live: list[float] = []
    rebuild: list[float] = []
    with NetnsBackend().up(load_topology("two-paths"), emulation="userspace") as lab:
        for i in range(args.live):
            shape = Direction(rate_bps=(5 + i) * 10**6, delay_s=0.01)
            started = time.perf_counter()
            lab.set_link_shape("path2", shape, shape)
            live.append(time.perf_counter() - started)
        for _ in range(args.rebuilds):
            for shape in (Direction(), Direction(rate_bps=10**7)):
                started = time.perf_counter()
                lab.set_link_shape("path1", shape, shape)
                rebuild.append(time.perf_counter() - started)
    result = {
        "machine": platform.node(),
        "kernel": platform.release(),
        "live": {**summary(live), "samples_s": live},
        "rebuild": {**summary(rebuild), "samples_s": rebuild},
    }
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"live change: median {result['live']['median_ms']:.1f} ms, max {result['live']['max_ms']:.1f} ms")
    print(
        f"rebuild:     median {result['rebuild']['median_ms']:.0f} ms, max {result['rebuild']['max_ms']:.0f} ms"
    )


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
