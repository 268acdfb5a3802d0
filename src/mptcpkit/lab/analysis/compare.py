"""A/B comparison of two sets of raw samples: is the new one a regression, an improvement, or neither?

The rule (docs/statistics.md explains why):
  - fewer than `min_samples` on a side, or too few to bound the change at `confidence`: inconclusive;
  - the whole confidence interval of the relative change is beyond `min_effect` on the bad side: regression
    (on the good side: improvement);
  - the rank test is significant and the median moved by at least `min_effect`, but the interval still
    reaches inside `min_effect`: inconclusive (probably a change; add repetitions or confirm);
  - otherwise: unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from mptcpkit.lab.analysis.ranks import hl_rank

Verdict = Literal["regression", "improvement", "unchanged", "inconclusive"]
DirectionName = Literal["higher", "lower"]

DEFAULT_MIN_EFFECT = 0.03
"""3 %: below the run-to-run noise of shaped links on a shared box, and small enough to matter for goodput."""
DEFAULT_ALPHA = 0.05
DEFAULT_CONFIDENCE = 0.95
MIN_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class Comparison:
    """Outcome of comparing new samples with base samples of one metric."""

    change_pct: float | None
    """Relative change of the median, new vs base, in % (None when undefined: empty side, base median 0)."""
    ci_low: float | None
    """Lower end of the CI of the relative change, in % (None when it cannot be bounded)."""
    ci_high: float | None
    p_value: float | None
    """Two-sided Mann-Whitney U p-value on the raw samples."""
    verdict: Verdict
    reason: str
    """One sentence a user can read: why this verdict."""
    base_median: float | None = None
    new_median: float | None = None
    n_base: int = 0
    n_new: int = 0
    min_effect: float = DEFAULT_MIN_EFFECT
    confidence: float = DEFAULT_CONFIDENCE


def _clean(samples: Sequence[float]) -> np.ndarray:
    x: np.ndarray = np.asarray(samples, dtype=float)
    finite: np.ndarray = x[np.isfinite(x)]
    return finite


def relative_change_ci(base: np.ndarray, new: np.ndarray, confidence: float) -> tuple[float, float] | None:
    """Hodges-Lehmann CI of the relative change (as a fraction): exact and distribution-free.

    Uses log ratios when every sample is positive (a multiplicative change, symmetric for gains and losses),
    else differences scaled by the base median.
    """
    k = hl_rank(base.size, new.size, confidence)
    if k == 0:
        return None
    if (base > 0).all() and (new > 0).all():
        diffs = np.sort((np.log(new)[None, :] - np.log(base)[:, None]).ravel())
        return float(np.expm1(diffs[k - 1])), float(np.expm1(diffs[diffs.size - k]))
    scale = abs(float(np.median(base)))
    diffs = np.sort((new[None, :] - base[:, None]).ravel()) / scale
    return float(diffs[k - 1]), float(diffs[diffs.size - k])


def compare(
    base_samples: Sequence[float],
    new_samples: Sequence[float],
    direction: DirectionName,
    min_effect: float = DEFAULT_MIN_EFFECT,
    *,
    alpha: float = DEFAULT_ALPHA,
    confidence: float = DEFAULT_CONFIDENCE,
    min_samples: int = MIN_SAMPLES,
) -> Comparison:
    """Compare raw samples; `direction` says which way is better ("higher" for goodput, "lower" for latency).

    `min_effect` is a fraction (0.03 = 3 %).
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', not {direction!r}")
    base, new = _clean(base_samples), _clean(new_samples)
    nb, nn = base.size, new.size
    base_median = float(np.median(base)) if nb else None
    new_median = float(np.median(new)) if nn else None

    def out(
        change: float | None, ci: tuple[float, float] | None, p: float | None, verdict: Verdict, reason: str
    ) -> Comparison:
        lo, hi = (None, None) if ci is None else (ci[0] * 100.0, ci[1] * 100.0)
        return Comparison(
            None if change is None else change * 100.0,
            lo,
            hi,
            p,
            verdict,
            reason,
            base_median=base_median,
            new_median=new_median,
            n_base=nb,
            n_new=nn,
            min_effect=min_effect,
            confidence=confidence,
        )

    if nb < min_samples or nn < min_samples:
        return out(
            None,
            None,
            None,
            "inconclusive",
            f"too few samples: base {nb}, new {nn}; need at least {min_samples} on each side",
        )
    assert base_median is not None and new_median is not None
    if base_median == 0.0:
        return out(
            None, None, None, "inconclusive", "the base median is 0, so a relative change is undefined"
        )

    change = new_median / base_median - 1.0
    p_value = float(stats.mannwhitneyu(new, base, alternative="two-sided").pvalue)
    if math.isnan(p_value):  # every sample identical on both sides
        p_value = 1.0
    ci = relative_change_ci(base, new, confidence)
    level = f"{confidence:.0%}"
    if ci is None:
        return out(
            change,
            None,
            p_value,
            "inconclusive",
            f"{nb} and {nn} samples cannot bound the change at {level} confidence; add repetitions "
            "(4 per side is the minimum)",
        )

    lo, hi = ci
    sign = 1.0 if direction == "higher" else -1.0
    good, good_lo, good_hi = sign * change, min(sign * lo, sign * hi), max(sign * lo, sign * hi)
    span = f"{change * 100:+.1f} % ({level} CI {lo * 100:+.1f} .. {hi * 100:+.1f} %, p={p_value:.3g})"
    effect = f"{min_effect:.0%}"
    if good_hi <= -min_effect:
        return out(
            change,
            ci,
            p_value,
            "regression",
            f"worse by {span}: the whole interval is beyond the {effect} minimum effect",
        )
    if good_lo >= min_effect:
        return out(
            change,
            ci,
            p_value,
            "improvement",
            f"better by {span}: the whole interval is beyond the {effect} minimum effect",
        )
    if p_value < alpha and abs(good) >= min_effect:
        kind = "regression" if good < 0 else "improvement"
        return out(
            change,
            ci,
            p_value,
            "inconclusive",
            f"probably a {kind}: {span}, but the interval reaches inside the {effect} minimum effect; "
            "add repetitions or confirm",
        )
    if p_value >= alpha:
        return out(change, ci, p_value, "unchanged", f"no significant difference: {span}")
    return out(change, ci, p_value, "unchanged", f"significant but below the {effect} minimum effect: {span}")
