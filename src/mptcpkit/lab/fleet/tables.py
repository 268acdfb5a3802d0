"""The fleet's own bookkeeping beside procrastinate's tables: per-job progress and errors, and the machines.

procrastinate owns job state (todo/doing/succeeded/failed/cancelled) and locking; these tables only add what a
lab team looks at: which machine ran a job, its run id, progress, the error and console tail, heartbeats.
"""

from __future__ import annotations

import json
from typing import Any

from mptcpkit.lab.store.db import Database, PostgresDatabase

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fleet_jobs (
        job_id BIGINT PRIMARY KEY,
        label TEXT,
        machine_class TEXT NOT NULL,
        spec TEXT NOT NULL,
        submitted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        machine_id TEXT,
        run_id TEXT,
        done INTEGER NOT NULL DEFAULT 0,
        total INTEGER,
        error TEXT,
        console_tail TEXT,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
    """CREATE TABLE IF NOT EXISTS fleet_machines (
        machine_id TEXT PRIMARY KEY,
        classes TEXT NOT NULL,
        identity TEXT NOT NULL,
        worker_pid INTEGER,
        current_job BIGINT,
        last_seen TIMESTAMPTZ NOT NULL DEFAULT now()
    )""",
)


def open_db(url: str) -> Database:
    db = PostgresDatabase(url)
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(hashtext('mptcpkit-fleet-schema'))")
        for statement in SCHEMA:
            db.execute(statement)
    return db


def add_job(db: Database, job_id: int, label: str | None, machine_class: str, spec: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO fleet_jobs (job_id, label, machine_class, spec) VALUES (?, ?, ?, ?)",
        (job_id, label, machine_class, json.dumps(spec, sort_keys=True)),
    )


def update_job(db: Database, job_id: int, **values: Any) -> None:
    cols = ", ".join(f"{k} = ?" for k in values)
    db.execute(
        f"UPDATE fleet_jobs SET {cols}, updated_at = now() WHERE job_id = ?", (*values.values(), job_id)
    )


def machine_seen(db: Database, identity: dict[str, Any], pid: int, current_job: int | None) -> None:
    db.execute(
        "INSERT INTO fleet_machines (machine_id, classes, identity, worker_pid, current_job, last_seen) "
        "VALUES (?, ?, ?, ?, ?, now()) ON CONFLICT (machine_id) DO UPDATE SET classes = excluded.classes, "
        "identity = excluded.identity, worker_pid = excluded.worker_pid, current_job = excluded.current_job, "
        "last_seen = now()",
        (identity["machine_id"], json.dumps(identity["classes"]), json.dumps(identity), pid, current_job),
    )
