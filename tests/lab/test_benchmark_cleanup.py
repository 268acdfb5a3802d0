"""A benchmark stopped with `kill` (SIGTERM) tears its namespaces and processes down, as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.lab.backends import nsutil

pytestmark = pytest.mark.needs_root
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def netns_list() -> set[str]:
    return set(nsutil.list_netns())


def test_sigterm_mid_benchmark_leaves_no_namespace(tmp_path: Path) -> None:
    before = netns_list()
    proc = subprocess.Popen(
        [
            *(sys.executable, str(BENCHMARKS / "cost.py"), "--reps", "50", "--duration", "1"),
            *("--subflows", "2", "--out", str(tmp_path / "cost.json")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    created: set[str] = set()
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first transfer's line: namespaces exist and traffic is running
        assert line.startswith("rep 0"), line
        created = {ns for ns in netns_list() - before if ns.startswith("mkt-cost")}
        assert len(created) == 2
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        assert not (netns_list() & created), "the benchmark left its namespaces behind"
        assert not (tmp_path / "cost.json").exists()  # an interrupted run writes no result
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        leftover = sorted(netns_list() & created)
        nsutil.kill_processes_in(leftover)
        for ns in leftover:
            nsutil.delete_netns(ns)
