"""Issue 15 on the dashboard: a latest-against-baseline verdict on the Regressions page (in real Chromium), and
error pages that never show the database's absolute path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext
from test_dashboard import run_server
from test_report import add_run, browser, chromium_page_check

from mptcpkit.lab.report.verdict import baseline_of, label_pattern
from mptcpkit.lab.store import open_store

__all__ = ["browser"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str], Path]]:
    """Only two runs of a series (too few for change points), the second 10 % slower, plus an unrelated one."""
    folder = tmp_path_factory.mktemp("verdict")
    db = folder / "results.db"
    with open_store(str(db)) as store:
        ids = [
            add_run(store, "nightly-41", 18.8),
            add_run(store, "manual", 30.0),
            add_run(store, "nightly-42", 16.92),
        ]
    for url in run_server(str(db)):
        yield url, ids, folder


def test_label_pattern_and_baseline(tmp_path: Path) -> None:
    assert label_pattern("nightly-2026-11-29") == "nightly-#-#-#" == label_pattern("nightly-2027-1-2")
    assert label_pattern(None) is None
    with open_store(str(tmp_path / "r.db")) as store:
        add_run(store, "v1", 10.0)
        add_run(store, "other", 10.0)
        add_run(store, "v2", 10.0)
        runs = store.list_runs(limit=None)
        base = baseline_of(runs, runs[0])
        assert base is not None and base.label == "v1"
        assert baseline_of(runs, runs[-1]) is None


def test_latest_verdict_over_http(two_runs: tuple[str, list[str], Path]) -> None:
    url, ids, _ = two_runs
    with httpx.Client(base_url=url, timeout=60) as http:
        data = http.get("/api/regressions/latest").json()
        assert data["latest"]["label"] == "nightly-42" and data["baseline"]["label"] == "nightly-41"
        assert data["verdict"] == "regression" and data["counts"]["regression"] >= 1
        verdicts = {(m["scenario"], m["metric"]): m["verdict"] for m in data["metrics"]}
        assert verdicts[("simult-balanced", "goodput")] == "regression"
        assert http.get("/api/regressions").json() == []  # change points need ~5 runs a side: none yet
        pinned = http.get("/api/regressions/latest", params={"baseline": ids[1]}).json()
        assert pinned["pinned"] and pinned["baseline"]["label"] == "manual"
        assert http.get("/api/regressions/latest", params={"baseline": "nope"}).status_code == 404
        same = http.get("/regressions", params={"baseline": ids[2]})
        assert same.status_code == 400 and "latest run itself" in same.text


def test_latest_verdict_in_chromium(
    browser: BrowserContext, two_runs: tuple[str, list[str], Path], tmp_path: Path
) -> None:
    url, _, _ = two_runs
    seen = chromium_page_check(browser, url + "/regressions", tmp_path / "regressions.png")
    assert seen["status"] == 200 and not seen["errors"], seen["errors"]
    text = seen["text"]
    assert "Latest run against its baseline:" in text and "regression" in text
    assert "nightly-41" in text and "nightly-42" in text
    assert "simult-balanced / goodput" in text
    page = browser.new_page()
    try:
        page.goto(url + "/regressions", wait_until="load")
        assert page.inner_text("#latest-regressions .big").strip() != "0"
        page.select_option(
            "select[name=baseline]", label=page.locator("option", has_text="manual").inner_text()
        )
        page.click("form button[type=submit]")
        page.wait_for_load_state("load")
        assert "baseline=" in page.url and "pinned" in page.inner_text("#latest-verdict")
    finally:
        page.close()


def test_error_pages_hide_the_database_path(two_runs: tuple[str, list[str], Path], tmp_path: Path) -> None:
    url, _, folder = two_runs
    empty = tmp_path / "empty.db"
    open_store(str(empty)).close()
    with httpx.Client(base_url=url, timeout=60) as http:
        for path in ("/runs/nope", "/api/runs/nope", "/no/such", "/history?scenario=x&metric=y", "/"):
            body = http.get(path).text
            assert str(folder) not in body, path
    for empty_url in run_server(str(empty)):
        with httpx.Client(base_url=empty_url, timeout=60) as http:
            for path in ("/runs/latest", "/api/runs/latest", "/"):
                response = http.get(path)
                assert str(tmp_path) not in response.text, path
                assert "empty.db" in response.text or path == "/api/runs/latest", path
