"""Confidence interval of a median, for "repeat until confident" (`lab run --until-ci PCT`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mptcpkit.lab.analysis.ranks import median_rank


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free CI of the median from order statistics; None when n is too small for `confidence`
    (at 95 % that is n < 6: even [min, max] of 5 samples covers the median only 93.75 % of the time)."""
    x = np.sort(np.asarray(samples, dtype=float))
    k = median_rank(x.size, confidence)
    if k == 0:
        return None
    return float(x[k - 1]), float(x[x.size - k])


def ci_width_pct(samples: Sequence[float], confidence: float = 0.95) -> float:
    """Width of the median's CI in % of the median; math.inf while too few samples to bound it."""
    ci = median_ci(samples, confidence)
    if ci is None:
        return math.inf
    median = float(np.median(np.asarray(samples, dtype=float)))
    if median == 0.0:
        return 0.0 if ci[0] == ci[1] else math.inf
    return (ci[1] - ci[0]) / abs(median) * 100.0
