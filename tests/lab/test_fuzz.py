"""Fuzzing in CI (issue 15): random and mutated topology files, random HTTP requests to the dashboard.

Each parser gets a few dozen hypothesis cases here (and a handful of random valid topologies are built for real:
whatever validation accepts must build and leave nothing); `benchmarks/fuzz.py` runs >= 1,000 per parser. A case fails
on any traceback (an exception other than the documented UsageError), a 500, a message over several lines,
a file left behind or a database the dashboard changed.
"""

from __future__ import annotations

import pytest

from fuzz_targets import TARGETS, load_all, run_target, to_toml
from mptcpkit.errors import TopologyError
from mptcpkit.lab.topology_file import parse_topology

load_all()


NEEDS_ROOT = {"topology-build"}  # builds real namespace labs


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.needs_root] if n in NEEDS_ROOT else []) for n in sorted(TARGETS)],
)
def test_fuzz_target(name: str) -> None:
    target = TARGETS[name]
    counts = run_target(target, target.ci_cases)
    assert counts["cases"] >= target.ci_cases // 2, counts
    assert counts["accepted"] + counts["refused"] == counts["cases"]


def test_generated_documents_are_toml() -> None:
    """The fuzzer's TOML writer produces what tomllib reads (else the random target tests only TOML errors)."""
    text = to_toml(
        {"name": "x", "hosts": {"a": {"sysctls": {"net.x": 1.5}}, "b": {}}, "links": [{"a": {"host": "a"}}]}
    )
    with pytest.raises(TopologyError, match="link end 'b' needs a host"):
        parse_topology(text, "gen.toml")
