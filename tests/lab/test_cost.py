"""CPU accounting (lab/cpu_cost.py) and the issue-11 metric kinds: pure parsers, then pinning in real namespaces."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mptcpkit.lab import cost_metrics, cpu_cost
from mptcpkit.lab.scenarios import builtin_specs
from mptcpkit.lab.scenarios.registry import metric_kinds, rep_hooks, sections

PROC_STAT = """cpu  100 0 50 1000 0 0 10 0 0 0
cpu0 60 0 30 500 0 0 8 0 0 0
cpu1 40 0 20 500 0 2 2 0 0 0
intr 12345
"""


def test_parse_proc_stat_per_cpu_seconds() -> None:
    stat = cpu_cost.parse_proc_stat(PROC_STAT, tick=0.01)
    assert set(stat) == {0, 1}
    assert stat[0].user == pytest.approx(0.6) and stat[0].softirq == pytest.approx(0.08)
    assert stat[1].irq == pytest.approx(0.02) and stat[1].busy == pytest.approx(0.64)


def test_softirq_series_window_interpolates() -> None:
    series = cpu_cost.SoftirqSeries((0, 1))
    for t, v in ((10.0, 1.0), (11.0, 2.0), (12.0, 4.0)):
        stat = {c: cpu_cost.CpuTimes(0, 0, 0, 0, 0, 0, v * (c + 1)) for c in (0, 1)}
        series.add(t, stat)
    window = series.between(10.5, 11.5)
    assert window[0] == pytest.approx(1.5) and window[1] == pytest.approx(3.0)
    assert series.between(0, 100)[0] == pytest.approx(3.0)  # clamped to the samples
    assert cpu_cost.SoftirqSeries((0,)).between(1, 2) == {0: 0.0}


def test_parse_perf_stat_and_section() -> None:
    text = "# started\n1234.5,msec,task-clock,1234500,100.00,0.99,CPUs utilized\n<not supported>,,cycles,0,100.00,,\n"
    assert cpu_cost.parse_perf_stat(text) == {"task-clock": 1234.5, "cycles": None}
    assert cpu_cost.parse_section({"pin": {"client": 0, "server": 1}}) == {
        "pin": {"client": 0, "server": 1},
        "perf": "auto",
    }
    for bad in ({"pin": {"client": -1}}, {"perf": "yes"}, {"pinn": {}}):
        with pytest.raises(ValueError):
            cpu_cost.parse_section(bad)


def test_cost_kinds_registered_and_scenarios_load() -> None:
    kinds = metric_kinds()
    for kind in cost_metrics.COST_METRICS:
        assert kinds[kind.name] is kind
    assert "cpu" in sections() and "cpu" in rep_hooks()
    specs = builtin_specs()
    cpu_cases = [s for s in specs.values() if s.sweep == "cpu-bound"]
    assert len(cpu_cases) == 16 and all("cpu" in s.sections for s in cpu_cases)
    assert {s.params["extra_subflows"] for s in cpu_cases} == {0, 1, 3, 7}
    best = [s for s in specs.values() if s.name.startswith("best-path")]
    assert len(best) == 6 and all(r.name == "best_path_score" for s in best for r in s.relations)
    assert specs["stream-hol"].flows[0].mode == "stream"
    assert specs["connect-setup"].flows[2].join == 1


@pytest.mark.needs_root
def test_pinner_pins_every_thread_of_namespace_processes(make_netns: Callable[[str], str]) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    a, b = make_netns("cpa"), make_netns("cpb")
    code = "import threading,time;threading.Thread(target=time.sleep,args=(30,)).start();print(1,flush=True);time.sleep(30)"
    procs = [
        subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code], stdout=subprocess.PIPE)
        for ns in (a, b)
    ]
    try:
        pinner = cpu_cost.Pinner({"client": (a, cpus[0]), "server": (b, cpus[-1])}, perf=False)
        pinner.start()
        for p in procs:
            assert p.stdout is not None and p.stdout.readline()
        deadline = time.monotonic() + 5
        while len(pinner.pinned) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        pinner.stop()
        for p, cpu in zip(procs, (cpus[0], cpus[-1]), strict=True):
            tids = os.listdir(f"/proc/{p.pid}/task")
            assert len(tids) == 2
            assert all(os.sched_getaffinity(int(t)) == {cpu} for t in tids)
        assert set(pinner.pinned.values()) == {"client", "server"}
        assert len(pinner.series.times) >= 2
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_report_shows_ratios_cpu_and_latency_cdfs(tmp_path: Path) -> None:
    from mptcpkit.lab.report.data import collect_run
    from mptcpkit.lab.report.html import run_html
    from mptcpkit.lab.store import Result, Series, open_store

    with open_store(str(tmp_path / "r.db")) as store:
        env = {"hostname": "lab1", "backend": "netns", "emulation": "none", "kernel_release": "6.18.0-test"}
        rid = store.create_run("cost", env, {"reps": 3}).run_id
        rows = [("mptcp_vs_tcp", "x", [0.61, 0.58, 0.66]), ("mptcp_cpu_per_gb", "s/GB", [0.5, 0.6, 0.55])]
        for metric, unit, samples in rows:
            store.add_result(
                Result(rid, "cpu-bound-2", metric, unit, "higher", samples, None, None, True, "informational")
            )
        store.add_result(
            Result(rid, "latency-rr", "mptcp_p50", "us", "lower", [2100.0], None, None, True, "i")
        )
        cdf = [1000.0 + 10 * i for i in range(len(cost_metrics.CDF_QUANTILES))]
        store.add_series(Series(rid, "latency-rr", 0, "latency-cdf:mptcp", 0.0, cdf))
        store.add_series(Series(rid, "latency-rr", 0, "goodput", 0.1, [1.0, 2.0]))
        data = collect_run(store, rid, with_history=False)
    (lat,) = [s for s in data.scenarios if s.name == "latency-rr"]
    assert lat.reps[0].cdfs == {"mptcp": cdf} and "latency-cdf:mptcp" not in lat.reps[0].subflows
    html = run_html(data)
    assert 'id="cost"' in html and "cost-ratio" in html and "cost-cpu" in html and "cost-cdf-1" in html
    assert "latency CDF" in html and "CPU seconds per GB moved" in html


def test_result_cv_ignores_nan_repetitions() -> None:
    """`lab run` printed 'unexpected AttributeError' when one repetition stored NaN (seen in the default suite)."""
    from mptcpkit.lab.store import Result

    r = Result("r", "backup", "stall_time", "s", "lower", [math.nan, 0.31, 0.19], None, None, True, "i")
    assert r.cv == pytest.approx(statistics.stdev([0.31, 0.19]) / 0.25)
    assert Result("r", "s", "m", "s", "lower", [math.nan, 1.0], None, None, True, "i").cv is None
