"""The lab fleet on a real PostgreSQL with real worker processes (procrastinate), real labs and real faults.

Every test starts its workers as `mptcpkit lab worker` processes with their own state directory and machine
ids, and stops them (and removes any lab they own) at the end, also on failure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from mptcpkit.lab import registry
from mptcpkit.lab.fleet.machine import MachineLock
from mptcpkit.lab.fleet.spec import JobSpec

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="labs need root")

TINY = """
name = "fleet-tiny"
description = "one shaped path, a short TCP download: the cheapest real run"
[topology]
name = "one-path"
hosts = {{ client = {{}}, server = {{}} }}
[[topology.links]]
name = "path1"
a = {{ host = "client", ifname = "eth0", addresses = ["10.0.1.1/24"] }}
b = {{ host = "server", ifname = "eth0", addresses = ["10.0.1.2/24"] }}
rate = "{rate}"
delay = "2ms"
[[flows]]
proto = "tcp"
mode = "bulk-download"
duration = "{duration}"
[[metrics]]
kind = "goodput"
"""


def tiny(tmp: Path, name: str = "tiny", duration: str = "1s", rate: str = "50mbit") -> str:
    path = tmp / f"{name}.toml"
    path.write_text(TINY.format(duration=duration, rate=rate))
    return str(path)


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mptcpkit", "lab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


class Workers:
    """Worker processes of one test; all stopped at the end, their labs removed."""

    def __init__(self, url: str, state_dir: Path, logs: Path) -> None:
        self.url, self.state_dir, self.logs = url, state_dir, logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {**os.environ, "MPTCPKIT_FLEET_STATE_DIR": str(state_dir)}

    def start(self, machine: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{machine}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mptcpkit",
                "lab",
                "worker",
                "--db",
                self.url,
                "--class",
                "test",
                "--machine-id",
                machine,
                "--heartbeat",
                "1",
                "--stalled-after",
                "5",
                *extra,
            ],
            stdout=log,
            stderr=log,
            env=self.env,
        )
        self.procs[machine] = proc
        return proc

    def log(self, machine: str) -> str:
        return (self.logs / f"{machine}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture
def workers(pg_url: str, tmp_path: Path) -> Iterator[Workers]:
    state = tmp_path / "state"
    logs = tmp_path / "logs"
    logs.mkdir()
    before = {r.lab_id for r in registry.all_records()}
    ws = Workers(pg_url, state, logs)
    try:
        yield ws
    finally:
        ws.stop_all()
        from mptcpkit.lab.backends.netns import teardown_record

        for record in registry.all_records():  # labs this test's workers left (never anyone else's)
            if record.lab_id not in before and not record.owner_alive:
                teardown_record(record)


def submit(url: str, scenario: str, label: str, *extra: str, env: dict[str, str] | None = None) -> int:
    res = cli(
        "submit",
        "-s",
        scenario,
        "--reps",
        "1",
        "--no-self-check",
        "--machines",
        "test",
        "--label",
        label,
        "--db",
        url,
        "--json",
        *extra,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    return int(json.loads(res.stdout)[0])


def queue(url: str) -> dict[int, dict[str, Any]]:
    res = cli("queue", "--db", url, "--json")
    assert res.returncode == 0, res.stderr
    return {row["job_id"]: row for row in json.loads(res.stdout)}


def wait_for(what: Callable[[], Any], timeout: float, message: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s: {message}")


def runs_by_label(url: str) -> dict[str, list[tuple[str, str, dict[str, Any]]]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT label, run_id, status, environment FROM runs").fetchall()
    found: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for label, run_id, status, env in rows:
        found.setdefault(label, []).append((run_id, status, json.loads(env)))
    return found


def terminate_others(url: str) -> tuple[int]:
    """pg_terminate_backend on every other connection to this test's database: a lost connection, for real."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return (int(row[0]),)


# -- pure ------------------------------------------------------------------------------------------------


def test_job_spec_round_trip_and_run_args() -> None:
    spec = JobSpec(scenarios=["tcp-baseline"], reps=2, scale=0.5, self_check=False, label="v6.18")
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    args = spec.run_args()
    assert args[:2] == ["--scenario", "tcp-baseline"]
    assert "--no-self-check" in args and args[args.index("--reps") + 1] == "2"


