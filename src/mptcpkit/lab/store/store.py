"""The results store: runs, per-metric results with raw samples, and time series, in SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from types import TracebackType
from typing import Any, cast

from mptcpkit.errors import UsageError
from mptcpkit.lab.store.db import Database, Row, connect, default_sqlite_path, sqlite_path
from mptcpkit.lab.store.liveness import current_process, liveness
from mptcpkit.lab.store.model import (
    DIRECTIONS,
    Direction,
    ProcessRef,
    Result,
    Run,
    RunStatus,
    Series,
    environment_key,
    utcnow,
)
from mptcpkit.lab.store.schema import migrate

_RUN_COLS = (
    "run_id, label, started_at, finished_at, status, environment, config, "
    "owner_host, owner_boot_id, owner_pid, owner_start"
)
_RESULT_COLS = "run_id, scenario, metric, unit, direction, samples, expected, score, passed, rule, details, sweep, params"
_FINAL_STATUSES = ("complete", "incomplete", "failed")
_MIN_PREFIX = 4


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


class Store:
    """One open results database. Every write commits at once, so a killed writer leaves it readable."""

    def __init__(self, db: Database) -> None:
        self._db = db
        migrate(db)

    @property
    def where(self) -> str:
        """The database location for messages (a path, or a URL without password)."""
        return self._db.where

    @property
    def dialect(self) -> str:
        return self._db.dialect

    @property
    def database(self) -> Database:
        """The connection, for modules that own their own tables (lab/profiling: profiles)."""
        return self._db

    # -- writing -------------------------------------------------------------------------------------------

    def create_run(self, label: str | None, environment: dict[str, Any], config: dict[str, Any]) -> Run:
        """Start a run owned by this process (status "running")."""
        run = Run(
            run_id=secrets.token_hex(6),
            label=label or None,
            started_at=utcnow(),
            finished_at=None,
            status="running",
            environment=dict(environment),
            config=dict(config),
            process=current_process(),
        )
        proc = run.process
        assert proc is not None
        self._db.execute(
            f"INSERT INTO runs ({_RUN_COLS}, env_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.run_id,
                run.label,
                self._db.to_db_time(run.started_at),
                None,
                run.status,
                _dumps(run.environment),
                _dumps(run.config),
                proc.hostname,
                proc.boot_id,
                proc.pid,
                proc.start_ticks,
                environment_key(run.environment),
            ),
        )
        return run

    def add_result(self, result: Result) -> None:
        """Insert or replace the result of (run, scenario, metric): repetitions added later replace it."""
        if result.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, not {result.direction!r}")
        self._require_run(result.run_id)
        self._db.execute(
            f"INSERT INTO results ({_RESULT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, scenario, metric) DO UPDATE SET unit = excluded.unit, "
            "direction = excluded.direction, samples = excluded.samples, expected = excluded.expected, "
            "score = excluded.score, passed = excluded.passed, rule = excluded.rule, "
            "details = excluded.details, sweep = excluded.sweep, params = excluded.params",
            (
                result.run_id,
                result.scenario,
                result.metric,
                result.unit,
                result.direction,
                json.dumps([float(s) for s in result.samples]),
                _opt_float(result.expected),
                _opt_float(result.score),
                bool(result.passed),
                result.rule,
                _dumps(result.details),
                result.sweep,
                None if result.params is None else json.dumps(result.params),
            ),
        )

    def add_series(self, series: Series) -> None:
        self._require_run(series.run_id)
        self._db.execute(
            "INSERT INTO series (run_id, scenario, rep, name, interval_s, vals) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, scenario, rep, name) DO UPDATE SET interval_s = excluded.interval_s, "
            "vals = excluded.vals",
            (
                series.run_id,
                series.scenario,
                int(series.rep),
                series.name,
                float(series.interval_s),
                json.dumps([float(v) for v in series.values]),
            ),
        )

    def finish_run(self, run_id: str, status: RunStatus) -> None:
        if status not in _FINAL_STATUSES:
            raise ValueError(f"a finished run's status is one of {_FINAL_STATUSES}, not {status!r}")
        self._require_run(run_id)
        self._db.execute(
            "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
            (status, self._db.to_db_time(utcnow()), run_id),
        )

    # -- reading -------------------------------------------------------------------------------------------

    def get_run(self, ref: str) -> Run:
        """Resolve a run id, a unique id prefix (>= 4 characters), a label (its latest run) or "latest"."""
        ref = ref.strip()
        if not ref:
            raise UsageError("empty run reference", hint="give a run id, an id prefix, a label or 'latest'")
        rows = self._db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (ref,))
        if rows:
            return self._run(rows[0])
        if ref == "latest":
            rows = self._db.execute(f"SELECT {_RUN_COLS} FROM runs ORDER BY started_at DESC, run_id LIMIT 1")
            if not rows:
                raise UsageError(
                    f"no runs in results database {self.where} yet", hint="record one with 'mptcpkit lab run'"
                )
            return self._run(rows[0])
        rows = self._db.execute(
            f"SELECT {_RUN_COLS} FROM runs WHERE label = ? ORDER BY started_at DESC, run_id LIMIT 1", (ref,)
        )
        if rows:
            return self._run(rows[0])
        if len(ref) >= _MIN_PREFIX and re.fullmatch(r"[0-9a-fA-F]+", ref):
            ref = ref.lower()
            rows = self._db.execute(
                f"SELECT {_RUN_COLS} FROM runs WHERE run_id LIKE ? ORDER BY started_at DESC LIMIT 6",
                (ref + "%",),
            )
            if len(rows) == 1:
                return self._run(rows[0])
            if rows:
                ids = ", ".join(str(r[0]) for r in rows[:5])
                raise UsageError(
                    f"run reference {ref!r} is ambiguous: it matches {ids}"
                    + (", ..." if len(rows) > 5 else ""),
                    hint="give more characters of the id",
                )
        empty = not self._db.execute("SELECT 1 FROM runs LIMIT 1")
        raise UsageError(
            f"no run {ref!r} in results database {self.where}"
            + (" (the database is empty)" if empty else ": not a run id, unique id prefix or label"),
            hint="'mptcpkit lab runs' lists the runs" if not empty else "record one with 'mptcpkit lab run'",
        )

    def list_runs(self, limit: int | None = 20, label: str | None = None) -> list[Run]:
        """Runs newest first, optionally only those with `label`."""
        where, params = ("WHERE label = ?", [label]) if label is not None else ("", [])
        lim = "" if limit is None else f" LIMIT {int(limit)}"
        rows = self._db.execute(
            f"SELECT {_RUN_COLS} FROM runs {where} ORDER BY started_at DESC, run_id{lim}", params
        )
        return [self._run(r) for r in rows]

    def results(self, run_id: str) -> list[Result]:
        rows = self._db.execute(f"SELECT {_RESULT_COLS} FROM results WHERE run_id = ? ORDER BY id", (run_id,))
        return [_result(r) for r in rows]

    def series(self, run_id: str, scenario: str | None = None) -> list[Series]:
        sql = "SELECT run_id, scenario, rep, name, interval_s, vals FROM series WHERE run_id = ?"
        params: list[Any] = [run_id]
        if scenario is not None:
            sql += " AND scenario = ?"
            params.append(scenario)
        rows = self._db.execute(sql + " ORDER BY scenario, rep, name", params)
        return [
            Series(
                run_id=r[0],
                scenario=r[1],
                rep=int(r[2]),
                name=r[3],
                interval_s=float(r[4]),
                values=[float(v) for v in json.loads(r[5])],
            )
            for r in rows
        ]

    def history(
        self, scenario: str, metric: str, environment_key: str | None = None
    ) -> list[tuple[Run, Result]]:
        """Every (run, result) of one scenario and metric, oldest first; optionally one environment only."""
        cols = (
            ", ".join(f"u.{c.strip()}" for c in _RUN_COLS.split(","))
            + ", "
            + ", ".join(f"r.{c.strip()}" for c in _RESULT_COLS.split(","))
        )
        sql = (
            f"SELECT {cols} FROM results r JOIN runs u ON u.run_id = r.run_id "
            "WHERE r.scenario = ? AND r.metric = ?"
        )
        params: list[Any] = [scenario, metric]
        if environment_key is not None:
            sql += " AND u.env_key = ?"
            params.append(environment_key)
        rows = self._db.execute(sql + " ORDER BY u.started_at, u.run_id", params)
        n = len(_RUN_COLS.split(","))
        return [(self._run(row[:n]), _result(row[n:])) for row in rows]

    def metrics(self) -> list[tuple[str, str]]:
        """Every (scenario, metric) pair with at least one result, sorted."""
        rows = self._db.execute("SELECT DISTINCT scenario, metric FROM results ORDER BY scenario, metric")
        return [(str(r[0]), str(r[1])) for r in rows]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------------------------

    def _require_run(self, run_id: str) -> None:
        if not self._db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)):
            raise UsageError(f"no run {run_id!r} in results database {self.where}")

    def _run(self, row: Row) -> Run:
        process = None
        if row[7] is not None and row[9] is not None:
            process = ProcessRef(
                hostname=row[7], boot_id=row[8] or "", pid=int(row[9]), start_ticks=int(row[10] or 0)
            )
        started = self._db.from_db_time(row[2])
        assert started is not None
        run = Run(
            run_id=row[0],
            label=row[1],
            started_at=started,
            finished_at=self._db.from_db_time(row[3]),
            status=cast(RunStatus, row[4]),
            environment=json.loads(row[5]),
            config=json.loads(row[6]),
            process=process,
        )
        if run.status == "running" and process is not None and liveness(process) == "dead":
            run.status = "incomplete"
            self._mark_incomplete(run.run_id)
        return run

    def _mark_incomplete(self, run_id: str) -> None:
        # A read-only database (e.g. a dashboard's) still reports the run incomplete, without writing it.
        with contextlib.suppress(UsageError):
            self._db.execute(
                "UPDATE runs SET status = 'incomplete' WHERE run_id = ? AND status = 'running'", (run_id,)
            )


def _opt_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def _result(row: Row) -> Result:
    return Result(
        run_id=row[0],
        scenario=row[1],
        metric=row[2],
        unit=row[3],
        direction=cast(Direction, row[4]),
        samples=[float(s) for s in json.loads(row[5])],
        expected=None if row[6] is None else float(row[6]),
        score=None if row[7] is None else float(row[7]),
        passed=bool(row[8]),
        rule=row[9],
        details=json.loads(row[10]),
        sweep=row[11],
        params=None if row[12] is None else json.loads(row[12]),
    )


def open_store(url_or_path: str | None = None, *, create: bool = True) -> Store:
    """Open (creating and migrating as needed) the results database.

    None: $MPTCPKIT_DB if set, else the per-user SQLite file $XDG_DATA_HOME/mptcpkit/results.db
    (~/.local/share/mptcpkit/results.db). A `postgresql://` URL: a shared PostgreSQL database. Anything
    else: an SQLite file path. `create=False` (commands that only read) refuses a missing SQLite file instead
    of creating an empty one where the user mistyped a path (only the per-user default is created on demand).
    """
    if not create:
        path = sqlite_path(url_or_path)
        if path is not None and not path.exists() and path != default_sqlite_path():
            raise UsageError(
                f"no results database at {path}",
                hint="record a run first with `mptcpkit lab run`, or point --db at your database",
            )
    db = connect(url_or_path)
    try:
        return Store(db)
    except BaseException:
        db.close()
        raise


def run_to_json(store: Store, run_id: str) -> dict[str, Any]:
    """The run as plain JSON types: the `--json` output of `lab run` and `lab show`."""
    run = store.get_run(run_id)
    return {
        "run_id": run.run_id,
        "label": run.label,
        "status": run.status,
        "started_at": run.started_at.isoformat(),
        "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
        "environment": run.environment,
        "environment_key": run.environment_key,
        "config": run.config,
        "results": [result_to_json(r) for r in store.results(run.run_id)],
    }


def result_to_json(result: Result) -> dict[str, Any]:
    return {
        "scenario": result.scenario,
        "metric": result.metric,
        "unit": result.unit,
        "direction": result.direction,
        "samples": result.samples,
        "median": result.median,
        "min": result.minimum,
        "max": result.maximum,
        "cv": result.cv,
        "expected": result.expected,
        "score": result.score,
        "passed": result.passed,
        "rule": result.rule,
        "details": result.details,
        "sweep": result.sweep,
        "params": result.params,
    }
