"""Change points in a history series (one value per run, oldest first).

Three stages, so noise and single outliers do not raise alarms:
  1. single outliers (a value far from the runs on *both* sides of it, by more than 4 noise sigmas) are
     replaced by the median of their neighbours; a value at a real step matches one side, so it stays;
  2. ruptures' PELT with a median-based (L1) cost proposes candidate change points generously, each segment
     at least `min_size` runs long, so one odd run can never form a segment of its own;
  3. every candidate must then hold up between its neighbouring change points: a rank (Mann-Whitney)
     statistic whose p-value comes from a permutation test of the *best* split anywhere in that stretch
     (so picking the best-looking split does not make noise look significant), and a change of the medians
     (of the raw values) of at least `min_effect`. The weakest failing candidate is dropped and its
     neighbours re-tested, until every remaining one holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import ruptures as rpt
from scipy import stats

from mptcpkit.lab.analysis.compare import DEFAULT_MIN_EFFECT

DEFAULT_MIN_SIZE = 3
DEFAULT_ALPHA = 0.01
"""Stricter than an A/B comparison's 0.05: a history is tested at many places, and a false alarm there sends
someone bisecting kernels for nothing."""
DEFAULT_PERMUTATIONS = 4999
NOISE_FLOOR = 1e-3
"""Noise below 0.1 % of the level is treated as 0.1 %: a near-constant series must not make every wiggle
look like an outlier or a step."""


@dataclass(frozen=True, slots=True)
class ChangePoint:
    """The series changed level at `index`: values[index] is the first value of the new level."""

    index: int
    before_median: float
    """Median of the segment before (back to the previous change point)."""
    after_median: float
    """Median of the segment after (up to the next change point)."""
    change_pct: float
    p_value: float


def _noise(y: np.ndarray) -> float:
    """Robust noise scale from first differences (a step moves only one difference)."""
    d = np.diff(y)
    mad = float(np.median(np.abs(d - np.median(d))))
    return 1.4826 * mad / math.sqrt(2.0)


def _despike(y: np.ndarray, sigma: float, min_effect: float, k: float = 4.0, reach: int = 2) -> np.ndarray:
    """Replace each single outlier (off by > k sigma and > min_effect from both sides) by its neighbours'
    median."""
    out = y.copy()
    for i in range(y.size):
        left, right = y[max(0, i - reach) : i], y[i + 1 : i + 1 + reach]
        sides = [side for side in (left, right) if side.size]
        limit = max(k * sigma, min_effect)
        if sides and all(abs(y[i] - float(np.median(side))) > limit for side in sides):
            out[i] = float(np.median(np.concatenate(sides)))
    return out


def _candidates(y: np.ndarray, sigma: float, min_size: int) -> list[int]:
    penalty = sigma * math.log(y.size)  # generous: stage 2 prunes
    ends = rpt.Pelt(model="l1", min_size=min_size, jump=1).fit(y.reshape(-1, 1)).predict(pen=penalty)
    return [int(e) for e in ends[:-1]]


def _split_z(ranks: np.ndarray, min_size: int) -> np.ndarray:
    """|z| of the Mann-Whitney statistic for every split position (rows: rank vectors; columns: cuts)."""
    n = ranks.shape[-1]
    cuts = np.arange(min_size, n - min_size + 1)
    left_rank_sum = np.cumsum(ranks, axis=-1)[..., cuts - 1]
    u = left_rank_sum - cuts * (cuts + 1) / 2.0
    mean = cuts * (n - cuts) / 2.0
    sd = np.sqrt(cuts * (n - cuts) * (n + 1) / 12.0)
    z: np.ndarray = np.abs(u - mean) / sd
    return z


def _test(
    x: np.ndarray, cleaned: np.ndarray, start: int, cut: int, end: int, min_size: int, permutations: int
) -> tuple[float, float, float, float]:
    """(p-value, relative change, median before, median after) of a split at `cut` within [start, end).

    Medians come from the raw values `x`, the rank test from the de-spiked `cleaned` values.
    """
    segment = cleaned[start:end]
    mb, ma = float(np.median(x[start:cut])), float(np.median(x[cut:end]))
    change = ma / mb - 1.0 if mb != 0.0 else (0.0 if ma == mb else math.inf)
    ranks = stats.rankdata(segment)
    observed = float(_split_z(ranks, min_size)[cut - start - min_size])
    rng = np.random.default_rng(0)  # fixed: the same history always gives the same answer
    shuffled = rng.permuted(np.broadcast_to(ranks, (permutations, ranks.size)), axis=1)
    best = _split_z(shuffled, min_size).max(axis=1)
    p = float((1 + np.count_nonzero(best >= observed - 1e-9)) / (1 + permutations))
    return p, change, mb, ma


def change_points(
    values: Sequence[float],
    *,
    min_effect: float = DEFAULT_MIN_EFFECT,
    alpha: float = DEFAULT_ALPHA,
    min_size: int = DEFAULT_MIN_SIZE,
    permutations: int = DEFAULT_PERMUTATIONS,
) -> list[ChangePoint]:
    """Change points of `values` (one number per run, oldest first), each with before/after medians."""
    x = np.asarray(values, dtype=float)
    if not np.isfinite(x).all():
        raise ValueError("history values must be finite numbers")
    if x.size < 2 * min_size:
        return []
    scale = float(np.median(np.abs(x))) or 1.0
    y = x / scale
    sigma = max(_noise(y), NOISE_FLOOR)
    cleaned = _despike(y, sigma, min_effect)
    cuts = _candidates(cleaned, sigma, min_size)
    while cuts:
        bounds = [0, *cuts, x.size]
        tests = [
            _test(x, cleaned, bounds[i], bounds[i + 1], bounds[i + 2], min_size, permutations)
            for i in range(len(cuts))
        ]
        failing = [
            (p, -abs(c), i) for i, (p, c, _, _) in enumerate(tests) if p >= alpha or abs(c) < min_effect
        ]
        if not failing:
            return [
                ChangePoint(index=cut, before_median=mb, after_median=ma, change_pct=c * 100.0, p_value=p)
                for cut, (p, c, mb, ma) in zip(cuts, tests, strict=True)
            ]
        del cuts[max(failing)[2]]
    return []