def test_machine_lock_admits_one_worker(tmp_path: Path) -> None:
    from mptcpkit.errors import UsageError

    first = MachineLock("m1", tmp_path)
    first.acquire()
    try:
        with pytest.raises(UsageError, match="already has a worker"):
            MachineLock("m1", tmp_path).acquire()
        other = MachineLock("m2", tmp_path)
        other.acquire()  # another machine id is another machine
        other.release()
    finally:
        first.release()
    again = MachineLock("m1", tmp_path)
    again.acquire()
    again.release()


# -- queue operations (no worker) ---------------------------------------------------------------------


def test_queue_cancel_and_retry(pg_url: str, tmp_path: Path) -> None:
    job = submit(pg_url, tiny(tmp_path), "cancel-me")
    assert queue(pg_url)[job]["state"] == "queued"
    assert queue(pg_url)[job]["total"] == 1
    res = cli("queue", "--db", pg_url, "cancel", str(job))
    assert res.returncode == 0, res.stderr
    assert queue(pg_url)[job]["state"] == "cancelled"
    assert cli("queue", "--db", pg_url, "cancel", str(job)).returncode == 2  # nothing left to cancel
    res = cli("queue", "--db", pg_url, "retry", str(job))
    assert res.returncode == 0, res.stderr
    again = int(res.stdout)
    assert again != job and queue(pg_url)[again]["state"] == "queued"
    assert queue(pg_url)[again]["label"] == "cancel-me"
    table = cli("queue", "--db", pg_url)
    assert "cancel-me" in table.stdout and "queued" in table.stdout
    bad = cli("submit", "-s", "no-such-scenario", "--machines", "test", "--db", pg_url)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert cli("queue", "--db", "results.db").returncode == 2  # the fleet needs PostgreSQL


# -- workers ------------------------------------------------------------------------------------------


@needs_root
def test_three_workers_each_job_runs_once(workers: Workers, tmp_path: Path) -> None:
    url = workers.url
    scenario = tiny(tmp_path)
    jobs = {submit(url, scenario, f"once-{i}"): f"once-{i}" for i in range(6)}
    for machine in ("w1", "w2", "w3"):
        workers.start(machine)
    wait_for(
        lambda: all(queue(url)[j]["state"] in ("done", "failed") for j in jobs), 240, "all jobs finished"
    )
    rows = queue(url)
    assert {rows[j]["state"] for j in jobs} == {"done"}, [
        (rows[j]["error"], workers.log(m)) for j in jobs for m in workers.procs if rows[j]["state"] != "done"
    ]
    runs = runs_by_label(url)
    for job, label in jobs.items():
        assert len(runs[label]) == 1, f"{label} ran {len(runs[label])} times"  # never twice
        run_id, status, env = runs[label][0]
        assert status == "complete" and rows[job]["run_id"] == run_id
        fleet = env["fleet"]
        assert fleet["machine_id"] == rows[job]["machine_id"] and fleet["job_id"] == job
        assert fleet["cpu"] and fleet["kernel"] and fleet["backend"] == "netns"
        assert rows[job]["attempts"] == 1 and rows[job]["done"] == 1
    check_dashboard(url, jobs, rows)
    # a second worker for a machine that already has one refuses (one job at a time per machine)
    dup = workers.start("w1")
    assert dup.wait(30) == 2
    assert "already has a worker" in workers.log("w1")


@contextlib.contextmanager
def dashboard(db: str) -> Iterator[str]:
    """`lab serve`'s app under uvicorn on 127.0.0.1 (a free port), in a thread; stopped at the end."""
    import threading

    import uvicorn

    from mptcpkit.lab.report import make_app
    from mptcpkit.lab.report.web import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(make_app(db), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "dashboard up")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def check_dashboard(url: str, jobs: dict[int, str], rows: dict[int, dict[str, Any]]) -> None:
    """The fleet pages over real HTTP: the queue, each machine's history, the JSON, a 404 for a stranger."""
    with dashboard(url) as base, httpx.Client(base_url=base, timeout=60) as http:
        page = http.get("/fleet")
        assert page.status_code == 200 and all(label in page.text for label in jobs.values())
        assert "w1" in page.text and ">6</b> done" in page.text
        api = http.get("/api/fleet").json()
        assert {m["machine_id"] for m in api["machines"]} == {"w1", "w2", "w3"}
        for machine in {r["machine_id"] for r in rows.values()}:
            history = http.get(f"/fleet/machines/{machine}")
            mine = [rows[j]["run_id"] for j in jobs if rows[j]["machine_id"] == machine]
            assert history.status_code == 200 and all(run_id in history.text for run_id in mine)
        assert http.get("/fleet/machines/nobody").status_code == 404


