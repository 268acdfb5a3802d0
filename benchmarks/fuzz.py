"""Fuzzing benchmark (issue 15): >= 1,000 hypothesis cases per parser, 0 tracebacks, 0 leftovers.

    .venv/bin/python benchmarks/fuzz.py [--cases 1000] [--only topology-random,dashboard-http] [--seed N]

The targets live in tests/fuzz_targets.py (the CI tests run a few dozen cases of the same targets). Each one is a
parser plus a session that checks for leftovers at its end: topology files (random documents and mutated
files), the dashboard over real HTTP (random methods, paths, parameters, headers and raw bytes), and (as root)
300 random valid topologies built as real namespace labs: what validation accepts must build. Other parsers
join by registering a Target there (scenario files, mptcpd.conf, netlink decoders, check serve).

It also times the size limits: a 100,000-host topology refused, 1,000 hosts validated, and the TOML line mapper
on a `[` + 4,000 spaces line (17 s before issue 15). Writes benchmarks/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fuzz_targets import load_all, run_target  # noqa: E402
from mptcpkit.interrupts import sigterm_as_interrupt  # noqa: E402

RESULTS = HERE / "results"


def limits() -> dict[str, Any]:
    """Wall-clock times of the size limits and of linear-time validation."""
    from mptcpkit.errors import TopologyError
    from mptcpkit.lab import model
    from mptcpkit.lab.model import Host, Topology
    from mptcpkit.lab.toml_lines import index_lines
    from mptcpkit.lab.topology_file import parse_topology

    out: dict[str, Any] = {}
    hosts = "".join(f"[hosts.h{i}]\n" for i in range(1000))
    links = "".join(
        f'[[links]]\na = {{ host = "h{i}", addresses = ["10.{i // 250}.{i % 250}.1/30"] }}\n'
        f'b = {{ host = "h{i + 1}", addresses = ["10.{i // 250}.{i % 250}.2/30"] }}\n'
        for i in range(999)
    )
    started = time.perf_counter()
    parse_topology(hosts + links, "chain.toml")
    out["hosts_1000_parse_and_validate_s"] = round(time.perf_counter() - started, 4)
    big = Topology("big", tuple(Host(f"h{i}") for i in range(100_000)), ())
    started = time.perf_counter()
    with contextlib.suppress(model.ModelError):
        model.validate(big)
    out["hosts_100k_refused_s"] = round(time.perf_counter() - started, 6)
    started = time.perf_counter()
    with contextlib.suppress(TopologyError):
        parse_topology("".join(f"[hosts.h{i}]\n" for i in range(100_000)), "big.toml")
    out["file_100k_hosts_refused_s"] = round(time.perf_counter() - started, 6)
    # The line mapper's header pattern before issue 15, on the same input, as the peer to compare with.
    old_header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    for spaces in (250, 500, 1_000):
        started = time.perf_counter()
        old_header.match("[" + " " * spaces)
        old_s = time.perf_counter() - started
        started = time.perf_counter()
        index_lines('description = """\n[' + " " * spaces + '\n"""\n[' + " " * spaces + "\n")
        new_s = time.perf_counter() - started
        out[f"line_mapper_{spaces}_spaces"] = {"before_s": round(old_s, 4), "now_s": round(new_s, 6)}
    for spaces in (2_000, 4_000, 100_000):
        text = 'description = """\n[' + " " * spaces + '\n"""\n[' + " " * spaces + "\n"
        started = time.perf_counter()
        index_lines(text)
        out[f"line_mapper_bracket_{spaces}_spaces_s"] = round(time.perf_counter() - started, 6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--only", default="", help="comma-separated target names")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", default=str(RESULTS / "fuzz.json"))
    args = parser.parse_args()
    targets = load_all()
    wanted = [t for t in args.only.split(",") if t] or sorted(targets)
    report: dict[str, Any] = {
        "cases_requested": args.cases,
        "python": platform.python_version(),
        "targets": {},
        "limits": limits(),
    }
    failed = False
    for name in wanted:
        target = targets[name]
        try:
            cases = min(args.cases, target.bench_cases or args.cases)
            result = run_target(target, cases, seed=args.seed)
            result["tracebacks"] = 0
            result["leftovers"] = 0
        except Exception as exc:  # a failing case: record it (hypothesis has shrunk it) and go on
            failed = True
            result = {"error": f"{type(exc).__name__}: {exc}"[:2000], "trace": traceback.format_exc()[-4000:]}
        report["targets"][name] = result
        print(name, json.dumps(result)[:300], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["limits"], indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        main()
