"""Lab reports: HTML (checked in real headless chromium), PNG, JUnit XML, Markdown, and the CLI glue's errors.

The test data is written straight into a temporary SQLite store (fast): twelve runs on one machine whose
goodput drops by 10 % from run "k7" on, with a failed scenario in the newest run.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, sync_playwright

from mptcpkit.errors import UsageError
from mptcpkit.lab.report import build_html, junit_xml, markdown_summary, report_cmd, write_png
from mptcpkit.lab.report.data import PassRule, RepSeries, group_series, parse_rule, pick_typical, result_state
from mptcpkit.lab.store import Result, Series, Store, open_store

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ENV = {
    "hostname": "lab1",
    "cpu_model": "Test CPU",
    "cpu_count": 2,
    "backend": "netns",
    "emulation": "userspace",
    "kernel_release": "6.18.0-test",
}
SELF_CHECK = [
    {
        "link": "path1",
        "quantity": "rate",
        "direction": "a->b",
        "configured": 10.0,
        "measured": 10.02,
        "error_pct": 0.2,
        "tolerance": 0.03,
        "unit": "Mbit/s",
        "ok": True,
        "note": "MSS 1448",
    },
    {
        "link": "path2",
        "quantity": "rtt",
        "direction": "both",
        "configured": 10.0,
        "measured": 10.9,
        "error_pct": 9.0,
        "tolerance": 0.05,
        "unit": "ms",
        "ok": False,
        "note": "min 10.2 max 12 ms",
    },
]
RUNS = 12
STEP = 6
"""Runs k1..k6 at the old level, k7..k12 10 % slower: the change point is at index 6 (run k7)."""


def _wave(i: int, n: int, level: float, phase: float) -> list[float]:
    return [level * (1.0 + 0.02 * math.sin(0.7 * k + phase + i)) for k in range(n)]


def add_run(
    store: Store,
    label: str,
    level: float,
    *,
    environment: dict[str, Any] | None = None,
    fail_failover: bool = False,
    reps: int = 5,
) -> str:
    """One run with three scenarios: a two-subflow MPTCP one, a plain TCP one and failover."""
    run = store.create_run(
        label, environment or ENV | {"self_check": {"simult-balanced": SELF_CHECK}}, {"reps": reps}
    )
    rid = run.run_id
    jitter = [0.0, 0.004, -0.004, 0.002, -0.002][:reps]
    good = [level * (1 + j) for j in jitter]
    store.add_result(
        Result(
            rid,
            "simult-balanced",
            "goodput",
            "Mbit/s",
            "higher",
            good,
            expected=18.8,
            score=sorted(good)[len(good) // 2] / 18.8,
            passed=True,
            rule="informational (no analytic expectation)",
            details={"description": "balanced 10/10", "failures": [], "self_check": SELF_CHECK},
        )
    )
    times = [40.0 / g for g in good]
    store.add_result(
        Result(
            rid,
            "simult-balanced",
            "transfer_time",
            "s",
            "lower",
            times,
            expected=2.5,
            score=sorted(times)[len(times) // 2] / 2.5,
            passed=max(times) <= 2.5,
            rule="median <= expected (2.5 s)",
            details={"description": "balanced 10/10", "failures": [], "self_check": SELF_CHECK},
        )
    )
    tcp = [47.8 + j for j in jitter]
    store.add_result(
        Result(
            rid,
            "tcp-baseline",
            "goodput",
            "Mbit/s",
            "higher",
            tcp,
            expected=47.8,
            score=1.0,
            passed=True,
            rule="median >= 0.97 x expected (46.37 Mbit/s)",
            details={"description": "plain TCP", "failures": []},
        )
    )
    failures = ["rep 2: the transfer stalled for 5.0 s after path1 went down"] if fail_failover else []
    ft = ([7.2, 9.8, 7.3, 7.25, 7.1] if fail_failover else [5.2, 5.4, 5.3, 5.25, 5.1])[:reps]
    store.add_result(
        Result(
            rid,
            "failover",
            "transfer_time",
            "s",
            "lower",
            ft,
            expected=6.7,
            score=ft[0] / 6.7,
            passed=not fail_failover,
            rule="median <= expected (6.7 s)"
            + ("; every repetition must succeed (1 failed)" if fail_failover else ""),
            details={"description": "path1 fails mid-transfer", "failures": failures},
        )
    )
    for rep in range(reps):
        n = 25
        halves = [_wave(rep, n, level / 2, 0.0), _wave(rep, n, level / 2, 1.5)]
        store.add_series(
            Series(rid, "simult-balanced", rep, "goodput", 0.1, [a + b for a, b in zip(*halves, strict=True)])
        )
        for k, half in enumerate(halves):
            store.add_series(
                Series(rid, "simult-balanced", rep, f"subflow:10.0.{k + 1}.1:4000{k}", 0.1, half)
            )
        store.add_series(Series(rid, "tcp-baseline", rep, "goodput", 0.1, _wave(rep, n, 47.8, 0.3)))
    store.finish_run(rid, "complete")
    time.sleep(0.002)  # distinct start times keep the history order exact
    return rid


def fill_store(store: Store) -> list[str]:
    """k1..k12; goodput 18.8 Mbit/s, then 16.9 (-10 %) from k7, +-0.4 % noise; k12's failover failed (slow,
    and a repetition failed)."""
    return [
        add_run(
            store,
            f"k{i + 1}",
            (18.8 if i < STEP else 16.92) * (1 + 0.004 * math.sin(1.7 * i)),
            fail_failover=i == RUNS - 1,
        )
        for i in range(RUNS)
    ]


@pytest.fixture
def store_path(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    path = str(tmp_path / "results.db")
    with open_store(path) as store:
        ids = fill_store(store)
    yield path, ids


@pytest.fixture(scope="module")
def browser() -> Iterator[BrowserContext]:
    """Debian's chromium, headless, driven by playwright (never a downloaded browser): one browser context
    per test module, so plotly.js is fetched from the dashboard once and then cached like in real use."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = b.new_context(viewport={"width": 1280, "height": 900})
            yield context
            context.close()
        finally:
            b.close()