def _state(workers: Workers, machine: str) -> dict[str, Any]:
    return MachineLock(machine, workers.state_dir).read_state()


@needs_root
@pytest.mark.parametrize("on_crash", ["retry", "fail"])
def test_worker_killed_mid_job(workers: Workers, tmp_path: Path, on_crash: str) -> None:
    url = workers.url
    job = submit(url, tiny(tmp_path, duration="20s"), f"killed-{on_crash}")
    worker = workers.start("k1", "--on-crash", on_crash)
    state = wait_for(
        lambda: _state(workers, "k1").get("child_pid") and _state(workers, "k1"), 60, "job started"
    )
    child = state["child_pid"]
    lab = wait_for(
        lambda: next((r for r in registry.all_records() if r.owner_pid == child and r.state == "up"), None),
        60,
        "the job's lab is up",
    )
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not Path(f"/proc/{child}").exists(), 10, "the child run died with its worker")
    assert registry.load(lab.lab_id) is not None  # the dead run's lab is still there ...
    assert queue(url)[job]["state"] == "running"
    workers.start("k1", "--on-crash", on_crash)  # ... until a worker restarts on that machine
    wait_for(lambda: registry.load(lab.lab_id) is None, 30, "the dead worker's lab removed")
    if on_crash == "retry":
        row = wait_for(
            lambda: queue(url)[job]["state"] == "done" and queue(url)[job], 120, "retried job done"
        )
        assert row["attempts"] == 2 and "worker died mid-job" in (row["error"] or "")
        statuses = sorted(s for _, s, _ in runs_by_label(url)[f"killed-{on_crash}"])
        assert "complete" in statuses
    else:
        row = wait_for(lambda: queue(url)[job]["state"] == "failed" and queue(url)[job], 30, "job failed")
        assert "worker died mid-job; failed" in row["error"]
    assert "removed labs of the dead worker" in workers.log("k1")


@needs_root
def test_database_connection_lost_mid_job(workers: Workers, tmp_path: Path) -> None:
    url = workers.url
    job = submit(url, tiny(tmp_path, duration="1s"), "reconnect", "--reps", "4")
    workers.start("r1")
    wait_for(lambda: (queue(url)[job]["done"] or 0) >= 1, 90, "first repetition stored")
    killed = terminate_others(url)
    assert killed and killed[0] >= 2  # the worker's and the run's connections
    row = wait_for(lambda: queue(url)[job]["state"] in ("done", "failed") and queue(url)[job], 120, "job end")
    assert row["state"] == "done", workers.log("r1")
    ((run_id, status, _),) = runs_by_label(url)["reconnect"]
    assert status == "complete"
    with psycopg.connect(url) as conn:
        samples = conn.execute("SELECT samples FROM results WHERE run_id = %s", (run_id,)).fetchall()
    assert samples and all(len(json.loads(s)) == 4 for (s,) in samples)  # no repetition lost


