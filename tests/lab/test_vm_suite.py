"""`mptcpkit lab run --kernel`: the suite inside a guest booted on the Debian kernel (TCG here), with netem."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.lab.store import open_store

pytestmark = [pytest.mark.needs_root, pytest.mark.slow, pytest.mark.vm, pytest.mark.timeout(1800)]


def test_suite_runs_in_a_vm_on_the_distribution_kernel(tmp_path: Path) -> None:
    db = tmp_path / "vm.db"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mptcpkit",
            "lab",
            "run",
            "--kernel",
            "default",
            "-s",
            "mptcp-single",
            "-s",
            "simult-balanced",
            "--reps",
            "1",
            "--scale",
            "0.5",
            "--no-self-check",
            "--label",
            "debian-kernel",
            "--db",
            str(db),
            "--json",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    document = json.loads(proc.stdout)
    env = document["environment"]
    assert env["backend"] == "vm"
    assert env["vm"]["accel"] in ("kvm", "tcg")
    assert env["kernel_release"] == env["vm"]["kernel_release"] != "", env
    assert env["emulation"] == "netem", "the Debian kernel has netem: the lab must use it there"
    by_key = {(r["scenario"], r["metric"]): r for r in document["results"]}
    assert by_key[("simult-balanced", "subflows")]["samples"] == [2.0]
    # The selftest's own bound holds even under TCG; raw goodput is reported, whatever it is.
    assert by_key[("simult-balanced", "transfer_time")]["passed"]
    assert by_key[("mptcp-single", "goodput")]["samples"][0] > 0
    with open_store(str(db)) as store:
        run = store.get_run("debian-kernel")
        assert run.status == "complete"
        assert run.environment["kernel_release"].startswith("6.")
