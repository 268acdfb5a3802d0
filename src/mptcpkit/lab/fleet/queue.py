"""Submit, list, cancel and retry fleet jobs (procrastinate's job state joined with the fleet's bookkeeping)."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from mptcpkit.errors import UsageError
from mptcpkit.lab.fleet import tables
from mptcpkit.lab.fleet.engine import TASK_NAME, apply_schema, make_app, queue_name
from mptcpkit.lab.fleet.spec import JobSpec
from mptcpkit.lab.store.db import Database

STATES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")
SHOWN = {"todo": "queued", "doing": "running", "succeeded": "done"}


@dataclass
class JobRow:
    job_id: int
    state: str
    machine_class: str
    label: str | None
    machine_id: str | None
    run_id: str | None
    done: int
    total: int | None
    attempts: int
    error: str | None
    submitted_at: datetime.datetime | None
    updated_at: datetime.datetime | None

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime.datetime) else v) for k, v in vars(self).items()}


class Fleet:
    """The fleet seen from the database: used by `lab submit`, `lab queue`, `lab bisect` and the dashboard."""

    def __init__(self, url: str) -> None:
        apply_schema(url)
        self.url = url
        self.db: Database = tables.open_db(url)
        self.app = make_app(url)

    def close(self) -> None:
        self.db.close()

    def submit(self, spec: JobSpec, machine_class: str, total: int | None) -> int:
        with self.app.open():
            job_id = self.app.configure_task(TASK_NAME, queue=queue_name(machine_class)).defer(
                spec=spec.to_dict()
            )
        tables.add_job(self.db, job_id, spec.label, machine_class, spec.to_dict())
        if total is not None:
            tables.update_job(self.db, job_id, total=total)
        return job_id

    def jobs(self, states: tuple[str, ...] = STATES, limit: int = 200) -> list[JobRow]:
        rows = self.db.execute(
            "SELECT j.id, j.status, f.machine_class, f.label, f.machine_id, f.run_id, f.done, f.total, "
            "j.attempts, f.error, f.submitted_at, f.updated_at FROM procrastinate_jobs j "
            "JOIN fleet_jobs f ON f.job_id = j.id WHERE j.status::text = ANY(?) ORDER BY j.id DESC LIMIT ?",
            (list(states), limit),
        )
        return [
            JobRow(
                job_id=r[0],
                state=SHOWN.get(str(r[1]), str(r[1])),
                machine_class=r[2],
                label=r[3],
                machine_id=r[4],
                run_id=r[5],
                done=r[6],
                total=r[7],
                attempts=r[8],
                error=r[9],
                submitted_at=r[10],
                updated_at=r[11],
            )
            for r in rows
        ]

    def job(self, job_id: int) -> JobRow:
        for row in self.jobs(limit=100000):
            if row.job_id == job_id:
                return row
        raise UsageError(f"no fleet job {job_id} (see `mptcpkit lab queue`)")

    def console_tail(self, job_id: int) -> str | None:
        rows = self.db.execute("SELECT console_tail FROM fleet_jobs WHERE job_id = ?", (job_id,))
        return rows[0][0] if rows else None

    def cancel(self, job_id: int) -> str:
        """A queued job is cancelled; a running one is asked to abort (its worker stops the run)."""
        row = self.job(job_id)
        with self.app.open():
            if row.state == "queued":
                self.app.job_manager.cancel_job_by_id(job_id)
                return "cancelled"
            if row.state == "running":
                self.app.job_manager.cancel_job_by_id(job_id, abort=True)
                return "abort requested"
        raise UsageError(f"job {job_id} is {row.state}: only queued or running jobs can be cancelled")

    def retry(self, job_id: int) -> int:
        """A failed job goes back to the queue (same id); a cancelled one is queued anew (its id is returned)."""
        row = self.job(job_id)
        if row.state == "failed":
            with self.app.open():
                self.app.job_manager.retry_job_by_id(job_id, retry_at=datetime.datetime.now(datetime.UTC))
            tables.update_job(self.db, job_id, error=None, done=0)
            return job_id
        if row.state in ("cancelled", "aborted"):
            spec = self.db.execute("SELECT spec FROM fleet_jobs WHERE job_id = ?", (job_id,))[0][0]
            return self.submit(JobSpec.from_dict(json.loads(spec)), row.machine_class, row.total)
        raise UsageError(f"job {job_id} is {row.state}: only failed or cancelled jobs can be retried")

    def machines(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT machine_id, classes, identity, worker_pid, current_job, last_seen FROM fleet_machines "
            "ORDER BY machine_id"
        )
        return [
            {
                "machine_id": r[0],
                "classes": json.loads(r[1]),
                "identity": json.loads(r[2]),
                "worker_pid": r[3],
                "current_job": r[4],
                "last_seen": r[5].isoformat() if r[5] else None,
            }
            for r in rows
        ]