@needs_root
def test_plain_lab_run_survives_a_lost_connection(pg_url: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mptcpkit",
            "lab",
            "run",
            "-s",
            tiny(tmp_path),
            "--reps",
            "4",
            "--no-self-check",
            "--label",
            "plain",
            "--db",
            pg_url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "#1:" in line:
                break
        assert terminate_others(pg_url)[0] >= 1
        rest = proc.stderr.read()
        assert proc.wait(120) in (0, 1), rest
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    ((run_id, status, _),) = runs_by_label(pg_url)["plain"]
    assert status == "complete"
    with psycopg.connect(pg_url) as conn:
        (samples,) = conn.execute("SELECT samples FROM results WHERE run_id = %s", (run_id,)).fetchone() or (
            "[]",
        )
    assert len(json.loads(samples)) == 4


@needs_root
def test_kernel_that_does_not_boot_fails_the_job_with_console_tail(workers: Workers, tmp_path: Path) -> None:
    """A real VM boot of a file that is no kernel: QEMU refuses it within seconds."""
    url = workers.url
    bogus = tmp_path / "bzImage"
    bogus.write_text("not a kernel\n")
    job = submit(url, "tcp-baseline", "no-boot", "--kernel", str(bogus))
    workers.start("v1", "--backend", "vm")
    row = wait_for(lambda: queue(url)[job]["state"] in ("done", "failed") and queue(url)[job], 180, "job end")
    assert row["state"] == "failed" and row["error"]
    res = cli("queue", "--db", url, "show", str(job))
    tail = json.loads(res.stdout)["console_tail"]
    assert "did not boot" in tail and "invalid kernel header" in tail


def test_bisect_search_is_a_bisection() -> None:
    from mptcpkit.lab.fleet.bisect import search

    def probe_count(n: int, step: int) -> tuple[int, int]:
        probes: list[int] = []

        def is_bad(i: int) -> bool:
            probes.append(i)
            return i >= step

        return search(n, is_bad), len(probes)

    for n in range(2, 40):
        for step in range(1, n):
            found, count = probe_count(n, step)
            assert found == step and count <= max(1, (n - 1).bit_length())


@needs_root
def test_bisect_finds_a_known_step_on_three_workers(workers: Workers, tmp_path: Path) -> None:
    """Six "kernels" that are link-rate variants of one scenario; the rate drops at s3."""
    template = tmp_path / "template.toml"
    template.write_text(TINY.format(duration="1s", rate="$rate"))
    rates = ["50mbit", "50mbit", "50mbit", "20mbit", "20mbit", "20mbit"]
    steps = tmp_path / "steps.toml"
    steps.write_text(
        'template = "template.toml"\n'
        + "".join(f'[[steps]]\nlabel = "s{i}"\nrate = "{r}"\n' for i, r in enumerate(rates))
    )
    for machine in ("b1", "b2", "b3"):
        workers.start(machine)
    res = cli(
        "bisect",
        "--steps",
        str(steps),
        "--good",
        "s0",
        "--bad",
        "s5",
        "--metric",
        "fleet-tiny:goodput",
        "--machines",
        "test",
        "--reps",
        "5",
        "--db",
        workers.url,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")},
        timeout=400,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "s3"
    probed = set(runs_by_label(workers.url))
    assert {"s0", "s5", "s3"} <= probed and len(probed) <= 5  # a bisection, not a sweep


def test_concurrent_first_users_of_a_fresh_store(pg_url: str) -> None:
    """Workers starting together on an empty database all migrate it: exactly one creates the tables."""
    code = (
        "import sys; from mptcpkit.lab.store import open_store; open_store(sys.argv[1]).close(); print('ok')"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [o.strip() for o, _ in outs] == ["ok"] * 4, [e for _, e in outs]


def test_fleet_page_on_sqlite_says_postgresql(tmp_path: Path) -> None:
    """The dashboard's Fleet tab over a SQLite store: a clear 400, not a traceback or a 500."""
    from mptcpkit.lab.store import open_store

    db = str(tmp_path / "results.db")
    open_store(db).close()
    with dashboard(db) as base, httpx.Client(base_url=base, timeout=60) as http:
        page = http.get("/fleet")
        assert page.status_code == 400 and "PostgreSQL" in page.text
        assert http.get("/api/fleet").json()["error"].startswith("the fleet lives in PostgreSQL")


def test_bisect_profile_hook_without_profiles(tmp_path: Path) -> None:
    """The hook into lab/profiling answers plainly when the probed runs carry no profile."""
    from mptcpkit.lab.fleet.cli import _attach_profile
    from mptcpkit.lab.fleet.steps import Step
    from mptcpkit.lab.store import open_store

    with open_store(str(tmp_path / "results.db")) as store:
        for label in ("s0", "s1"):
            run = store.create_run(label, {}, {})
            store.finish_run(run.run_id, "complete")
        _attach_profile(store, [Step("s0"), Step("s1")], Step("s1"), "fleet-tiny", tmp_path / "p.json")
    assert not (tmp_path / "p.json").exists()


@needs_root
def test_job_of_a_machine_that_never_returns_is_taken_over(workers: Workers, tmp_path: Path) -> None:
    """k1 dies mid-job and never restarts; k2's heartbeat check retries the job after --stalled-after (5 s)."""
    url = workers.url
    job = submit(url, tiny(tmp_path, duration="20s"), "orphan")
    dead = workers.start("k1")
    wait_for(lambda: _state(workers, "k1").get("child_pid"), 60, "job started on k1")
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    workers.start("k2")
    row = wait_for(
        lambda: (
            queue(url)[job]["machine_id"] == "k2" and queue(url)[job]["state"] == "done" and queue(url)[job]
        ),
        150,
        "k2 took the job over and finished it",
    )
    assert "worker stopped sending heartbeats; retried" in row["error"] and row["attempts"] == 2
