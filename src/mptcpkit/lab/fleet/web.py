"""Dashboard pages of the fleet: the queue at a glance, and each machine's run history (within its class)."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mptcpkit.errors import UsageError
from mptcpkit.lab.store import Run, Store

View = Callable[[Request], Response]


def machine_runs(store: Store, machine_id: str, limit: int = 200) -> list[Run]:
    """Runs a fleet worker recorded on this machine, newest first."""
    runs = store.list_runs(limit=None)
    return [r for r in runs if (r.environment.get("fleet") or {}).get("machine_id") == machine_id][:limit]


def routes(db_url: str | None, dash: Any, handle: Callable[[bool], Callable[[View], View]]) -> list[Route]:
    """/fleet, /fleet/machines/{id}, /api/fleet; `dash` is the dashboard (store, page rendering)."""
    fleet_holder: list[Any] = []

    def fleet() -> Any:
        if not db_url or not db_url.startswith(("postgresql://", "postgres://")):
            raise UsageError("the fleet lives in PostgreSQL: serve the dashboard with --db postgresql://...")
        if not fleet_holder:
            from mptcpkit.lab.fleet.queue import Fleet

            fleet_holder.append(Fleet(db_url))
        return fleet_holder[0]

    def snapshot() -> dict[str, Any]:
        f = fleet()
        now = datetime.datetime.now(datetime.UTC)
        machines = f.machines()
        for m in machines:
            seen = datetime.datetime.fromisoformat(m["last_seen"]) if m["last_seen"] else None
            m["age_s"] = round((now - seen).total_seconds()) if seen else None
        jobs = f.jobs(limit=200)
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j.state] = counts.get(j.state, 0) + 1
        return {"jobs": jobs, "machines": machines, "counts": counts}

    @handle(False)
    def fleet_page(request: Request) -> Response:
        response: Response = dash.page("web_fleet.html", "fleet", plots=False, **snapshot())
        return response

    @handle(False)
    def machine_page(request: Request) -> Response:
        machine_id = request.path_params["machine"]
        known = {m["machine_id"]: m for m in fleet().machines()}
        if machine_id not in known:
            raise UsageError(f"no run found for machine {machine_id!r}")
        runs = machine_runs(dash.store, machine_id)
        response: Response = dash.page(
            "web_machine.html", "fleet", plots=False, machine=known[machine_id], runs=runs
        )
        return response

    @handle(True)
    def api_fleet(request: Request) -> Response:
        snap = snapshot()
        return JSONResponse({**snap, "jobs": [j.to_dict() for j in snap["jobs"]]})

    return [
        Route("/fleet", fleet_page),
        Route("/fleet/machines/{machine}", machine_page),
        Route("/api/fleet", api_fleet),
    ]
