"""Benchmark: does `mptcpkit lab compare` flag each issue-11 metric when the thing it measures changes?

For each check, a base scenario file and a changed copy with the same scenario name are run with
`mptcpkit lab run -n REPS` (a fresh results database), then `mptcpkit lab compare --json BASE NEW` gives the
verdict for the metric the check is about:

| check | base -> changed | metric (better) |
|---|---|---|
| rr-delay | latency-rr 1 B/1 B, paths 1 ms one-way -> 1.5 ms one-way (+1 ms RTT) | mptcp_p50, tcp_p50 (lower) |
| best-path-loss | second path 1 % loss -> 5 % loss | best_path_score, mptcp_goodput (higher) |
| best-path-loss-10 | second path 1 % loss -> 10 % loss | best_path_score, mptcp_goodput (higher) |
| checksum | cpu-bound-2 -> with net.mptcp.checksum_enabled=1 on both hosts | mptcp_cpu_per_gb, mptcp_process_cpu_per_gb (lower) |

    sudo .venv/bin/python benchmarks/cost_compare.py [--reps 5] [--only rr-delay,best-path-loss,best-path-loss-10,checksum]

Writes benchmarks/results/cost_compare.json. The machine is shared: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mptcpkit.interrupts import sigterm_as_interrupt

ROOT = Path(__file__).resolve().parent
BUILTIN = ROOT.parent / "src" / "mptcpkit" / "lab" / "scenarios" / "builtin"
MPTCPKIT = str(Path(sys.executable).parent / "mptcpkit")


def rr_files() -> tuple[str, str]:
    text = (BUILTIN / "latency-rr.toml").read_text()
    text = text.replace("[matrix]\nsize = [[1, 1], [1024, 65536]]\n", "")
    text = text.replace('["{size.0}", "{size.1}"]', "[1, 1]")
    return text, text.replace('delay = "1ms"', 'delay = "1500us"')


def best_path_files(new_loss: str = "5%") -> tuple[str, str]:
    text = (BUILTIN / "best-path-lossy.toml").read_text()
    text = text.replace('[matrix]\nloss = ["1%", "5%"]\n', "")
    return text.replace('"{loss}"', '"1%"'), text.replace('"{loss}"', f'"{new_loss}"')


def best_path_10_files() -> tuple[str, str]:
    """A larger step (1 % -> 10 %): at 1 % -> 5 % the score's spread at 5 repetitions hides the fall."""
    return best_path_files("10%")


def checksum_files() -> tuple[str, str]:
    text = (BUILTIN / "cpu-bound-2.toml").read_text()
    changed = text + (
        '\n[hosts.client]\nsysctls = { "net.mptcp.checksum_enabled" = "1" }\n'
        '\n[hosts.server]\nsysctls = { "net.mptcp.checksum_enabled" = "1" }\n'
    )
    return text, changed


CHECKS: dict[str, tuple[Any, list[str]]] = {
    "rr-delay": (rr_files, ["mptcp_p50", "tcp_p50"]),
    "best-path-loss": (best_path_files, ["best_path_score", "mptcp_goodput"]),
    "best-path-loss-10": (best_path_10_files, ["best_path_score", "mptcp_goodput"]),
    "checksum": (checksum_files, ["mptcp_cpu_per_gb", "mptcp_process_cpu_per_gb", "cpu_mptcp_vs_tcp"]),
}


def lab_run(path: Path, db: Path, reps: int, label: str) -> str:
    report = path.with_suffix(".json")
    argv = [MPTCPKIT, "lab", "run", "-s", str(path), "-n", str(reps), "--db", str(db), "--label", label]
    cp = subprocess.run([*argv, "--json", str(report)], capture_output=True, text=True)
    if not report.exists():
        raise RuntimeError(f"lab run {path.name} wrote no JSON: {(cp.stderr or cp.stdout)[-500:]}")
    return str(json.loads(report.read_text())["run_id"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--only", type=lambda s: s.split(","), default=list(CHECKS))
    p.add_argument("--out", type=Path, default=ROOT / "results" / "cost_compare.json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("benchmarks/cost_compare.py: run as root", file=sys.stderr)
        return 2
    out: dict[str, Any] = {"benchmark": "cost_compare", "reps": args.reps, "checks": {}}
    with tempfile.TemporaryDirectory(prefix="mptcpkit-cost-compare-") as tmp:
        db = Path(tmp) / "results.db"
        for name in args.only:
            make, metrics = CHECKS[name]
            base_text, new_text = make()
            base, new = Path(tmp) / f"{name}-base.toml", Path(tmp) / f"{name}-new.toml"
            base.write_text(base_text)
            new.write_text(new_text)
            load = os.getloadavg()
            t0 = time.time()
            base_id = lab_run(base, db, args.reps, f"{name}-base")
            new_id = lab_run(new, db, args.reps, f"{name}-new")
            cp = subprocess.run(
                [MPTCPKIT, "lab", "compare", "--db", str(db), "--json", base_id, new_id],
                capture_output=True,
                text=True,
            )
            rows = json.loads(cp.stdout)
            picked = [r for r in rows if r["metric"] in metrics]
            out["checks"][name] = {
                "load_avg": [round(v, 2) for v in load],
                "seconds": round(time.time() - t0, 1),
                "compare_exit": cp.returncode,
                "metrics": picked,
            }
            for r in picked:
                print(
                    f"{name:15s} {r['metric']:20s} {r['verdict']:13s} {r['change_pct']!s:>8.8s} % "
                    f"p={r['p_value']} base {r['base_median']:.4g} new {r['new_median']:.4g}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    with sigterm_as_interrupt():  # `kill` tears the namespaces down as Ctrl-C does
        sys.exit(main())
