"""The runner and the default suite, end to end on real namespaces at small scale."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.runner import RunOptions, _order, aggregate, run
from mptcpkit.lab.scenarios import default_suite
from mptcpkit.lab.scenarios.base import Measurement, Rule
from mptcpkit.lab.scenarios.expectations import (
    aggregate_goodput_limit,
    goodput_limit,
    jain_index,
    simult_flows_time_bound,
)
from mptcpkit.lab.store import open_store

MPTCPKIT = [sys.executable, "-m", "mptcpkit"]


def test_expectations() -> None:
    # The reference: two 50 Mbit/s MPTCP paths carry at most 94.06 Mbit/s (1424 of 1514 bytes).
    assert aggregate_goodput_limit([50e6, 50e6], 1448) / 1e6 == pytest.approx(94.06, abs=0.01)
    assert goodput_limit(50e6, 1448, mptcp=False) / 1e6 == pytest.approx(47.82, abs=0.01)
    # simult_flows.sh: 16 MiB over 10+10 Mbit/s -> 7456 ms + 400 ms + 50 ms slack.
    assert simult_flows_time_bound(16 * 1024 * 1024, [10e6, 10e6]) == pytest.approx(7.906, abs=0.001)
    assert jain_index([1, 1, 1, 1]) == pytest.approx(1.0)
    assert jain_index([1, 0]) == pytest.approx(0.5)


def test_order_is_interleaved_and_complete() -> None:
    import random

    order = _order(["a", "b", "c"], 4, random.Random(1))
    assert sorted(order) == sorted((n, r) for n in "abc" for r in range(4))
    rounds = [order[i : i + 3] for i in range(0, 12, 3)]
    assert all({n for n, _ in rnd} == {"a", "b", "c"} for rnd in rounds)
    assert len({tuple(n for n, _ in rnd) for rnd in rounds}) > 1, "rounds should not all share one order"


def test_aggregate_rule_and_failures() -> None:
    from mptcpkit.lab.runner import ScenarioStatus

    scenario = default_suite()[0]
    status = ScenarioStatus(scenario)
    for value in (47.0, 47.5, 46.0):
        status.measurements["goodput"].append(
            Measurement("goodput", "Mbit/s", "higher", value, 47.82, Rule("ge", 0.97))
        )
    (result,) = aggregate("r1", status)
    assert result.samples == [47.0, 47.5, 46.0] and result.passed
    assert result.score == pytest.approx(47.0 / 47.82)
    assert "median >= 0.97 x expected" in result.rule
    status.failures.append("rep 2: fell back to TCP")
    (result,) = aggregate("r1", status)
    assert not result.passed and "every repetition must succeed" in result.rule


@pytest.mark.needs_root
def test_every_scenario_small_scale(tmp_path: Path) -> None:
    """Each default scenario end to end (short transfers, one repetition), stored and passing."""
    scenarios = default_suite(scale=0.5)
    with open_store(str(tmp_path / "r.db")) as store:
        report = run(RunOptions(scenarios=scenarios, reps=1, self_check=False, seed=7), NetnsBackend(), store)
        stored = store.results(report.run_id)
        assert store.get_run(report.run_id).status == "complete"
    assert {r.scenario for r in stored} == {s.name for s in scenarios}
    # cpu-bound-2's mptcp_vs_tcp exists to catch this kernel's MPTCP throughput collapse on an unshaped veth
    # (docs/benchmarks.md, "MPTCP collapse"), which strikes now and then: one repetition may rightly fail it.
    # Here it must be measured; that it flags a collapse is shown by benchmarks/cost_collapse.py.
    kernel_dependent = {("cpu-bound-2", "mptcp_vs_tcp")}
    failed = [
        (r.scenario, r.metric, r.samples, r.expected, r.rule, r.details.get("failures"))
        for r in stored
        if not r.passed and (r.scenario, r.metric) not in kernel_dependent
    ]
    assert not failed, failed
    for key in kernel_dependent:
        (ratio,) = next(r.samples for r in stored if (r.scenario, r.metric) == key)
        assert 0 < ratio < 10, (key, ratio)
    by_key = {(r.scenario, r.metric): r for r in stored}
    assert by_key[("failover", "integrity")].samples == [1.0]
    assert by_key[("add-addr", "joined_announced")].samples == [1.0]
    assert by_key[("backup", "backup_share")].samples[0] <= 5.0
    assert by_key[("simult-balanced", "subflows")].samples == [2.0]


@pytest.mark.needs_root
def test_fallback_is_a_failure(tmp_path: Path) -> None:
    """An MPTCP scenario against a server without MPTCP falls back to TCP: reported as a failure with the reason."""
    base = next(s for s in default_suite(scale=0.3) if s.name == "mptcp-single")
    flows = tuple(dataclasses.replace(f, server_proto="tcp") for f in base.flows)
    scenario = dataclasses.replace(base, name="mptcp-vs-tcp-server", flows=flows)
    with open_store(str(tmp_path / "r.db")) as store:
        report = run(RunOptions(scenarios=[scenario], reps=1, self_check=False), NetnsBackend(), store)
    assert not report.passed
    (failure,) = report.failures["mptcp-vs-tcp-server"]
    assert "fell back to TCP" in failure


@pytest.mark.needs_root
def test_cli_run_json_and_exit_codes(tmp_path: Path) -> None:
    db = str(tmp_path / "r.db")
    proc = subprocess.run(
        [
            *MPTCPKIT,
            "lab",
            "run",
            "-s",
            "mptcp-single",
            "--reps",
            "2",
            "--scale",
            "0.4",
            "--db",
            db,
            "--json",
            "-",
            "--label",
            "test-label",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # 0 when every rule passed, 1 when one failed: at --scale 0.4 the 0.97 goodput rule sits near this machine's
    # noise, so either is a correct run; the exit status must agree with the stored verdicts.
    assert proc.returncode in (0, 1), proc.stderr
    document = json.loads(proc.stdout)
    assert proc.returncode == (0 if all(r["passed"] for r in document["results"]) else 1), proc.stderr
    assert document["run_id"] and document["environment"]["kernel_release"]
    assert document["environment"]["label"] == "test-label"
    assert document["environment"]["emulation"]
    assert "self_check" in document["environment"]
    (result,) = [r for r in document["results"] if r["metric"] == "goodput"]
    for key in ("scenario", "metric", "unit", "samples", "median", "expected", "score", "passed"):
        assert key in result
    assert len(result["samples"]) == 2
    shown = subprocess.run(
        [*MPTCPKIT, "lab", "show", "test-label", "--db", db], capture_output=True, text=True
    )
    assert shown.returncode == 0 and "mptcp-single" in shown.stdout
    runs = subprocess.run([*MPTCPKIT, "lab", "runs", "--db", db], capture_output=True, text=True)
    assert document["run_id"] in runs.stdout
    bad = subprocess.run(
        [*MPTCPKIT, "lab", "run", "-s", "mptcp-singel", "--db", db], capture_output=True, text=True
    )
    assert (
        bad.returncode == 2 and "did you mean 'mptcp-single'" in bad.stderr and "Traceback" not in bad.stderr
    )
    empty = subprocess.run(
        [*MPTCPKIT, "lab", "show", "latest", "--db", str(tmp_path / "empty.db")],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "Traceback" not in empty.stderr
