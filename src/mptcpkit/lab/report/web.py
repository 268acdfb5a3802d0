"""The read-only web dashboard: runs, run reports, comparisons, history with change points, regressions.

Server-rendered Jinja2 pages with the same templates and figures as the HTML report; plotly.js is served from
the installed plotly package, so nothing is built or downloaded. Every route is a GET: the dashboard never
writes to the database. JSON twins of each page live under /api/.

    serve("results.db", "127.0.0.1", 8080)
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mptcpkit.errors import EnvironmentProblem, MptcpkitError, UsageError
from mptcpkit.lab.analysis import HistoryChange, history_change_points
from mptcpkit.lab.analysis.runs import run_brief
from mptcpkit.lab.report import figures
from mptcpkit.lab.report.data import (
    ChangeMark,
    MetricHistory,
    collect_compare,
    collect_history,
    collect_run,
    run_title,
)
from mptcpkit.lab.report.html import plotly_js, profile_section, render, run_html
from mptcpkit.lab.report.verdict import latest_verdict
from mptcpkit.lab.store import Result, Run, Store, open_store, result_to_json, run_to_json

PLOTLY_PATH = "/assets/plotly.min.js"
NAV = (
    ("/", "Runs", "runs"),
    ("/compare", "Compare", "compare"),
    ("/history", "History", "history"),
    ("/regressions", "Regressions", "regressions"),
    ("/fleet", "Fleet", "fleet"),
)
RUNS_PAGE = 50


class Links:
    """URL builders the templates call (the static report has none: it links only inside itself)."""

    @staticmethod
    def run(ref: str) -> str:
        return "/runs/" + quote(ref, safe="")

    @staticmethod
    def history(scenario: str, metric: str, env: str | None = None) -> str:
        query = {"scenario": scenario, "metric": metric} | ({"env": env} if env else {})
        return "/history?" + urlencode(query)

    @staticmethod
    def compare(base: str, new: str) -> str:
        return "/compare?" + urlencode({"base": base, "new": new})


@dataclass(slots=True)
class RunRow:
    """A line of the runs list."""

    run: Run
    scenarios: int
    passed: int
    previous: Run | None
    """The previous run on the same machine: the natural base to compare with."""

    @property
    def failed(self) -> int:
        return self.scenarios - self.passed


def run_rows(store: Store, limit: int | None) -> list[RunRow]:
    runs = store.list_runs(limit=None)
    rows = []
    for i, run in enumerate(runs if limit is None else runs[:limit]):
        results = store.results(run.run_id)
        by_scenario: dict[str, bool] = {}
        for r in results:
            by_scenario[r.scenario] = (
                by_scenario.get(r.scenario, True) and r.passed and not r.details.get("failures")
            )
        previous = next((o for o in runs[i + 1 :] if o.environment_key == run.environment_key), None)
        rows.append(RunRow(run, len(by_scenario), sum(by_scenario.values()), previous))
    return rows


class Dashboard:
    """The app's state: one open store and a small cache of the (slow-ish) all-metrics change-point scan."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._regressions: tuple[str, list[HistoryChange]] | None = None

    def fingerprint(self) -> str:
        """Changes whenever a run is added or finishes: the cache key of derived data."""
        runs = self.store.list_runs(limit=None)
        text = "|".join(f"{r.run_id}:{r.status}" for r in runs)
        return hashlib.sha256(text.encode()).hexdigest()

    def history_changes(self) -> list[HistoryChange]:
        """Every change point of every (scenario, metric, machine), newest first."""
        key = self.fingerprint()
        with self._lock:
            if self._regressions is not None and self._regressions[0] == key:
                return self._regressions[1]
            found: list[HistoryChange] = []
            for scenario, metric in self.store.metrics():
                found += history_change_points(self.store, scenario, metric)
            found.sort(key=lambda h: h.run.started_at, reverse=True)
            self._regressions = (key, found)
            return found

    @property
    def shown_where(self) -> str:
        """The database as pages show it: a file name, never the absolute path on the server."""
        where = self.store.where
        return where if "://" in where else where.rstrip("/").rsplit("/", 1)[-1]

    def scrub(self, text: str | None) -> str | None:
        """`text` with the database's absolute path (and its directory) replaced by the shown name."""
        if text is None or "://" in self.store.where:
            return text
        where = self.store.where
        text = text.replace(where, self.shown_where)
        directory = where.rsplit("/", 1)[0]
        return text.replace(directory + "/", "") if directory else text

    def nav(self, active: str) -> dict[str, Any]:
        return {"links": NAV, "active": active, "where": self.shown_where}

    def page(self, template: str, active: str, **context: Any) -> HTMLResponse:
        html = render(template, plotly_src=PLOTLY_PATH, nav=self.nav(active), links=Links, **context)
        return HTMLResponse(html)


def _param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = _param(request, name)
    if raw is None:
        return default
    if raw == "all":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be a number or 'all', not {raw!r}") from None
    if value < 1:
        raise UsageError(f"{name} must be at least 1")
    return value


