"""The results store against real SQLite files and a real PostgreSQL server (see conftest.pg_server)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.lab.store import LATEST_VERSION, Result, Series, environment_key, open_store, run_to_json
from mptcpkit.lab.store.db import connect
from mptcpkit.lab.store.schema import current_version, migrate

ENV = {"hostname": "lab1", "cpu_model": "Test CPU", "kernel": "6.18.0", "mptcp": {"enabled": 1}}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "results.db")
    return str(request.getfixturevalue("pg_url"))


def _result(run_id: str, scenario: str, samples: list[float], metric: str = "goodput") -> Result:
    return Result(
        run_id=run_id,
        scenario=scenario,
        metric=metric,
        unit="Mbit/s",
        direction="higher",
        samples=samples,
        expected=20.0,
        score=sorted(samples)[len(samples) // 2] / 20.0,
        passed=True,
        rule="median >= 0.9 * expected",
        details={"reps": [{"mss": 1448}] * len(samples)},
    )


def test_round_trip(store_url: str) -> None:
    with open_store(store_url) as store:
        run = store.create_run("v6.18", ENV, {"scenarios": ["balanced"], "reps": 3, "backend": "netns"})
        assert run.status == "running" and len(run.run_id) == 12
        store.add_result(_result(run.run_id, "balanced", [18.5, 18.9, 18.7]))
        store.add_result(Result(run.run_id, "balanced", "connect_time", "ms", "lower", [0.5, 0.4, 0.6]))
        store.add_series(Series(run.run_id, "balanced", 0, "goodput", 0.1, [10.0, 19.0, 18.8]))
        store.add_series(
            Series(run.run_id, "balanced", 0, "subflow:10.0.1.1->10.0.1.2", 0.1, [5.0, 9.5, 9.4])
        )
        store.finish_run(run.run_id, "complete")

    with open_store(store_url) as store:  # a fresh connection sees everything
        got = store.get_run(run.run_id)
        assert (got.label, got.status, got.environment, got.config["reps"]) == ("v6.18", "complete", ENV, 3)
        assert got.finished_at is not None and got.finished_at >= got.started_at
        assert got.process is not None and got.process.pid == os.getpid()
        results = store.results(run.run_id)
        assert [(r.metric, r.direction, r.samples) for r in results] == [
            ("goodput", "higher", [18.5, 18.9, 18.7]),
            ("connect_time", "lower", [0.5, 0.4, 0.6]),
        ]
        assert results[0].details == {"reps": [{"mss": 1448}] * 3} and results[0].passed is True
        assert results[1].expected is None and results[1].passed is False
        assert [s.name for s in store.series(run.run_id)] == ["goodput", "subflow:10.0.1.1->10.0.1.2"]
        assert store.series(run.run_id, "balanced")[1].values == [5.0, 9.5, 9.4]
        assert store.series(run.run_id, "other") == []

        doc = run_to_json(store, "latest")
        json.dumps(doc)  # plain JSON types only
        assert doc["run_id"] == run.run_id and doc["environment"] == ENV
        first = doc["results"][0]
        assert {
            k: first[k] for k in ("scenario", "metric", "unit", "samples", "median", "expected", "passed")
        } == {
            "scenario": "balanced",
            "metric": "goodput",
            "unit": "Mbit/s",
            "samples": [18.5, 18.9, 18.7],
            "median": 18.7,
            "expected": 20.0,
            "passed": True,
        }
        assert first["score"] == pytest.approx(18.7 / 20)


def test_refs_list_history_and_replace(store_url: str) -> None:
    with open_store(store_url) as store:
        ids = []
        for i, label in enumerate(["a", "b", "a"]):
            env = dict(ENV, hostname="lab2") if i == 1 else ENV
            run = store.create_run(label, env, {})
            store.add_result(_result(run.run_id, "balanced", [float(10 + i)] * 3))
            store.finish_run(run.run_id, "complete")
            ids.append(run.run_id)
        assert store.get_run("latest").run_id == ids[2]
        assert store.get_run("a").run_id == ids[2]  # a label means its latest run
        assert store.get_run("b").run_id == ids[1]
        assert store.get_run(ids[0][:8]).run_id == ids[0]
        assert store.get_run(ids[0][:6].upper()).run_id == ids[0]
        assert [r.run_id for r in store.list_runs(10)] == ids[::-1]
        assert [r.run_id for r in store.list_runs(1)] == ids[2:]
        assert [r.run_id for r in store.list_runs(10, label="a")] == [ids[2], ids[0]]

        hist = store.history("balanced", "goodput")
        assert [(run.run_id, res.samples[0]) for run, res in hist] == [
            (ids[0], 10.0),
            (ids[1], 11.0),
            (ids[2], 12.0),
        ]
        key = environment_key(ENV)
        assert [run.run_id for run, _ in store.history("balanced", "goodput", key)] == [ids[0], ids[2]]
        assert store.history("balanced", "nothing") == []
        assert store.metrics() == [("balanced", "goodput")]

        # Adding more repetitions replaces the result of (run, scenario, metric).
        store.add_result(_result(ids[2], "balanced", [12.0, 12.0, 12.0, 13.0]))
        assert [r.samples for r in store.results(ids[2])] == [[12.0, 12.0, 12.0, 13.0]]

        for bad in ("nope", "ffffffffff", ""):
            with pytest.raises(UsageError, match=r"nope|ffffffffff|empty run reference"):
                store.get_run(bad)
        with pytest.raises(UsageError, match="no run 'deadbeef0000'"):
            store.add_result(_result("deadbeef0000", "balanced", [1.0]))
        with pytest.raises(ValueError, match="direction"):
            store.add_result(Result(ids[0], "s", "m", "u", "sideways", [1.0]))  # type: ignore[arg-type]


def test_ambiguous_prefix_and_empty_db(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with open_store(str(path)) as store:
        with pytest.raises(UsageError, match=r"no runs in results database .* yet"):
            store.get_run("latest")
        with pytest.raises(UsageError, match=r"no run 'abc1' .*empty"):
            store.get_run("abc1")
        assert store.list_runs() == []
        one, two = store.create_run(None, {}, {}), store.create_run(None, {}, {})
    raw = sqlite3.connect(path)
    raw.execute("UPDATE runs SET run_id = 'abcd00000001' WHERE run_id = ?", (one.run_id,))
    raw.execute("UPDATE runs SET run_id = 'abcd00000002' WHERE run_id = ?", (two.run_id,))
    raw.commit()
    raw.close()
    with (
        open_store(str(path)) as store,
        pytest.raises(UsageError, match=r"ambiguous.*abcd00000002.*abcd00000001"),
    ):
        store.get_run("abcd")


def test_default_path_and_wal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPTCPKIT_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    with open_store(None) as store:
        assert store.where == str(tmp_path / "xdg" / "mptcpkit" / "results.db")
        store.create_run("x", {}, {})
    raw = sqlite3.connect(tmp_path / "xdg" / "mptcpkit" / "results.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    raw.close()
    monkeypatch.setenv("MPTCPKIT_DB", str(tmp_path / "env.db"))
    with open_store(None) as store:
        assert store.where == str(tmp_path / "env.db")


def test_bad_locations(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        open_store(str(tmp_path))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot create the directory"):
        open_store(str(tmp_path / "file" / "results.db"))
    (tmp_path / "garbage.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(UsageError, match=r"garbage.db"):
        open_store(str(tmp_path / "garbage.db"))
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(UsageError, match="not an mptcpkit results database"):
        open_store(str(tmp_path / "other.db"))
    with pytest.raises(UsageError, match="unsupported results database URL mysql://u:\\*\\*\\*@h/db"):
        open_store("mysql://u:secret@h/db")


def test_unreachable_postgres(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match=r"cannot connect to PostgreSQL .*u:\*\*\*@") as info:
        open_store(f"postgresql://u:secret@/db?host={tmp_path}&port=1")
    assert "secret" not in str(info.value)
    with pytest.raises(EnvironmentProblem, match="cannot connect to PostgreSQL"):
        open_store("postgresql://nobody@127.0.0.1:1/db?connect_timeout=3")


def test_migration_from_v1(store_url: str) -> None:
    db = connect(store_url)
    assert migrate(db, target=1) == 0 and current_version(db) == 1
    started = db.to_db_time(
        __import__("datetime").datetime(2026, 1, 2, 3, 4, 5, tzinfo=__import__("datetime").UTC)
    )
    db.execute(
        "INSERT INTO runs (run_id, label, started_at, finished_at, status, environment, config) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("0123456789ab", "old", started, started, "complete", json.dumps(ENV), json.dumps({"reps": 2})),
    )
    db.execute(
        "INSERT INTO results (run_id, scenario, metric, unit, direction, samples, expected, score, passed, "
        "rule, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "0123456789ab",
            "balanced",
            "goodput",
            "Mbit/s",
            "higher",
            "[18.0, 19.0]",
            20.0,
            0.925,
            True,
            "r",
            "{}",
        ),
    )
    db.close()

    with open_store(store_url) as store:
        run = store.get_run("old")
        assert (run.run_id, run.status, run.process, run.started_at.year) == (
            "0123456789ab",
            "complete",
            None,
            2026,
        )
        assert store.results(run.run_id)[0].samples == [18.0, 19.0]
        # The migration back-filled the environment key, and the new series table works.
        assert [r.run_id for r, _ in store.history("balanced", "goodput", environment_key(ENV))] == [
            run.run_id
        ]
        store.add_series(Series(run.run_id, "balanced", 0, "goodput", 0.1, [1.0]))
        assert len(store.series(run.run_id)) == 1
    db = connect(store_url)
    assert current_version(db) == LATEST_VERSION
    db.close()


def test_newer_schema_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    open_store(str(path)).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(UsageError, match=f"schema version {LATEST_VERSION + 1}, newer"):
        open_store(str(path))


WRITER = textwrap.dedent("""
    import sys, time
    from mptcpkit.lab.store import Result, open_store
    store = open_store(sys.argv[1])
    run = store.create_run("killed", {"hostname": "x"}, {"reps": 3})
    store.add_result(Result(run.run_id, "balanced", "goodput", "Mbit/s", "higher", [18.0, 18.5]))
    print(run.run_id, flush=True)
    time.sleep(120)
""")


def test_killed_run_is_incomplete(store_url: str) -> None:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, store_url], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        assert len(run_id) == 12, f"writer failed (exit {proc.poll()})"
        with open_store(store_url) as store:
            assert store.get_run(run_id).status == "running"  # alive: not touched
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with open_store(store_url) as store:
        run = store.get_run(run_id)
        assert run.status == "incomplete" and run.finished_at is None
        assert store.results(run_id)[0].samples == [18.0, 18.5]
        assert [r.status for r in store.list_runs(label="killed")] == ["incomplete"]
    db = connect(store_url)  # the verdict was written back, not only shown
    assert db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)) == [("incomplete",)]
    db.close()


def test_reader_while_writer_holds_a_run(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    with open_store(path) as writer, open_store(path) as reader:
        run = writer.create_run("live", {}, {})
        writer.add_result(_result(run.run_id, "balanced", [1.0, 2.0, 3.0]))
        assert reader.get_run("live").status == "running"
        assert reader.results(run.run_id)[0].samples == [1.0, 2.0, 3.0]
