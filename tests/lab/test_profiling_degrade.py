"""--profile degrades cleanly: perf missing or not allowed -> one line, and the run goes on without profiles.

Kept apart from test_profiling_lab.py, whose module-wide chromium (playwright's event loop) would share the thread
with the runner.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.profiling import perf
from mptcpkit.lab.profiling.cpu_bound import cpu_bound
from mptcpkit.lab.profiling.session import ProfileOptions
from mptcpkit.lab.profiling.storage import load_profiles
from mptcpkit.lab.runner import Reporter, RunOptions, run
from mptcpkit.lab.store import open_store

pytestmark = pytest.mark.needs_root


class Notes(Reporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_no_perf_run_goes_on_without_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """perf missing from PATH: one line, and the run completes, unprofiled."""
    shadow = tmp_path / "bin"  # every command of the PATH but perf
    shadow.mkdir()
    for directory in reversed(os.environ["PATH"].split(":")):
        if Path(directory).is_dir():
            for tool in Path(directory).iterdir():
                if tool.name != "perf" and not tool.name.startswith("perf_"):
                    (shadow / tool.name).unlink(missing_ok=True)
                    (shadow / tool.name).symlink_to(tool)
    monkeypatch.setenv("PATH", str(shadow))
    assert shutil.which("perf") is None and shutil.which("ip") is not None
    notes = Notes()
    with open_store(str(tmp_path / "r.db")) as store:
        options = RunOptions([cpu_bound(seconds=1.5)], reps=1, self_check=False, profile=ProfileOptions())
        report = run(options, NetnsBackend(), store, notes)
        assert store.get_run(report.run_id).status == "complete"
        assert load_profiles(store, report.run_id) == []
        assert "profile" not in store.get_run(report.run_id).environment
    assert len(notes.notes) == 1 and "perf is not installed" in notes.notes[0]
    assert "without profiles" in notes.notes[0]


def test_perf_not_allowed_for_unprivileged_user() -> None:
    """perf_event_paranoid=3 (restored afterwards) and a user without CAP_PERFMON: refused, one clear line."""
    paranoid = Path("/proc/sys/kernel/perf_event_paranoid")
    before = paranoid.read_text().strip()
    # perf.py is stdlib-only: a copy runs under the system python as `nobody` (who cannot read the worktree).
    probe_dir = Path(tempfile.mkdtemp(prefix="mptcpkit-perf-test-"))  # /tmp: `nobody` can reach it
    shutil.copy(perf.__file__, probe_dir / "perf_probe.py")
    for path in (probe_dir, probe_dir / "perf_probe.py"):
        path.chmod(0o755)
    code = "import perf_probe as p; s = p.probe(); print('OK' if s.ok else 'REFUSED ' + s.reason)"
    try:
        paranoid.write_text("3")
        done = subprocess.run(
            ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=probe_dir,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(probe_dir)},
        )
    finally:
        paranoid.write_text(before)
        shutil.rmtree(probe_dir, ignore_errors=True)
    assert paranoid.read_text().strip() == before
    assert done.stdout.startswith("REFUSED perf record -a is not allowed here"), done.stdout + done.stderr
    assert "perf_event_paranoid=3" in done.stdout and "\n" not in done.stdout.strip()
