"""The procrastinate app: one task (`lab_run`), one queue per machine class, schema applied on first use."""

from __future__ import annotations

import procrastinate
import psycopg

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.lab.store.db import redact_url

TASK_NAME = "mptcpkit.lab_run"


def queue_name(machine_class: str) -> str:
    return f"class:{machine_class}"


def check_url(url: str | None) -> str:
    if not url or not url.startswith(("postgresql://", "postgres://")):
        raise UsageError("the fleet needs the team's PostgreSQL: --db postgresql://user@host/dbname")
    return url


def make_app(url: str) -> procrastinate.App:
    """An app on a small pool; procrastinate's pools check each connection before use, so a lost one heals."""
    connector = procrastinate.PsycopgConnector(
        conninfo=url,
        min_size=1,
        max_size=4,
        kwargs={"connect_timeout": 10},
    )
    return procrastinate.App(connector=connector)


def apply_schema(url: str) -> None:
    """procrastinate's tables, once per database (an advisory lock keeps concurrent first users apart)."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext('mptcpkit-fleet-procrastinate'))")
            try:
                exists = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
                if not (exists and exists[0]):
                    app = procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=url))
                    with app.open():
                        app.schema_manager.apply_schema()
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext('mptcpkit-fleet-procrastinate'))")
    except psycopg.OperationalError as exc:
        detail = " ".join(str(exc).split())
        raise EnvironmentProblem(f"cannot reach the fleet database {redact_url(url)}: {detail}") from exc
