"""Exact distribution-free building blocks: the Mann-Whitney U null distribution and order-statistic CIs.

Small samples (3 to 10 repetitions) are the lab's normal case, where bootstrap intervals are too coarse and
normal approximations are wrong; exact rank and binomial distributions give honest coverage at any n.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import stats

#: Above this many samples per side the exact U distribution is replaced by its normal approximation.
EXACT_LIMIT = 40


@lru_cache(maxsize=256)
def _u_cdf(n: int, m: int) -> tuple[float, ...]:
    """P(U <= u) for u = 0 .. n*m under H0.

    Recursion: p(n, m, u) = n/(n+m) p(n-1, m, u-m) + m/(n+m) p(n, m-1, u).
    """
    table: dict[tuple[int, int], np.ndarray] = {}
    for i in range(n + 1):
        for j in range(m + 1):
            if i == 0 or j == 0:
                table[i, j] = np.ones(1)
                continue
            out = np.zeros(i * j + 1)
            a, b = table[i - 1, j], table[i, j - 1]
            out[j : j + a.size] += i / (i + j) * a
            out[: b.size] += j / (i + j) * b
            table[i, j] = out
    return tuple(np.cumsum(table[n, m]).tolist())


def hl_rank(n: int, m: int, confidence: float) -> int:
    """k such that the two-sample Hodges-Lehmann interval is [D_(k), D_(nm-k+1)] of the sorted pairwise
    differences (1-based); 0 when no bounded interval reaches `confidence` with these sample sizes."""
    tail = (1.0 - confidence) / 2.0
    if max(n, m) <= EXACT_LIMIT:
        cdf = np.asarray(_u_cdf(min(n, m), max(n, m)))
        return int(np.searchsorted(cdf, tail + 1e-12, side="right"))
    z = float(stats.norm.ppf(1.0 - tail))
    k = math.floor(n * m / 2.0 - z * math.sqrt(n * m * (n + m + 1) / 12.0))
    return max(k, 0)


def min_two_sided_p(n: int, m: int) -> float:
    """The smallest two-sided Mann-Whitney p-value that n and m samples can give (complete separation)."""
    return min(1.0, 2.0 / math.comb(n + m, n))


def median_rank(n: int, confidence: float) -> int:
    """k such that [x_(k), x_(n-k+1)] covers the median with probability >= confidence; 0 when impossible."""
    best = 0
    for k in range(1, n // 2 + 1):
        coverage = 1.0 - 2.0 * float(stats.binom.cdf(k - 1, n, 0.5))
        if coverage >= confidence:
            best = k
        else:
            break
    return best
