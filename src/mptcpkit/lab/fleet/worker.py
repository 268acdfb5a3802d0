"""`mptcpkit lab worker`: take jobs of some machine classes, one at a time, and run each as a child `lab run`.

The child writes its results straight into the shared store (its own reconnecting connection); the worker only
follows its progress lines, keeps the fleet tables current and turns the exit status into the job's state. The
child dies with the worker (PR_SET_PDEATHSIG), so a `kill -9` leaves no orphan run, only labs the next worker on
this machine removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import json
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import procrastinate
from procrastinate.exceptions import JobAborted
from procrastinate.jobs import Status

from mptcpkit.lab.fleet import tables
from mptcpkit.lab.fleet.engine import TASK_NAME, apply_schema, make_app, queue_name
from mptcpkit.lab.fleet.identity import ENV_VAR, machine_identity
from mptcpkit.lab.fleet.machine import STATE_DIR, MachineLock, remove_dead_labs
from mptcpkit.lab.fleet.spec import JobSpec
from mptcpkit.lab.store.db import Database

RUN_STARTED = re.compile(r"^run ([0-9a-f]+) started")
REP_LINE = re.compile(r"^\s+\S.* #\d+: ")
TAIL_LINES = 80


class JobFailed(Exception):
    """The child `lab run` failed (bad input, lab could not be built, kernel did not boot)."""


@dataclass
class WorkerConfig:
    url: str
    classes: list[str]
    machine_id: str
    backend: str = "netns"
    on_crash: str = "retry"  # what happens to the job of a worker that died mid-job: retry | fail
    max_attempts: int = 3
    heartbeat_s: float = 5.0
    stalled_s: float = 30.0
    state_dir: Any = STATE_DIR
    backend_args: list[str] = field(default_factory=list)  # e.g. --ssh client=root@a ... for an SSH worker
    log: Callable[[str], None] = field(default=lambda m: print(m, file=sys.stderr, flush=True))


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker dies, so no run outlives it unseen."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.lock = MachineLock(config.machine_id, config.state_dir)
        self.identity = machine_identity(config.machine_id, config.classes, config.backend)
        self.db: Database | None = None
        self.current_job: int | None = None

    # -- the job ----------------------------------------------------------------------------------------

    async def run_job(self, context: procrastinate.JobContext, spec: dict[str, Any]) -> None:
        assert self.db is not None and context.job.id is not None
        job_id, db, log = context.job.id, self.db, self.config.log
        job = JobSpec.from_dict(spec)
        argv = [sys.executable, "-m", "mptcpkit", "lab", "run", *job.run_args(), *self.config.backend_args]
        argv += ["--db", self.config.url]
        env = dict(os.environ)
        env[ENV_VAR] = json.dumps({**self.identity, "job_id": job_id})
        log(f"job {job_id}: {' '.join(job.run_args())}")
        self.current_job = job_id
        await asyncio.to_thread(
            tables.update_job, db, job_id, machine_id=self.config.machine_id, done=0, run_id=None
        )
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self.lock.write_state(worker_pid=os.getpid(), job_id=job_id, child_pid=proc.pid)
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        aborted = False
        run_id: str | None = None

        async def follow() -> None:
            nonlocal run_id
            done = 0
            assert proc.stderr is not None
            async for raw in proc.stderr:
                line = raw.decode(errors="replace").replace("\x00", "").rstrip()
                tail.append(line)
                if m := RUN_STARTED.match(line):
                    run_id = m.group(1)
                    await asyncio.to_thread(tables.update_job, db, job_id, run_id=m.group(1))
                elif REP_LINE.match(line):
                    done += 1
                    await asyncio.to_thread(tables.update_job, db, job_id, done=done)

        async def watch_abort() -> None:
            nonlocal aborted
            while proc.returncode is None:
                if context.should_abort():
                    aborted = True
                    proc.terminate()  # `lab run` stops at SIGTERM: labs removed, run marked incomplete
                    return
                await asyncio.sleep(0.5)

        watcher = asyncio.create_task(watch_abort())
        try:
            await follow()
            rc = await proc.wait()
        finally:
            watcher.cancel()
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
            self.lock.clear_state()
            self.current_job = None
        if aborted:
            await asyncio.to_thread(tables.update_job, db, job_id, error="cancelled while running")
            raise JobAborted()
        errors = [ln.strip() for ln in tail if ln.startswith("error:")]
        # Exit 1 with a stored run: a scenario missed its expectation, which is a result, not a failure.
        if rc != 0 and (rc != 1 or errors or run_id is None):
            lines = [ln for ln in tail if ln.strip()]
            message = errors[-1] if errors else lines[-1].strip() if lines else f"lab run exited with {rc}"
            await asyncio.to_thread(
                tables.update_job, db, job_id, error=message[:2000], console_tail="\n".join(tail)
            )
            log(f"job {job_id} failed: {message}")
            raise JobFailed(message)
        log(f"job {job_id} done")

    # -- recovery ---------------------------------------------------------------------------------------

    async def settle_dead_job(self, app: procrastinate.App, job_id: int, why: str) -> str:
        """A job left "doing" by a dead worker: retried (if allowed and attempts remain) or failed."""
        assert self.db is not None
        jobs = list(await app.job_manager.list_jobs_async(id=job_id))
        if not jobs or jobs[0].status != Status.DOING.value:
            return "gone"
        attempts = jobs[0].attempts + 1
        if self.config.on_crash == "retry" and attempts < self.config.max_attempts:
            await app.job_manager.retry_job_by_id_async(job_id, retry_at=datetime.datetime.now(datetime.UTC))
            outcome = f"retried (attempt {attempts + 1} of {self.config.max_attempts})"
        else:
            await app.job_manager.finish_job_by_id_async(job_id, status=Status.FAILED, delete_job=False)
            outcome = "failed"
        await asyncio.to_thread(tables.update_job, self.db, job_id, error=f"{why}; {outcome}")
        return outcome

    async def recover(self, app: procrastinate.App) -> None:
        """What the previous worker of this machine left: its labs removed, its job retried or failed."""
        state = self.lock.read_state()
        owners = {int(p) for p in (state.get("worker_pid"), state.get("child_pid")) if isinstance(p, int)}
        if owners:
            removed = await asyncio.to_thread(remove_dead_labs, owners)
            if removed:
                self.config.log(f"removed labs of the dead worker: {', '.join(removed)}")
        job_id = state.get("job_id")
        if isinstance(job_id, int):
            try:
                outcome = await self.settle_dead_job(app, job_id, "worker died mid-job")
            except procrastinate.exceptions.ConnectorException:  # another worker settled it just now
                outcome = "settled elsewhere"
            self.config.log(f"job {job_id} of the dead worker: {outcome}")
        self.lock.clear_state()

    async def janitor(self, app: procrastinate.App) -> None:
        """Heartbeat in fleet_machines; jobs of workers whose heartbeat stopped (machine gone) are settled."""
        assert self.db is not None
        while True:
            await asyncio.to_thread(
                tables.machine_seen, self.db, self.identity, os.getpid(), self.current_job
            )
            for cls in self.config.classes:
                with contextlib.suppress(Exception):
                    stalled = await app.job_manager.get_stalled_jobs(
                        queue=queue_name(cls), seconds_since_heartbeat=self.config.stalled_s
                    )
                    for job in stalled:
                        if job.id is not None and job.id != self.current_job:
                            await self.settle_dead_job(app, job.id, "worker stopped sending heartbeats")
            await asyncio.sleep(self.config.heartbeat_s)

    # -- main -------------------------------------------------------------------------------------------

    def serve(self) -> None:
        self.lock.acquire()
        try:
            apply_schema(self.config.url)
            self.db = tables.open_db(self.config.url)
            asyncio.run(self._serve())
        finally:
            self.lock.release()

    async def _serve(self) -> None:
        app = make_app(self.config.url)
        app.task(name=TASK_NAME, pass_context=True, retry=False)(self.run_job)
        async with app.open_async():
            await self.recover(app)
            queues = [queue_name(c) for c in self.config.classes]
            self.config.log(f"worker {self.config.machine_id} serving {', '.join(queues)}")
            janitor = asyncio.create_task(self.janitor(app))
            try:
                await app.run_worker_async(
                    queues=queues,
                    name=self.config.machine_id,
                    concurrency=1,
                    update_heartbeat_interval=self.config.heartbeat_s,
                    stalled_worker_timeout=self.config.stalled_s,
                    install_signal_handlers=True,
                )
            finally:
                janitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await janitor