def chromium_page_check(browser: BrowserContext, url: str, shot: Path) -> dict[str, Any]:
    """Open `url`; draw every lazy figure; screenshot; return console errors, plot counts and the text."""
    errors: list[str] = []
    page = browser.new_page()
    try:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        response = page.goto(url, wait_until="load")
        status = response.status if response is not None else None
        page.evaluate("window.mptcpkitDrawAll && window.mptcpkitDrawAll()")
        expected = page.evaluate("document.querySelectorAll('div.plot[data-fig]').length")
        page.wait_for_function(
            f"document.querySelectorAll('div.plot.drawn').length >= {expected}", timeout=30_000
        )
        svgs = page.evaluate("document.querySelectorAll('div.plot.drawn svg.main-svg').length")
        traces = page.evaluate(
            "Array.from(document.querySelectorAll('div.plot.drawn')).map(e => e.data.length)"
        )
        page.screenshot(path=str(shot), full_page=True)
        return {
            "errors": errors,
            "plots": expected,
            "svgs": svgs,
            "traces": traces,
            "status": status,
            "text": page.inner_text("body"),
        }
    finally:
        page.close()


# -- pure parts ---------------------------------------------------------------------------------------------


def test_parse_rule_reads_the_thresholds_the_runner_writes() -> None:
    assert parse_rule("median >= 0.97 x expected (46.39 Mbit/s)", 47.82) == PassRule(
        ">=", pytest.approx(46.3854)
    )
    assert parse_rule("median <= expected (3.421 s)", 3.421) == PassRule("<=", 3.421)
    assert parse_rule(
        "median <= expected (6.7 s); every repetition must succeed (1 failed)", 6.7
    ) == PassRule("<=", 6.7)
    assert parse_rule("informational (no analytic expectation)", 18.8) is None
    assert parse_rule("median >= expected (2 )", None) is None


