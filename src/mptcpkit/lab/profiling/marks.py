"""Which samples of a result came from profiled repetitions, and which samples the comparison figures use.

The runner stores `details["profiled"]`: one flag per sample. Profiling costs a little CPU (see
docs/profiling.md), so a comparison uses the unprofiled samples when a result has at least
MIN_UNPROFILED of them, and all samples otherwise (every repetition profiled: the cost is then the same on
both sides of a comparison of two profiled runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MIN_UNPROFILED = 3


def profiled_flags(details: dict[str, Any], n: int) -> list[bool]:
    flags = details.get("profiled") or []
    if not isinstance(flags, list) or len(flags) != n:
        return [False] * n
    return [bool(f) for f in flags]


def figure_samples(samples: Sequence[float], details: dict[str, Any]) -> list[float]:
    """The samples a comparison should use: the unprofiled ones when there are enough of them."""
    flags = profiled_flags(details, len(samples))
    if not any(flags):
        return list(samples)
    clean = [v for v, f in zip(samples, flags, strict=True) if not f]
    return clean if len(clean) >= MIN_UNPROFILED else list(samples)
