"""The results data model: the contract between the lab runner, the store, analysis and reports.

Plain dataclasses, no I/O. JSON-able fields (`environment`, `config`, `details`) hold only JSON types.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

RunStatus = Literal["running", "complete", "incomplete", "failed"]
RUN_STATUSES: tuple[str, ...] = ("running", "complete", "incomplete", "failed")

Direction = Literal["higher", "lower"]
DIRECTIONS: tuple[str, ...] = ("higher", "lower")

#: Environment fields that identify *where* a run was measured (not *what* was measured). Runs are only
#: comparable in history when these agree; the label and the kernel release are deliberately absent because
#: they are what a user changes between runs to find a regression.
ENVIRONMENT_KEY_FIELDS: tuple[str, ...] = ("hostname", "cpu_model", "cpu_count", "backend", "emulation")


def utcnow() -> datetime:
    return datetime.now(UTC)


def environment_key(environment: dict[str, Any]) -> str:
    """A short stable key of the machine-identity fields of `environment` (see ENVIRONMENT_KEY_FIELDS).

    An explicit `environment["environment_key"]` string wins, so a team can group machines by hand.
    """
    explicit = environment.get("environment_key")
    if isinstance(explicit, str) and explicit:
        return explicit
    picked = {k: environment[k] for k in ENVIRONMENT_KEY_FIELDS if k in environment}
    digest = hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()
    return digest[:12]


@dataclass(frozen=True, slots=True)
class ProcessRef:
    """The process (host, boot, pid) writing a run: lets readers tell a live run from a dead one."""

    hostname: str
    boot_id: str
    pid: int
    start_ticks: int
    """Process start time in clock ticks since boot (/proc/PID/stat field 22): guards against pid reuse."""


@dataclass(slots=True)
class Run:
    """One invocation of the lab runner."""

    run_id: str
    """Short unique id (12 hex characters)."""
    label: str | None
    started_at: datetime
    finished_at: datetime | None
    status: RunStatus
    environment: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    process: ProcessRef | None = None
    """The writer process; None for runs imported from elsewhere or written by an old schema."""

    @property
    def environment_key(self) -> str:
        return environment_key(self.environment)


@dataclass(slots=True)
class Result:
    """One metric of one scenario in one run, with every repetition's raw sample."""

    run_id: str
    scenario: str
    metric: str
    unit: str
    direction: Direction
    """"higher" when a larger value is better (goodput), "lower" when smaller is better (latency)."""
    samples: list[float]
    """One per repetition, in repetition order."""
    expected: float | None = None
    score: float | None = None
    """median / expected."""
    passed: bool = False
    rule: str = ""
    """The pass rule in words, e.g. "median >= 0.985 * expected"."""
    details: dict[str, Any] = field(default_factory=dict)
    sweep: str | None = None
    """For a case of a sweep: the sweep's name (the scenario is then e.g. "unequal[subflows=4]")."""
    params: dict[str, Any] | None = None
    """For a case of a sweep: its matrix parameters (schema v3)."""

    @property
    def median(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def minimum(self) -> float | None:
        return min(self.samples) if self.samples else None

    @property
    def maximum(self) -> float | None:
        return max(self.samples) if self.samples else None

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (sample stdev / mean) of the finite samples; None below 2 or at mean 0.

        A repetition may store NaN (e.g. a stall that never recovered): statistics.stdev would raise on it.
        """
        finite = [v for v in self.samples if math.isfinite(v)]
        if len(finite) < 2:
            return None
        mean = statistics.fmean(finite)
        return statistics.stdev(finite) / abs(mean) if mean else None


@dataclass(slots=True)
class Series:
    """A time series of one repetition of one scenario (goodput, or one subflow's goodput), for reports."""

    run_id: str
    scenario: str
    rep: int
    name: str
    """E.g. "goodput" or "subflow:10.0.1.1->10.0.1.2"."""
    interval_s: float
    values: list[float]