def test_series_grouped_per_repetition_and_typical_is_the_median_one() -> None:
    rows = [
        Series("r", "s", rep, name, 0.1, [level] * 3)
        for rep, level in ((0, 10.0), (1, 30.0), (2, 20.0))
        for name in ("goodput", "subflow:10.0.1.1:1", "subflow:10.0.2.1:2")
    ]
    reps = group_series(rows)
    assert [r.rep for r in reps] == [0, 1, 2]
    assert list(reps[0].subflows) == ["10.0.1.1:1", "10.0.2.1:2"]
    typical = pick_typical(reps)
    assert typical is not None and typical.rep == 2
    assert pick_typical([]) is None
    only_subflows = RepSeries(0, 0.1, [], {"a": [1.0, 2.0], "b": [1.0, 2.0]})
    assert only_subflows.mean_goodput == pytest.approx(3.0)


# -- HTML ---------------------------------------------------------------------------------------------------


def test_html_report_is_self_contained_with_every_part(store_path: tuple[str, list[str]]) -> None:
    path, _ = store_path
    with open_store(path) as store:
        html = build_html(store, "latest")
    assert "<script src=" not in html and "cdn.plot.ly" not in html.split("</script>", 1)[1]
    assert html.count("Plotly.newPlot") == 1  # the one loader; plotly.js itself is inlined
    assert len(html) > 3_000_000  # plotly.js is in the file
    for needle in (
        "simult-balanced",
        "tcp-baseline",
        "failover",
        "Goodput over time",
        "Expected vs measured",
        "History on this machine",
        "Emulation self-check",
        "6.18.0-test",
        "What failed",
        "the transfer stalled for 5.0 s",
        '2<span class="of">/3',
    ):
        assert needle in html, needle
    assert 'regression</b> in goodput at run <span class="mono">k7' in html


def test_html_report_renders_in_chromium(
    store_path: tuple[str, list[str]], tmp_path: Path, artifacts_dir: Path, browser: BrowserContext
) -> None:
    path, _ = store_path
    out = tmp_path / "report.html"
    outcome = report_cmd("k12", output=out, db=path, say=lambda _: None)
    assert outcome.failed and outcome.exit_code == 1 and outcome.files == [out]
    seen = chromium_page_check(browser, out.as_uri(), artifacts_dir / "report-run.png")
    assert seen["errors"] == []
    # per scenario: goodput (2 with series) + expected (3) + history (3) figures
    assert seen["plots"] == 8 and seen["svgs"] >= 8
    assert min(seen["traces"]) >= 1
    assert "2/3" in seen["text"].replace("\n", "")


def test_compare_report_renders_in_chromium(
    store_path: tuple[str, list[str]], tmp_path: Path, artifacts_dir: Path, browser: BrowserContext
) -> None:
    path, _ = store_path
    out = tmp_path / "compare.html"
    outcome = report_cmd(compare=("k1", "k12"), output=out, db=path, say=lambda _: None)
    assert outcome.failed  # goodput regressed by 10 %
    html = out.read_text()
    # goodput, transfer time, and failover's transfer time (7.25 s against 5.25 s)
    assert html.count('<span class="badge v-regression">regression</span>') == 3
    assert html.count('<span class="badge v-improvement">') == 0
    seen = chromium_page_check(browser, out.as_uri(), artifacts_dir / "report-compare.png")
    assert seen["errors"] == [] and seen["plots"] == 1 and seen["svgs"] >= 1


# -- PNG, JUnit, Markdown -----------------------------------------------------------------------------------


