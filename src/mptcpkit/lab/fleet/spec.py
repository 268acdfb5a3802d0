"""What one fleet job runs: the options of `lab run`, as data, and the `lab run` arguments they become."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.errors import UsageError


@dataclass(frozen=True)
class JobSpec:
    """The `lab run` options a job carries (the worker adds --db and its own label/backend)."""

    scenarios: list[str] = field(default_factory=list)
    suite: str | None = None
    reps: int | None = None
    scale: float | None = None
    emulation: str = "auto"
    engine: str = "mptcpkit"
    seed: int | None = None
    self_check: bool = True
    until_ci: float | None = None
    max_reps: int = 10
    kernel: str | None = None
    modules: str | None = None
    label: str | None = None
    profile: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise UsageError(f"job spec has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**data)

    def run_args(self) -> list[str]:
        """`mptcpkit lab run` arguments (without --db)."""
        args: list[str] = []
        for ref in self.scenarios:
            args += ["--scenario", ref]
        args += ["--suite", self.suite] if self.suite else []
        args += ["--reps", str(self.reps)] if self.reps is not None else []
        args += ["--scale", str(self.scale)] if self.scale is not None else []
        args += ["--emulation", self.emulation, "--engine", self.engine, "--max-reps", str(self.max_reps)]
        args += ["--seed", str(self.seed)] if self.seed is not None else []
        args += [] if self.self_check else ["--no-self-check"]
        args += ["--until-ci", str(self.until_ci)] if self.until_ci is not None else []
        args += ["--kernel", self.kernel] if self.kernel else []
        args += ["--modules", self.modules] if self.modules else []
        args += ["--label", self.label] if self.label else []
        args += ["--profile"] if self.profile else []
        return args
