"""Scenario files on real labs: timed actions (endpoints, backup flag, closing a subflow, sysctls) and the
restore after each repetition; a sweep run through the CLI, compared per case, and its report checked in
real headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.scenarios import build, parse_scenarios

pytestmark = pytest.mark.needs_root
MPTCPKIT = [sys.executable, "-m", "mptcpkit"]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

ACTIONS = """
name = "actions"
topology = "two-paths"
[links.path1]
rate = "20mbit"
delay = "2ms"
[links.path2]
rate = "20mbit"
delay = "2ms"
[[flows]]
duration = "3s"
[[actions]]
at = "0.5s"
do = "set-backup"
host = "client"
address = "10.0.2.1"
[[actions]]
at = "1s"
do = "close-subflow"
flow = "flow0"
link = "path2"
[[actions]]
at = "1.5s"
do = "remove-endpoint"
host = "client"
address = "10.0.2.1"
[[actions]]
at = "2s"
do = "add-endpoint"
host = "client"
address = "10.0.2.1"
flags = ["subflow"]
[[actions]]
at = "2.2s"
do = "set-sysctl"
host = "client"
key = "net.ipv4.tcp_ecn"
value = 1
[[metrics]]
kind = "goodput"
expect = "goodput_limit"
[[metrics]]
kind = "integrity"
expect = 1
pass = ">="
"""


def endpoints(lab: object, host: str) -> str:
    return str(lab.host(host).run(["ip", "mptcp", "endpoint", "show"]).stdout.strip())  # type: ignore[attr-defined]


def test_actions_apply_on_time_and_are_undone() -> None:
    (spec,) = parse_scenarios(ACTIONS, source="actions.toml")
    scenario = build(spec)
    with NetnsBackend().up(scenario.topology(), emulation="userspace") as lab:
        before = endpoints(lab, "client")
        ecn = lab.host("client").sysctl("net.ipv4.tcp_ecn")
        for _rep in range(2):
            outcome = scenario.run_once(lab)
            assert outcome.failure is None, outcome.failure
            times = outcome.details["actions"]
            assert len(times) == 5, times
            for (text, t), at in zip(
                sorted(times.items(), key=lambda kv: kv[1]), (0.5, 1.0, 1.5, 2.0, 2.2), strict=True
            ):
                assert at - 0.05 <= t <= at + 0.5, (text, t)
            # restored: the topology's endpoint (no backup flag) and the sysctl's old value
            assert endpoints(lab, "client").split() == before.split(), endpoints(lab, "client")
            assert lab.host("client").sysctl("net.ipv4.tcp_ecn") == ecn
            values = {m.metric: m.value for m in outcome.measurements}
            assert values["integrity"] == 1.0 and values["goodput"] > 5


def lab(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*MPTCPKIT, "lab", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def test_sweep_run_compare_history_and_report_in_chromium(tmp_path: Path) -> None:
    """The docs' sweep example as written (shorter: --scale 0.5, 2 repetitions, no self-check)."""
    from playwright.sync_api import sync_playwright

    db = str(tmp_path / "sweep.db")
    sweep = str(ROOT / "docs" / "examples" / "subflow-sweep.toml")
    common = ["--reps", "2", "--scale", "0.5", "--no-self-check", "--db", db]
    lab("run", "-s", sweep, *common, "--label", "a")
    lab("run", "-s", sweep, *common, "--label", "b")
    rows = json.loads(lab("compare", "a", "b", "--db", db, "--json", check=False).stdout)
    assert {r["scenario"] for r in rows} == {f"subflows[subflows={n}]" for n in (0, 1, 2)}
    shown = json.loads(lab("show", "b", "--db", db, "--json").stdout)
    params = {r["scenario"]: (r["sweep"], r["params"]) for r in shown["results"]}
    assert params["subflows[subflows=2]"] == ("subflows", {"subflows": 2})
    goodput = {r["scenario"]: r["median"] for r in shown["results"] if r["metric"] == "goodput"}
    assert goodput["subflows[subflows=0]"] < goodput["subflows[subflows=1]"] < goodput["subflows[subflows=2]"]
    lab("history", "-s", "subflows[subflows=1]", "-m", "goodput", "--db", db)
    html, png = tmp_path / "sweep.html", tmp_path / "png"
    lab("report", "--db", db, "-o", str(html), "--png", str(png))
    assert (png / "sweep-subflows.png").stat().st_size > 5000
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri(), wait_until="load")
            page.evaluate("window.mptcpkitDrawAll && window.mptcpkitDrawAll()")
            page.wait_for_function(
                "document.querySelectorAll('div.plot.sweep.drawn').length >= 1", timeout=30_000
            )
            assert page.evaluate("document.querySelectorAll('section.sweep').length") == 1
            traces = page.evaluate("document.querySelector('div.plot.sweep.drawn').data.map(t => t.name)")
            assert "expected" in traces and any(t.endswith("band") for t in traces)
            xs = page.evaluate(
                "document.querySelector('div.plot.sweep.drawn').data.filter(t => t.mode === 'lines+markers')[0].x"
            )
            assert xs == [0, 1, 2]
            assert page.locator("section.sweep svg.main-svg").count() >= 1
            page.locator("section.sweep").screenshot(path=str(ARTIFACTS / "sweep-report.png"))
            assert not errors, errors
        finally:
            browser.close()
    shutil.copy(png / "sweep-subflows.png", ARTIFACTS / "sweep-subflows.png")
