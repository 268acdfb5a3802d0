"""Issue 15 in the store: read commands never create a database file; an interrupted run is `incomplete`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.lab.store import open_store

MPTCPKIT = [sys.executable, "-m", "mptcpkit"]


@pytest.mark.parametrize(
    "argv",
    [
        ["lab", "runs"],
        ["lab", "show", "latest"],
        ["lab", "compare", "a", "b"],
        ["lab", "history"],
    ],
)
def test_read_commands_do_not_create_the_database(tmp_path: Path, argv: list[str]) -> None:
    typo = tmp_path / "typo.db"
    env = {k: v for k, v in os.environ.items() if k != "MPTCPKIT_DB"}
    proc = subprocess.run(
        [*MPTCPKIT, *argv, "--db", str(typo)], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    assert f"no results database at {typo}" in proc.stderr and "Traceback" not in proc.stderr
    assert not typo.exists() and list(tmp_path.iterdir()) == []


def test_open_store_create_false(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results database"):
        open_store(str(tmp_path / "nope.db"), create=False)
    assert not (tmp_path / "nope.db").exists()
    open_store(str(tmp_path / "yes.db")).close()
    open_store(str(tmp_path / "yes.db"), create=False).close()


@pytest.mark.needs_root
def test_interrupted_run_is_stored_incomplete(tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM, which the CLI turns into KeyboardInterrupt) half-way: `incomplete`, not `failed`."""
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.runner import Reporter, RunOptions, run
    from mptcpkit.lab.scenarios import default_suite

    class StopAfterFirst(Reporter):
        def rep_done(self, scenario: str, rep: int, outcome: object) -> None:
            raise KeyboardInterrupt("test: Ctrl-C")

    created: list[str] = []
    scenario = default_suite(scale=0.25)[0]
    with open_store(str(tmp_path / "r.db")) as store:
        with pytest.raises(KeyboardInterrupt):
            run(
                RunOptions(scenarios=[scenario], reps=3, self_check=False, seed=1),
                NetnsBackend(),
                store,
                StopAfterFirst(),
                on_run_created=created.append,
            )
        assert store.get_run(created[0]).status == "incomplete"