def _history_to_json(h: MetricHistory) -> dict[str, Any]:
    return {
        "scenario": h.scenario,
        "metric": h.metric,
        "unit": h.unit,
        "direction": h.direction,
        "environment_key": h.environment_key,
        "points": [
            {
                "run_id": p.run_id,
                "label": p.label,
                "started_at": p.started_at,
                "median": p.median,
                "min": p.minimum,
                "max": p.maximum,
                "n": p.n,
            }
            for p in h.points
        ],
        "change_points": [_mark_to_json(c) for c in h.changes],
    }


def _mark_to_json(c: ChangeMark) -> dict[str, Any]:
    return {
        "index": c.index,
        "run_id": c.run_id,
        "label": c.label,
        "kind": c.kind,
        "change_pct": c.change_pct,
        "before_median": c.before_median,
        "after_median": c.after_median,
        "p_value": c.p_value,
    }


def make_app(db_url: str | None = None, *, store: Store | None = None) -> Starlette:
    """The dashboard app over the results database `db_url` (SQLite path or postgresql:// URL).

    Pass an open `store` instead to share one (tests); the app then leaves closing it to the caller.
    """
    owned = store is None
    dash = Dashboard(store if store is not None else open_store(db_url, create=False))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:
            dash.store.close()

    def handle(api: bool) -> Callable[[Callable[[Request], Response]], Callable[[Request], Response]]:
        """Turn the user's mistakes (unknown run, bad parameter) into a 404/400 page or JSON error."""

        def wrap(view: Callable[[Request], Response]) -> Callable[[Request], Response]:
            @functools.wraps(view)
            def endpoint(request: Request) -> Response:
                try:
                    return view(request)
                except MptcpkitError as exc:
                    if not isinstance(exc, UsageError):
                        status = 503
                    elif exc.message.startswith(("no run", "no results")):
                        status = 404
                    else:
                        status = 400
                    message, hint = dash.scrub(exc.message), dash.scrub(exc.hint)
                    if api:
                        return JSONResponse({"error": message, "hint": hint}, status_code=status)
                    html = render(
                        "error.html",
                        plotly_src=PLOTLY_PATH,
                        nav=dash.nav(""),
                        links=Links,
                        status=status,
                        message=message,
                        hint=hint,
                        plots=False,
                    )
                    return HTMLResponse(html, status_code=status)

            return endpoint

        return wrap

    # -- pages -----------------------------------------------------------------------------------------------

    @handle(api=False)
    def runs_page(request: Request) -> Response:
        limit = _int_param(request, "limit", RUNS_PAGE)
        rows = run_rows(dash.store, limit)
        total = len(dash.store.list_runs(limit=None))
        return dash.page("web_runs.html", "runs", rows=rows, total=total, limit=limit, plots=False)

    @handle(api=False)
    def run_page(request: Request) -> Response:
        data = collect_run(dash.store, request.path_params["ref"])
        html = run_html(data, plotly_src=PLOTLY_PATH, nav=dash.nav("runs"), links=Links)
        return HTMLResponse(html)

    @handle(api=False)
    def compare_page(request: Request) -> Response:
        base, new = _param(request, "base"), _param(request, "new")
        runs = dash.store.list_runs(limit=200)
        if base is None or new is None:
            if len(runs) >= 2 and base is None and new is None:
                base, new = runs[1].run_id, runs[0].run_id
            else:
                return dash.page(
                    "web_compare.html", "compare", runs=runs, base=base, new=new, data=None, fig=None
                )
        data = collect_compare(dash.store, base, new)
        return dash.page(
            "web_compare.html",
            "compare",
            runs=runs,
            base=data.base.run_id,
            new=data.new.run_id,
            data=data,
            fig=figures.compare_figure(data.ordered),
            profile_html=profile_section(dash.store, data),
        )

    @handle(api=False)
    def history_page(request: Request) -> Response:
        metrics = dash.store.metrics()
        scenario, metric, env = _param(request, "scenario"), _param(request, "metric"), _param(request, "env")
        if scenario is None and metric is None and metrics:
            scenario, metric = metrics[0]
        history = fig = None
        envs: list[str] = []
        if scenario is not None and metric is not None:
            if (scenario, metric) not in metrics:
                raise UsageError(f"no results for scenario {scenario!r}, metric {metric!r}")
            envs = sorted({run.environment_key for run, _ in dash.store.history(scenario, metric)})
            latest = dash.store.list_runs(limit=1)
            history = collect_history(dash.store, scenario, metric, env, latest[0].run_id if latest else None)
            fig = figures.history_figure([history]) if history is not None else None
        return dash.page(
            "web_history.html",
            "history",
            metrics=metrics,
            scenario=scenario,
            metric=metric,
            env=env,
            envs=envs,
            history=history,
            fig=fig,
        )

    @handle(api=False)
    def regressions_page(request: Request) -> Response:
        changes = dash.history_changes()
        latest = dash.store.list_runs(limit=1)
        failing: list[Result] = []
        if latest:
            failing = [r for r in dash.store.results(latest[0].run_id) if not r.passed]
        pinned = _param(request, "baseline")
        return dash.page(
            "web_regressions.html",
            "regressions",
            verdict=latest_verdict(dash.store, pinned),
            runs=dash.store.list_runs(limit=200),
            pinned=pinned,
            regressions=[c for c in changes if c.kind == "regression"],
            improvements=[c for c in changes if c.kind == "improvement"],
            latest=latest[0] if latest else None,
            failing=failing,
            run_title=run_title,
            plots=False,
        )

    # -- JSON --------------------------------------------------------------------------------------------------

    @handle(api=True)
    def api_runs(request: Request) -> Response:
        rows = run_rows(dash.store, _int_param(request, "limit", RUNS_PAGE))
        return JSONResponse([run_brief(r.run) | {"scenarios": r.scenarios, "passed": r.passed} for r in rows])

    @handle(api=True)
    def api_run(request: Request) -> Response:
        run = dash.store.get_run(request.path_params["ref"])
        return JSONResponse(run_to_json(dash.store, run.run_id))

    @handle(api=True)
    def api_compare(request: Request) -> Response:
        base, new = _param(request, "base"), _param(request, "new")
        if base is None or new is None:
            raise UsageError("give both ?base= and ?new= (run ids, labels or 'latest')")
        data = collect_compare(dash.store, base, new)
        return JSONResponse(
            {
                "base": run_brief(data.base),
                "new": run_brief(data.new),
                "metrics": [r.to_json() for r in data.ordered],
            }
        )

    @handle(api=True)
    def api_history(request: Request) -> Response:
        scenario, metric = _param(request, "scenario"), _param(request, "metric")
        if scenario is None or metric is None:
            raise UsageError("give ?scenario= and ?metric=")
        history = collect_history(dash.store, scenario, metric, _param(request, "env"))
        if history is None:
            raise UsageError(f"no results for scenario {scenario!r}, metric {metric!r}")
        return JSONResponse(_history_to_json(history))

    @handle(api=True)
    def api_regressions(request: Request) -> Response:
        return JSONResponse([c.to_json() for c in dash.history_changes() if c.kind == "regression"])

    @handle(api=True)
    def api_latest_verdict(request: Request) -> Response:
        verdict = latest_verdict(dash.store, _param(request, "baseline"))
        return JSONResponse(verdict.to_json() if verdict is not None else None)

    @handle(api=True)
    def api_result_samples(request: Request) -> Response:
        run = dash.store.get_run(request.path_params["ref"])
        return JSONResponse([result_to_json(r) for r in dash.store.results(run.run_id)])

    def plotly_asset(request: Request) -> Response:
        body = plotly_js()
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:16] + '"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"etag": etag})
        return Response(
            body,
            media_type="application/javascript",
            headers={"cache-control": "public, max-age=86400", "etag": etag},
        )

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "page not found" if status == 404 else str(getattr(exc, "detail", "error"))
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=status)
        html = render(
            "error.html",
            plotly_src=PLOTLY_PATH,
            nav=dash.nav(""),
            links=Links,
            status=status,
            message=f"{request.url.path}: {message}",
            hint="start from the runs list",
            plots=False,
        )
        return HTMLResponse(html, status_code=status)

    async def internal_error(request: Request, exc: Exception) -> Response:
        """A bug, not the user's mistake: a plain 500 without details (they stay in the server's log)."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": "internal error"}, status_code=500)
        return HTMLResponse("<!doctype html><title>500</title><p>internal error</p>", status_code=500)

    routes = [
        Route("/", runs_page),
        Route("/runs/{ref}", run_page),
        Route("/compare", compare_page),
        Route("/history", history_page),
        Route("/regressions", regressions_page),
        Route("/api/runs", api_runs),
        Route("/api/runs/{ref}", api_run),
        Route("/api/runs/{ref}/results", api_result_samples),
        Route("/api/compare", api_compare),
        Route("/api/history", api_history),
        Route("/api/regressions", api_regressions),
        Route("/api/regressions/latest", api_latest_verdict),
        Route(PLOTLY_PATH, plotly_asset),
    ]
    from mptcpkit.lab.fleet import web as fleet_web

    routes += fleet_web.routes(db_url, dash, handle)  # the queue and per-machine history (PostgreSQL)
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: not_found, Exception: internal_error},
    )


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so a busy port or bad address is a clear error, not a log line."""
    if not 0 <= port <= 65535:
        raise UsageError(f"port {port} is out of range (0-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(
            f"cannot listen on {host!r}: {exc.strerror}", hint="use an address such as 127.0.0.1"
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = "pick another with --port" if exc.errno == errno.EADDRINUSE else None
        raise EnvironmentProblem(f"cannot listen on {host}:{port}: {exc.strerror}", hint=hint) from exc
    sock.set_inheritable(True)
    return sock


def serve(
    db: str | None,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run the dashboard until interrupted (Ctrl-C); `ready` gets the URL once it listens."""
    import uvicorn

    sock = bind(host, port)
    try:
        app = make_app(db)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        bound = sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        if ready is not None:
            ready(f"http://{shown}:{bound[1]}/")
        server.run(sockets=[sock])
    finally:
        sock.close()
