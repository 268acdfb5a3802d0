"""Regression tracking with real lab runs at small scale: a 10 % slower link is a regression, identical
configurations are not, and a step in a history of runs gets its change point at the right run."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.lab.analysis import compare_runs, history_change_points
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.runner import RunOptions, run
from mptcpkit.lab.scenarios import (
    LinkOverride,
    MetricSpec,
    RuleSpec,
    Scenario,
    ShapeOverride,
    build,
    builtin_specs,
)
from mptcpkit.lab.scenarios.expectations import goodput_limit
from mptcpkit.lab.store import Store, open_store

pytestmark = pytest.mark.needs_root
MPTCPKIT = [sys.executable, "-m", "mptcpkit"]


def single_path(rate_mbit: float, scale: float) -> Scenario:
    """mptcp-single on a path of `rate_mbit` (same scenario name, so runs compare)."""
    shape = ShapeOverride(rate_bps=int(rate_mbit * 1e6))
    # The expectation stays the nominal 20 Mbit/s one: the code under test did not change, the link did.
    nominal = goodput_limit(20e6, 1448, mptcp=True) / 1e6
    spec = dataclasses.replace(
        builtin_specs()["mptcp-single"],
        links=(LinkOverride("path1", shape, shape),),
        metrics=(MetricSpec("goodput", "goodput", expect=nominal, rule=RuleSpec(">=", 0.97)),),
    )
    return build(spec, scale)


def lab_run(store: Store, scenario: Scenario, reps: int, label: str) -> str:
    report = run(
        RunOptions(scenarios=[scenario], reps=reps, label=label, self_check=False), NetnsBackend(), store
    )
    return report.run_id


def verdict(store: Store, base: str, new: str) -> str:
    (row,) = [r for r in compare_runs(store, base, new) if r.metric == "goodput"]
    return row.comparison.verdict


def test_lowered_rate_is_a_regression_and_aa_is_not(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "r.db")) as store:
        same = [lab_run(store, single_path(20, 0.7), 5, f"a{i}") for i in range(3)]
        slower = lab_run(store, single_path(18, 0.7), 5, "slower")
        assert verdict(store, same[0], slower) == "regression"
        assert verdict(store, slower, same[1]) == "improvement"
        for base, new in ((same[0], same[1]), (same[1], same[2]), (same[0], same[2])):
            assert verdict(store, base, new) in ("unchanged", "inconclusive"), (base, new)
    db = str(tmp_path / "r.db")
    proc = subprocess.run(
        [*MPTCPKIT, "lab", "compare", "a0", "slower", "--db", db, "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 1, proc.stderr
    rows = json.loads(proc.stdout)
    assert any(r["verdict"] == "regression" and r["metric"] == "goodput" for r in rows)
    aa = subprocess.run([*MPTCPKIT, "lab", "compare", "a0", "a1", "--db", db], capture_output=True, text=True)
    assert aa.returncode == 0, aa.stdout + aa.stderr
    bad = subprocess.run(
        [*MPTCPKIT, "lab", "compare", "zzzz", "a1", "--db", db], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "zzzz" in bad.stderr and "Traceback" not in bad.stderr


def test_history_step_gets_its_change_point(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "h.db")) as store:
        runs = [lab_run(store, single_path(20 if i < 5 else 17, 0.7), 1, f"k{i}") for i in range(10)]
        changes = history_change_points(store, "mptcp-single", "goodput")
    assert [c.run.run_id for c in changes] == [runs[5]], [(c.run.label, c.change.change_pct) for c in changes]
    assert changes[0].kind == "regression"
    out = subprocess.run(
        [
            *MPTCPKIT,
            "lab",
            "history",
            "-s",
            "mptcp-single",
            "-m",
            "goodput",
            "--db",
            str(tmp_path / "h.db"),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0
    assert [c["label"] for c in json.loads(out.stdout)] == ["k5"]