def test_png_files_for_every_plot(store_path: tuple[str, list[str]], tmp_path: Path) -> None:
    path, _ = store_path
    with open_store(path) as store:
        files = write_png(store, "k12", tmp_path / "png")
        compare_files = write_png(store, None, tmp_path / "cmp", compare=("k1", "k12"))
    names = sorted(f.name for f in files)
    assert names == sorted(
        [
            "simult-balanced-goodput.png",
            "simult-balanced-expected.png",
            "simult-balanced-history.png",
            "tcp-baseline-goodput.png",
            "tcp-baseline-expected.png",
            "tcp-baseline-history.png",
            "failover-expected.png",
            "failover-history.png",
        ]
    )
    for f in [*files, *compare_files]:
        data = f.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert [f.name for f in compare_files] == ["compare.png"]


def test_junit_one_case_per_scenario_failure_names_metric_and_rule(store_path: tuple[str, list[str]]) -> None:
    path, _ = store_path
    with open_store(path) as store:
        root = ET.fromstring(junit_xml(store, "k12"))
        regressed = ET.fromstring(junit_xml(store, compare=("k1", "k12")))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "3" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"simult-balanced", "tcp-baseline", "failover"}
    failure = cases["failover"].find("failure")
    assert failure is not None
    assert "transfer_time" in failure.get("message", "") and "median <= expected (6.7 s)" in failure.get(
        "message", ""
    )
    assert "1 failed repetition" in failure.get("message", "")
    assert "the transfer stalled" in (failure.text or "")
    assert cases["tcp-baseline"].find("failure") is None
    csuite = regressed.find("testsuite")
    assert csuite is not None
    ccases = {c.get("name"): c for c in csuite.iter("testcase")}
    cfail = ccases["simult-balanced"].find("failure")
    assert cfail is not None and "goodput regressed" in cfail.get("message", "")
    assert ccases["tcp-baseline"].find("failure") is None


def test_markdown_summaries_for_pull_requests(store_path: tuple[str, list[str]]) -> None:
    path, _ = store_path
    with open_store(path) as store:
        run_md = markdown_summary(store, "k12")
        ok_md = markdown_summary(store, "k11")
        cmp_md = markdown_summary(store, compare=("k1", "k12"))
        aa_md = markdown_summary(store, compare=("k1", "k2"))
    for text in (run_md, ok_md, cmp_md, aa_md):
        assert text.isascii()  # no emoji: renders the same in every CI system
    assert run_md.startswith("### mptcpkit lab run `k12`") and "FAILED, 2 of 3 scenarios passed" in run_md
    assert "- **failover**: transfer_time median" in run_md and "| failover | transfer_time |" in run_md
    assert "PASSED, 3 of 3" in ok_md
    assert "### mptcpkit lab compare: REGRESSION" in cmp_md
    regression_rows = [line for line in cmp_md.splitlines() if "**regression**" in line]
    assert len(regression_rows) == 3  # goodput down, both transfer times up
    assert any("| simult-balanced | goodput (higher is better)" in line for line in regression_rows)
    assert "no regression" in aa_md.splitlines()[0]


# -- CLI glue: clear errors ---------------------------------------------------------------------------------


def test_report_cmd_errors_are_usage_errors(store_path: tuple[str, list[str]], tmp_path: Path) -> None:
    path, _ = store_path
    empty = str(tmp_path / "empty.db")
    open_store(empty).close()
    html = tmp_path / "r.html"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"run_ref": "latest", "output": html, "db": str(tmp_path / "missing.db")}, "no results database at"),
        ({"run_ref": "latest", "output": html, "db": empty}, "no runs in results database"),
        ({"run_ref": "zz!!", "output": html, "db": path}, "no run 'zz!!'"),
        ({"run_ref": "no-such-label", "output": html, "db": path}, "not a run id, unique id prefix or label"),
        ({"compare": ("k1", "nope"), "output": html, "db": path}, "no run 'nope'"),
        ({"run_ref": "k1", "db": path}, "nothing to write"),
        ({"run_ref": "k1", "compare": ("k1", "k2"), "output": html, "db": path}, "not both"),
        ({"run_ref": "k1", "output": tmp_path / "nodir" / "r.html", "db": path}, "does not exist"),
        ({"run_ref": "k1", "output": tmp_path, "db": path}, "is a directory"),
    ]
    for kwargs, message in cases:
        with pytest.raises(UsageError, match=None) as info:
            report_cmd(**kwargs, say=lambda _: None)
        assert message in str(info.value), (kwargs, str(info.value))
    assert not (tmp_path / "missing.db").exists()  # a mistyped path is not created


