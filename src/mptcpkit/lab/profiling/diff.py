"""Differential profile: which functions and call paths took a larger (or smaller) share of the CPU.

Pure. Shares are taken over busy samples (idle-loop samples left out, so a CPU-bound run that saturates the
CPUs less is not mistaken for cheaper code). For each function:

- self share: samples whose leaf is the function (where the CPU was), and
- total share: samples with the function anywhere on the stack (what it and its callees cost).

The difference new - base is estimated per repetition, so its confidence interval reflects run-to-run variation:
a bootstrap over repetitions (resampling whole repetitions on each side) when both sides have >= 3, else a
two-proportion normal interval on the pooled samples (samples of one repetition are not independent, so with
few repetitions the interval is optimistic; the method is reported).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mptcpkit.lab.profiling.attribution import is_other
from mptcpkit.lab.profiling.folded import is_idle

#: MPTCP's own kernel functions, highlighted everywhere.
MPTCP_FUNCTION = re.compile(r"^(__)?mptcp_|^subflow_")
BOOTSTRAP_ROUNDS = 2000
MIN_REPS_FOR_BOOTSTRAP = 3

Method = Literal["bootstrap", "binomial"]


def is_mptcp(name: str) -> bool:
    return bool(MPTCP_FUNCTION.match(name))


@dataclass(frozen=True)
class RepShares:
    """One repetition reduced to what the comparison needs: busy sample count and per-function counts."""

    busy: int
    idle: int
    other: int
    self_counts: Counter[str]
    total_counts: Counter[str]
    path_counts: Counter[str]


def tail(stack: str, depth: int) -> str:
    """The last `depth` frames of a folded stack (leaf side): the call path that matters for a hot function."""
    return ";".join(stack.split(";")[1:][-depth:])


def reduce_rep(stacks: Mapping[str, int], path_depth: int = 6) -> RepShares:
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    busy = idle = other = 0
    for stack, count in stacks.items():
        if is_other(stack):  # another process on this machine, not the lab's
            other += count
            continue
        if is_idle(stack):
            idle += count
            continue
        busy += count
        frames = stack.split(";")[1:] or stack.split(";")  # the root frame is the command name
        self_counts[frames[-1]] += count
        for name in set(frames):
            total_counts[name] += count
        paths[tail(stack, path_depth)] += count
    return RepShares(busy, idle, other, self_counts, total_counts, paths)


@dataclass(frozen=True)
class ShareChange:
    """One function (or call path): share of busy samples in base and new, their difference with a CI."""

    name: str
    base_share: float
    new_share: float
    delta: float
    ci_low: float
    ci_high: float
    method: Method
    mptcp: bool

    @property
    def confident(self) -> bool:
        """The interval excludes zero."""
        return self.ci_low > 0 or self.ci_high < 0

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_pct": 100 * self.base_share,
            "new_pct": 100 * self.new_share,
            "delta_pct": 100 * self.delta,
            "ci_low_pct": 100 * self.ci_low,
            "ci_high_pct": 100 * self.ci_high,
            "method": self.method,
            "confident": self.confident,
            "mptcp": self.mptcp,
        }


@dataclass
class ProfileDiff:
    """The differential view of one scenario between two runs."""

    scenario: str
    base_reps: int
    new_reps: int
    base_samples: int
    new_samples: int
    self_changes: list[ShareChange] = field(default_factory=list)
    total_changes: list[ShareChange] = field(default_factory=list)
    path_changes: list[ShareChange] = field(default_factory=list)
    flame: dict[str, Any] = field(default_factory=dict)
    event: str = ""
    other_fraction: float = 0.0
    """Share of all non-idle samples taken in processes outside the lab (left out of everything above)."""

    def to_json(self, top: int = 20) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "event": self.event,
            "base_reps": self.base_reps,
            "new_reps": self.new_reps,
            "base_samples": self.base_samples,
            "new_samples": self.new_samples,
            "other_fraction": self.other_fraction,
            "self": [c.to_json() for c in self.self_changes[:top]],
            "total": [c.to_json() for c in self.total_changes[:top]],
            "paths": [c.to_json() for c in self.path_changes[:top]],
        }


def _shares(reps: Sequence[RepShares], key: str, name: str) -> np.ndarray:
    return np.array([getattr(r, key)[name] / r.busy if r.busy else 0.0 for r in reps])


def _interval(
    base: Sequence[RepShares], new: Sequence[RepShares], key: str, name: str, rng: np.random.Generator
) -> tuple[float, float, float, float, Method]:
    """(base share, new share, ci_low, ci_high, method) of new - base for one function or path."""
    b_counts = sum(getattr(r, key)[name] for r in base)
    n_counts = sum(getattr(r, key)[name] for r in new)
    b_total = sum(r.busy for r in base) or 1
    n_total = sum(r.busy for r in new) or 1
    p_b, p_n = b_counts / b_total, n_counts / n_total
    if len(base) >= MIN_REPS_FOR_BOOTSTRAP and len(new) >= MIN_REPS_FOR_BOOTSTRAP:
        b_sh, n_sh = _shares(base, key, name), _shares(new, key, name)
        bi = rng.integers(0, len(b_sh), size=(BOOTSTRAP_ROUNDS, len(b_sh)))
        ni = rng.integers(0, len(n_sh), size=(BOOTSTRAP_ROUNDS, len(n_sh)))
        deltas = n_sh[ni].mean(axis=1) - b_sh[bi].mean(axis=1)
        low, high = np.percentile(deltas, [2.5, 97.5])
        return p_b, p_n, float(low), float(high), "bootstrap"
    se = math.sqrt(p_b * (1 - p_b) / b_total + p_n * (1 - p_n) / n_total)
    return p_b, p_n, p_n - p_b - 1.96 * se, p_n - p_b + 1.96 * se, "binomial"


def _changes(
    base: Sequence[RepShares], new: Sequence[RepShares], key: str, rng: np.random.Generator, top: int
) -> list[ShareChange]:
    names: Counter[str] = Counter()
    b_total = sum(r.busy for r in base) or 1
    n_total = sum(r.busy for r in new) or 1
    for r in base:
        for name, count in getattr(r, key).items():
            names[name] -= count / b_total
    for r in new:
        for name, count in getattr(r, key).items():
            names[name] += count / n_total
    # Rank by pooled |delta| first (cheap), then compute intervals for the leaders only.
    leaders = sorted(names, key=lambda n: (-abs(names[n]), n))[: top * 2]
    out = []
    for name in leaders:
        p_b, p_n, low, high, method = _interval(base, new, key, name, rng)
        out.append(
            ShareChange(name, p_b, p_n, p_n - p_b, low, high, method, is_mptcp(name.rsplit(";", 1)[-1]))
        )
    # What grew comes first (a regression's suspects), then what shrank, then changes within the noise.
    out.sort(key=lambda c: (not c.confident, c.delta <= 0, -abs(c.delta), c.name))
    return out[:top]


def differential(
    scenario: str,
    base: Sequence[Mapping[str, int]],
    new: Sequence[Mapping[str, int]],
    *,
    top: int = 25,
    path_depth: int = 6,
    seed: int = 0,
    event: str = "",
) -> ProfileDiff:
    """Compare the folded stacks of base's and new's profiled repetitions (one mapping per repetition)."""
    rng = np.random.default_rng(seed)
    b = [reduce_rep(s, path_depth) for s in base]
    n = [reduce_rep(s, path_depth) for s in new]
    diff = ProfileDiff(scenario, len(b), len(n), sum(r.busy for r in b), sum(r.busy for r in n), event=event)
    other = sum(r.other for r in b + n)
    diff.other_fraction = other / (other + diff.base_samples + diff.new_samples or 1)
    if not b or not n:
        return diff
    diff.self_changes = _changes(b, n, "self_counts", rng, top)
    diff.total_changes = _changes(b, n, "total_counts", rng, top)
    diff.path_changes = _changes(b, n, "path_counts", rng, top)
    diff.flame = flame_tree(base, new)
    return diff


def _busy(profiles: Iterable[Mapping[str, int]]) -> Counter[str]:
    merged: Counter[str] = Counter()
    for stacks in profiles:
        for stack, count in stacks.items():
            if not is_idle(stack) and not is_other(stack):
                merged[stack] += count
    return merged


def flame_tree(
    base: Sequence[Mapping[str, int]], new: Sequence[Mapping[str, int]], min_fraction: float = 0.0005
) -> dict[str, Any]:
    """d3-flame-graph data for a differential graph: new's stacks (value = samples, inclusive), `delta` = new's self
    samples minus base's, base scaled to new's sample count. Frames below `min_fraction` of new are pruned."""
    b, n = _busy(base), _busy(new)
    b_total, n_total = sum(b.values()), sum(n.values())
    scale = n_total / b_total if b_total else 0.0
    root: dict[str, Any] = {"name": "all", "value": 0, "delta": 0.0, "children": {}}
    for stack, count in n.items():
        node = root
        node["value"] += count
        for frame in stack.split(";"):
            node = node["children"].setdefault(
                frame, {"name": frame, "value": 0, "delta": 0.0, "children": {}}
            )
            node["value"] += count
        node["delta"] += count
    for stack, count in b.items():  # base's self samples, where new has the same path
        node = root
        for frame in stack.split(";"):
            node = node["children"].get(frame)
            if node is None:
                break
        else:
            node["delta"] -= count * scale
    limit = min_fraction * n_total

    def finish(node: dict[str, Any]) -> dict[str, Any]:
        kids = [finish(c) for c in node["children"].values() if c["value"] >= limit]
        out = {"name": node["name"], "value": node["value"], "delta": round(node["delta"], 2)}
        if kids:
            out["children"] = kids
        if is_mptcp(node["name"]):
            out["mptcp"] = True
        return out

    return finish(root)
