"""The web dashboard over real HTTP (uvicorn on 127.0.0.1, a random port) and in real headless chromium."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import BrowserContext
from test_report import add_run, browser, chromium_page_check, fill_store

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.lab.report import make_app, serve_cmd
from mptcpkit.lab.report.web import bind
from mptcpkit.lab.store import open_store

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_report


@dataclass
class Server:
    url: str
    ids: list[str]


def run_server(db: str) -> Iterator[str]:
    """uvicorn serving make_app(db) in a thread on a free port; stopped (and joined) at the end."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(make_app(db), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = str(tmp_path_factory.mktemp("dash") / "results.db")
    with open_store(db) as store:
        ids = fill_store(store)
    for url in run_server(db):
        yield Server(url, ids)


@pytest.fixture
def empty_server(tmp_path: Path) -> Iterator[str]:
    db = str(tmp_path / "empty.db")
    open_store(db).close()
    yield from run_server(db)


# -- HTTP -----------------------------------------------------------------------------------------------------


def test_pages_answer_over_http(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        runs = http.get("/")
        assert runs.status_code == 200 and "text/html" in runs.headers["content-type"]
        assert all(rid in runs.text for rid in server.ids) and "compare with previous" in runs.text
        run = http.get("/runs/k12")
        assert run.status_code == 200 and "What failed" in run.text and "History on this machine" in run.text
        assert '<script src="/assets/plotly.min.js">' in run.text and len(run.text) < 1_000_000  # not inlined
        assert http.get(f"/runs/{server.ids[0][:6]}").status_code == 200  # id prefix
        compare = http.get("/compare", params={"base": "k1", "new": "k12"})
        assert compare.status_code == 200 and compare.text.count('class="badge v-regression"') == 3
        default = http.get("/compare")  # the newest two runs
        assert default.status_code == 200 and "Change per metric" in default.text
        history = http.get("/history", params={"scenario": "simult-balanced", "metric": "goodput"})
        assert (
            history.status_code == 200 and "introduced by run" in history.text and ">k7</a>" in history.text
        )
        regressions = http.get("/regressions")
        assert regressions.status_code == 200
        assert "simult-balanced / goodput" in regressions.text and "failover" in regressions.text
        asset = http.get("/assets/plotly.min.js")
        assert asset.status_code == 200 and len(asset.content) > 3_000_000
        again = http.get("/assets/plotly.min.js", headers={"if-none-match": asset.headers["etag"]})
        assert again.status_code == 304


def test_json_endpoints(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        runs = http.get("/api/runs").json()
        assert [r["label"] for r in runs] == [f"k{i}" for i in range(12, 0, -1)]
        assert runs[0]["scenarios"] == 3 and runs[0]["passed"] == 2
        run = http.get("/api/runs/latest").json()
        assert run["label"] == "k12" and {r["scenario"] for r in run["results"]} == {
            "simult-balanced",
            "tcp-baseline",
            "failover",
        }
        cmp = http.get("/api/compare", params={"base": "k1", "new": "k12"}).json()
        verdicts = {(m["scenario"], m["metric"]): m["verdict"] for m in cmp["metrics"]}
        assert verdicts[("simult-balanced", "goodput")] == "regression"
        assert verdicts[("tcp-baseline", "goodput")] == "unchanged"
        hist = http.get("/api/history", params={"scenario": "simult-balanced", "metric": "goodput"}).json()
        assert len(hist["points"]) == 12
        assert [(c["index"], c["label"], c["kind"]) for c in hist["change_points"]] == [
            (6, "k7", "regression")
        ]
        regs = http.get("/api/regressions").json()
        assert {(r["scenario"], r["metric"], r["run"]["label"]) for r in regs} == {
            ("simult-balanced", "goodput", "k7"),
            ("simult-balanced", "transfer_time", "k7"),
        }


def test_user_mistakes_get_clear_answers_and_nothing_writes(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        missing = http.get("/runs/zz!!")
        assert missing.status_code == 404 and "no run &#39;zz!!&#39;" in missing.text
        assert "Traceback" not in missing.text
        api_missing = http.get("/api/runs/nolabel")
        assert api_missing.status_code == 404 and "no run 'nolabel'" in api_missing.json()["error"]
        bad = http.get("/api/compare", params={"base": "k1"})
        assert bad.status_code == 400 and "give both" in bad.json()["error"]
        assert http.get("/history", params={"scenario": "nope", "metric": "goodput"}).status_code == 404
        assert http.get("/?limit=zero").status_code == 400
        assert http.get("/no/such/page").status_code == 404
        for path in ("/", "/runs/k1", "/api/runs"):  # read-only: no method but GET (and HEAD)
            assert http.post(path).status_code == 405
            assert http.delete(path).status_code == 405


def test_empty_database_pages(empty_server: str) -> None:
    with httpx.Client(base_url=empty_server, timeout=60) as http:
        assert "No runs yet" in http.get("/").text
        assert "needs two runs" in http.get("/compare").text
        assert "No results yet" in http.get("/history").text
        assert http.get("/regressions").status_code == 200
        latest = http.get("/runs/latest")
        assert latest.status_code == 404 and "no runs in results database" in latest.text
        assert http.get("/api/runs").json() == []


def test_dashboard_over_postgresql(pg_url: str) -> None:
    with open_store(pg_url) as store:
        add_run(store, "pg1", 18.8)
        add_run(store, "pg2", 18.7)
    for url in run_server(pg_url):
        with httpx.Client(base_url=url, timeout=60) as http:
            assert [r["label"] for r in http.get("/api/runs").json()] == ["pg2", "pg1"]
            page = http.get("/compare", params={"base": "pg1", "new": "pg2"})
            assert page.status_code == 200 and "unchanged" in page.text


def test_serve_cmd_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results database at"):
        serve_cmd(str(tmp_path / "missing.db"), "127.0.0.1", 0)
    db = str(tmp_path / "r.db")
    open_store(db).close()
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(EnvironmentProblem, match=r"cannot listen on 127\.0\.0\.1"):
            serve_cmd(db, "127.0.0.1", busy.getsockname()[1])
    finally:
        busy.close()
    with pytest.raises(UsageError, match="out of range"):
        serve_cmd(db, "127.0.0.1", 70000)


# -- real browser -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "path", "plots"),
    [
        ("runs", "/", 0),
        ("run", "/runs/k12", 8),
        ("compare", "/compare?base=k1&new=k12", 1),
        ("history", "/history?scenario=simult-balanced&metric=goodput", 1),
        ("regressions", "/regressions", 0),
        ("not-found", "/runs/zz!!", 0),
    ],
)
def test_pages_in_chromium(
    server: Server, artifacts_dir: Path, browser: BrowserContext, name: str, path: str, plots: int
) -> None:
    seen = chromium_page_check(browser, server.url + path, artifacts_dir / f"dashboard-{name}.png")
    if name == "not-found":
        assert seen["status"] == 404
        seen["errors"] = [e for e in seen["errors"] if "404" not in e]  # the page's own status line
    else:
        assert seen["status"] == 200
    assert seen["errors"] == []
    assert seen["plots"] == plots and seen["svgs"] >= plots