def test_report_cmd_writes_everything_and_stdout(
    store_path: tuple[str, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store_path
    said: list[str] = []
    outcome = report_cmd(
        "k11",
        output=tmp_path / "r.html",
        png_dir=tmp_path / "png",
        junit=tmp_path / "j.xml",
        markdown=Path("-"),
        db=path,
        say=said.append,
    )
    assert not outcome.failed and outcome.exit_code == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000 and (tmp_path / "j.xml").exists()
    assert len(list((tmp_path / "png").glob("*.png"))) == 8
    assert capsys.readouterr().out.startswith("### mptcpkit lab run `k11`")
    assert any("wrote" in line and "r.html" in line for line in said)


@pytest.mark.needs_root
def test_real_lab_run_reports_its_subflows(
    tmp_path: Path, artifacts_dir: Path, browser: BrowserContext
) -> None:
    """One small real run (one scenario, two repetitions) through the CLI, then its report in chromium."""
    db = str(tmp_path / "real.db")
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mptcpkit",
            "lab",
            "run",
            "-s",
            "simult-balanced",
            "--reps",
            "2",
            "--db",
            db,
            "--label",
            "real",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert time.monotonic() - started < 90
    out = tmp_path / "real.html"
    report_cmd("real", output=out, db=db, say=lambda _: None)
    seen = chromium_page_check(browser, out.as_uri(), artifacts_dir / "report-real-run.png")
    assert seen["errors"] == []
    assert seen["plots"] == 2
    # the goodput figure first: per repetition with series, 2 subflows + the goodput line
    with open_store(db) as store:
        reps = {s.rep for s in store.series(store.get_run("real").run_id)}
        failures = [
            f for r in store.results(store.get_run("real").run_id) for f in r.details.get("failures", [])
        ]
    assert reps and seen["traces"][0] == 3 * len(reps)
    for failure in failures:  # a failed repetition (a busy box) is shown, not hidden
        assert failure.split(":")[0] in seen["text"]


def test_run_without_results_renders_its_state(tmp_path: Path) -> None:
    """A run that died before its first result (status failed) still gets a report, JUnit and Markdown."""
    db = str(tmp_path / "r.db")
    with open_store(db) as store:
        run = store.create_run("broken", ENV, {"reps": 3})
        store.finish_run(run.run_id, "failed")
        html = build_html(store, "broken")
        xml = ET.fromstring(junit_xml(store, "broken"))
        md = markdown_summary(store, "broken")
    assert "This run has no results: it did not finish (failed)." in html
    suite = xml.find("testsuite")
    assert suite is not None and suite.get("tests") == "0"
    assert "FAILED, 0 of 0 scenarios passed" in md and "status `failed`" in md
    outcome = report_cmd("broken", markdown=tmp_path / "m.md", db=db, say=lambda _: None)
    assert outcome.exit_code == 1


def test_result_state_tells_a_missed_rule_from_a_failed_repetition() -> None:
    def result(median: float, rule: str, passed: bool) -> Result:
        return Result("r", "s", "m", "s", "lower", [median], expected=6.7, passed=passed, rule=rule)

    assert result_state(result(5.0, "median <= expected (6.7 s)", True)) == "pass"
    assert result_state(result(7.0, "median <= expected (6.7 s)", False)) == "fail"
    assert result_state(
        result(5.0, "median <= expected (6.7 s); every repetition must succeed (1 failed)", False)
    ) == ("warn")
    assert (
        result_state(result(0.4, "informational (no analytic expectation); every repetition ...", False))
        == "warn"
    )
    assert result_state(result(0.0, "the scenario must complete", False)) == "fail"
