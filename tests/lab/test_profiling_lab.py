"""Profiling end to end on real namespaces with real perf: a CPU regression (MPTCP DSS checksums turned on) must
rise to the top of the differential view, in the terminal, the HTML report (checked in real chromium) and the
fleet bisect hook; without perf the run goes on without profiles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from test_report import browser

from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.profiling import perf
from mptcpkit.lab.profiling.bisect import first_bad_step_html, first_bad_step_profile
from mptcpkit.lab.profiling.cpu_bound import cpu_bound
from mptcpkit.lab.profiling.session import ProfileOptions
from mptcpkit.lab.profiling.storage import load_profiles
from mptcpkit.lab.profiling.views import scenario_diff
from mptcpkit.lab.report import build_html
from mptcpkit.lab.runner import Reporter, RunOptions, run
from mptcpkit.lab.store import open_store

__all__ = ["browser"]
pytestmark = pytest.mark.needs_root
MPTCPKIT = [sys.executable, "-m", "mptcpkit"]
CHECKSUM = ("csum_partial", "skb_checksum", "mptcp_update_data_checksum", "__mptcp_make_csum", "do_csum")


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


@dataclass
class Pair:
    db: str
    base: str
    new: str
    artifacts: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if not perf.probe().ok:
        pytest.skip(f"perf cannot record here: {perf.probe().reason}")
    if shutil.which("iperf3") is None:
        pytest.skip("iperf3 missing")
    tmp = tmp_path_factory.mktemp("prof")
    db = str(tmp / "r.db")
    ids = []
    with open_store(db) as store:
        for checksum in (False, True):
            options = RunOptions(
                [cpu_bound(checksum, seconds=3.0)],
                reps=3,
                self_check=False,
                seed=3,
                label=f"checksum-{'on' if checksum else 'off'}",
                profile=ProfileOptions(artifacts=tmp / "artifacts"),
            )
            notes = Notes()
            ids.append(run(options, NetnsBackend(), store, notes).run_id)
            assert not notes.notes, notes.notes
    yield Pair(db, ids[0], ids[1], tmp / "artifacts")


def test_profiles_are_stored_and_marked(pair: Pair) -> None:
    with open_store(pair.db) as store:
        profiles = load_profiles(store, pair.new)
        assert [p.rep for p in profiles] == [0, 1, 2]
        assert all(p.event == perf.probe().event for p in profiles)
        assert all(p.samples > 500 for p in profiles), [p.samples for p in profiles]
        assert all(1.0 < p.seconds < 3.0 for p in profiles), [
            p.seconds for p in profiles
        ]  # steady state only
        roots = {stack.split(";")[0] for p in profiles for stack in p.stacks}
        assert "iperf3" in roots  # the lab's own processes, found in its netns (others: "[other]COMM")
        (result,) = store.results(pair.new)
        assert result.details["profiled"] == [True, True, True]
        assert store.get_run(pair.new).environment["profile"]["event"] == perf.probe().event
    files = sorted((pair.artifacts / pair.new).iterdir())
    assert [f.name for f in files] == [f"mptcp-cpu-bound-rep{i}.folded.gz" for i in (1, 2, 3)]


def test_checksum_functions_top_the_differential_view(pair: Pair) -> None:
    with open_store(pair.db) as store:
        diff = scenario_diff(store, pair.base, pair.new, "mptcp-cpu-bound")
    assert diff is not None
    top = diff.self_changes[0]
    assert top.name in CHECKSUM and top.delta > 0.02 and top.confident, diff.to_json(5)["self"]
    rising = [c.name for c in diff.total_changes if c.delta > 0 and c.confident]  # callers rise too
    assert any(c in rising for c in CHECKSUM), rising
    assert any("csum" in c.name or "checksum" in c.name for c in diff.path_changes[:3] if c.delta > 0)


def test_compare_cli_profile_terminal_and_json(pair: Pair) -> None:
    done = subprocess.run(
        [*MPTCPKIT, "lab", "compare", pair.base, pair.new, "--db", pair.db, "--profile", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode in (0, 1), done.stderr
    doc = json.loads(done.stdout)
    (scenario,) = doc["profiles"]["scenarios"]
    assert scenario["self"][0]["name"] in CHECKSUM and scenario["self"][0]["confident"]
    text = subprocess.run(
        [*MPTCPKIT, "lab", "compare", pair.base, pair.new, "--db", pair.db, "--profile"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert "function (self)" in text.stdout and "csum" in text.stdout


def test_report_page_in_chromium(
    pair: Pair, browser: BrowserContext, tmp_path: Path, artifacts_dir: Path
) -> None:
    """The screenshot goes to artifacts/; copy it to docs/img/profile-diff.png to refresh the docs' picture."""
    with open_store(pair.db) as store:
        html = build_html(store, compare=(pair.base, pair.new))
    page_file = tmp_path / "compare.html"
    page_file.write_text(html)
    errors: list[str] = []
    page = browser.new_page()
    try:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_selector("#fg-0 svg g rect", timeout=20_000)
        frames = page.evaluate("document.querySelectorAll('#fg-0 svg g').length")
        mptcp = page.evaluate("document.querySelectorAll('#fg-0 rect.mptcp').length")
        red = page.evaluate(
            "Array.from(document.querySelectorAll('#fg-0 svg g')).filter(g => /csum/.test(g.textContent))"
            ".map(g => g.querySelector('rect').getAttribute('fill'))"
        )
        first_row = page.evaluate("document.querySelector('#profiles table.prof tbody tr td.fn').textContent")
        page.locator("#profiles").scroll_into_view_if_needed()
        page.locator("#profiles").screenshot(path=str(artifacts_dir / "profile-diff.png"))
    finally:
        page.close()
    assert not errors, errors
    assert frames > 20 and mptcp > 3
    assert any(first_row.strip().startswith(c) for c in CHECKSUM), first_row
    # Checksum frames grew: drawn red by the differential colour mapper (r=255 > g, b).
    assert red and any(f.startswith("rgb(220,") or f.startswith("rgb(255,") for f in red), red


def test_bisect_hook(pair: Pair) -> None:
    with open_store(pair.db) as store:
        doc = first_bad_step_profile(store, pair.base, pair.new, "mptcp-cpu-bound")
        assert doc is not None and doc["self"][0]["name"] in CHECKSUM and doc["flame"]["value"] > 0
        assert "fg-0" in first_bad_step_html(store, pair.base, pair.new, "mptcp-cpu-bound")
        assert first_bad_step_profile(store, pair.base, pair.new, "no-such-scenario") is None


def test_dashboard_compare_page_in_chromium(pair: Pair, browser: BrowserContext) -> None:
    """The dashboard's compare page over real HTTP carries the same differential view, drawn in chromium."""
    from test_dashboard import run_server

    errors: list[str] = []
    for url in run_server(pair.db):
        page = browser.new_page()
        try:
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{url}/compare?base={pair.base}&new={pair.new}", wait_until="load")
            page.wait_for_selector("#fg-0 svg g rect", timeout=20_000)
            heading = page.evaluate("document.querySelector('#profiles h2').textContent")
            first_row = page.evaluate(
                "document.querySelector('#profiles table.prof tbody tr td.fn').textContent"
            )
        finally:
            page.close()
        assert not errors, errors
        assert "Where the CPU time went" in heading
        assert any(first_row.strip().startswith(c) for c in CHECKSUM), first_row
