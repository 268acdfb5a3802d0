"""Statistics: A/B verdicts, median CIs, change points; store-level helpers on a real SQLite file.

Random data comes from fixed seeds, so every run of these tests sees the same numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from mptcpkit.errors import UsageError
from mptcpkit.lab.analysis import (
    change_points,
    ci_width_pct,
    compare,
    compare_runs,
    history_change_points,
    median_ci,
)
from mptcpkit.lab.analysis.ranks import hl_rank, median_rank
from mptcpkit.lab.store import Result, open_store


def _samples(rng: np.random.Generator, n: int, cv: float, level: float = 100.0) -> list[float]:
    return list(level * (1.0 + cv * rng.standard_normal(n)))


# -- compare -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("direction", ["higher", "lower"])
def test_a_a_never_alarms(n: int, direction: str) -> None:
    """Same distribution on both sides, realistic lab noise (CV 1-3 %): never a regression or improvement."""
    verdicts: dict[str, int] = {}
    for seed in range(300):
        rng = np.random.default_rng(seed)
        for cv in (0.01, 0.02, 0.03):
            got = compare(_samples(rng, n, cv), _samples(rng, n, cv), direction)  # type: ignore[arg-type]
            verdicts[got.verdict] = verdicts.get(got.verdict, 0) + 1
    assert "regression" not in verdicts and "improvement" not in verdicts, verdicts
    assert verdicts["unchanged"] >= 0.95 * 900


def test_ten_percent_drop_is_a_regression_with_five_samples() -> None:
    base, new = [94.1, 93.8, 94.5, 93.2, 94.0], [84.9, 85.3, 84.1, 85.6, 84.6]
    got = compare(base, new, "higher")
    assert got.verdict == "regression", got.reason
    assert got.change_pct == pytest.approx(-9.68, abs=0.01)
    assert got.ci_low is not None and got.ci_high is not None and got.change_pct is not None
    assert got.ci_low < got.change_pct < got.ci_high < -3
    assert got.p_value is not None and got.p_value < 0.01
    assert "worse by -9.7 %" in got.reason
    detected = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        verdict = compare(_samples(rng, 5, 0.02), _samples(rng, 5, 0.02, level=90.0), "higher").verdict
        assert verdict in ("regression", "inconclusive")  # never called unchanged or an improvement
        detected += verdict == "regression"
    assert detected >= 0.95 * 200


def test_direction() -> None:
    low, high = [10.0, 10.1, 9.9, 10.0, 10.05], [11.0, 11.1, 10.9, 11.0, 11.05]
    assert compare(low, high, "higher").verdict == "improvement"  # goodput up
    assert compare(high, low, "higher").verdict == "regression"  # goodput down
    assert compare(low, high, "lower").verdict == "regression"  # latency up
    assert compare(high, low, "lower").verdict == "improvement"  # latency down
    with pytest.raises(ValueError, match="direction"):
        compare(low, high, "up")  # type: ignore[arg-type]


def test_inconclusive() -> None:
    few = compare([100.0, 101.0], [90.0, 91.0, 89.0], "higher")
    assert (
        few.verdict == "inconclusive"
        and few.change_pct is None
        and "too few samples: base 2, new 3" in few.reason
    )
    three = compare([100.0, 101.0, 99.0], [80.0, 81.0, 79.0], "higher")  # 3 v 3 cannot bound anything at 95 %
    assert (
        three.verdict == "inconclusive" and three.change_pct == pytest.approx(-20.0) and three.ci_low is None
    )
    zero = compare([0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], "lower")
    assert zero.verdict == "inconclusive" and "median is 0" in zero.reason
    # A clear but small-sample drop whose interval still reaches inside the 3 % minimum effect.
    probable = compare([100.0, 103.0, 97.0, 101.0, 99.0], [96.0, 94.0, 98.0, 95.0, 93.0], "higher")
    assert probable.verdict == "inconclusive" and "probably a regression" in probable.reason
    nan_dropped = compare([100.0, math.nan, 100.5, 99.5], [100.0, 100.2, 99.8], "higher")
    assert nan_dropped.n_base == 3


def test_minimum_effect() -> None:
    rng = np.random.default_rng(7)
    base, new = _samples(rng, 8, 0.002), _samples(rng, 8, 0.002, level=98.5)  # -1.5 %, very quiet link
    default = compare(base, new, "higher")
    assert default.verdict == "unchanged" and "below the 3% minimum effect" in default.reason
    assert compare(base, new, "higher", min_effect=0.01).verdict == "regression"
    same = compare([5.0] * 5, [5.0] * 5, "higher")
    assert same.verdict == "unchanged" and same.p_value == 1.0 and same.change_pct == 0.0


def _with_u(n: int, m: int, u: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples x (n) and y (m) whose Mann-Whitney statistic U_x (pairs with x > y) is exactly u."""
    counts = [min(m, max(0, u - m * i)) for i in range(n)]
    return np.array([c - 0.5 for c in counts]), np.arange(m, dtype=float)


def test_exact_rank_tables_agree_with_scipy() -> None:
    assert [hl_rank(n, n, 0.95) for n in range(3, 8)] == [0, 1, 3, 6, 9]
    # hl_rank k means P(U <= k-1) <= 2.5 % < P(U <= k); check with scipy's exact Mann-Whitney distribution.
    for n, m in ((5, 5), (4, 6), (8, 7), (12, 9)):
        k = hl_rank(n, m, 0.95)
        below = stats.mannwhitneyu(*_with_u(n, m, k - 1), alternative="less", method="exact").pvalue
        at = stats.mannwhitneyu(*_with_u(n, m, k), alternative="less", method="exact").pvalue
        assert below <= 0.025 < at, (n, m, k, below, at)
    # The normal approximation used beyond the exact limit stays within one rank of the exact value.
    from mptcpkit.lab.analysis import ranks

    exact = hl_rank(40, 40, 0.95)
    limit, ranks.EXACT_LIMIT = ranks.EXACT_LIMIT, 10
    try:
        assert abs(hl_rank(40, 40, 0.95) - exact) <= 1
    finally:
        ranks.EXACT_LIMIT = limit


# -- median CI -----------------------------------------------------------------------------------------------


def test_median_ci() -> None:
    assert median_rank(5, 0.95) == 0 and median_rank(6, 0.95) == 1 and median_rank(20, 0.95) == 6
    assert median_ci([1.0, 2.0, 3.0, 4.0, 5.0]) is None
    assert ci_width_pct([1.0, 2.0, 3.0, 4.0, 5.0]) == math.inf
    assert median_ci([5.0, 1.0, 4.0, 2.0, 3.0, 6.0]) == (1.0, 6.0)
    rng = np.random.default_rng(3)
    widths = [ci_width_pct(_samples(rng, n, 0.02)) for n in (6, 40)]
    assert widths[0] > 4.0 > 2.0 > widths[1]  # CV 2 %: about 5 % wide with 6 samples, under 2 % with 40
    covered = 0
    for seed in range(1000):  # coverage of the true median (100) at least the nominal 95 %
        ci = median_ci(_samples(np.random.default_rng(seed), 10, 0.02))
        assert ci is not None
        covered += ci[0] <= 100.0 <= ci[1]
    assert covered >= 950


# -- change points -------------------------------------------------------------------------------------------


def test_step_found_at_the_right_index() -> None:
    rng = np.random.default_rng(11)
    series = _samples(rng, 10, 0.02) + _samples(rng, 10, 0.02, level=90.0)
    [cp] = change_points(series)
    assert cp.index == 10
    assert cp.before_median == pytest.approx(100, rel=0.03) and cp.after_median == pytest.approx(90, rel=0.03)
    assert cp.change_pct == pytest.approx(-10, abs=3) and cp.p_value < 0.01
    exact = sum(
        [c.index for c in change_points(_samples(r, 12, 0.02) + _samples(r, 8, 0.02, 110.0))] == [12]
        for r in (np.random.default_rng(s) for s in range(50))
    )
    assert exact >= 47


def test_two_steps_and_short_series() -> None:
    rng = np.random.default_rng(5)
    series = _samples(rng, 8, 0.01) + _samples(rng, 8, 0.01, 90.0) + _samples(rng, 8, 0.01, 100.0)
    assert [c.index for c in change_points(series)] == [8, 16]
    assert change_points([1.0, 2.0, 3.0, 4.0, 5.0]) == []  # shorter than two minimal segments
    clean_step = [100.0 + 0.1 * i for i in range(5)] + [90.0 + 0.1 * i for i in range(5)]
    assert [c.index for c in change_points(clean_step)] == [5]  # 5 runs a side suffice for a clean step
    with pytest.raises(ValueError, match="finite"):
        change_points([1.0] * 5 + [math.inf] * 5)


def test_single_outliers_and_noise_are_ignored() -> None:
    """Flat histories at CV 2 %, then the same with one broken run (0.6x): alarms stay at the 1 % alpha level,
    and the broken run itself is never reported as a change."""
    alarms = 0
    for seed in range(200):
        series = _samples(np.random.default_rng(seed), 20, 0.02)
        clean = change_points(series)
        series[7] *= 0.6
        broken = change_points(series)
        alarms += bool(clean) + bool(broken)
        if not clean:
            assert not {c.index for c in broken} & {7, 8}, (seed, broken)
    assert alarms <= 4, alarms  # of 400 histories
    rng = np.random.default_rng(4)
    step = _samples(rng, 10, 0.02) + _samples(rng, 10, 0.02, 90.0)
    for where, factor in ((4, 0.5), (15, 1.6), (2, 1.6), (17, 0.5)):  # one broken run, away from the step
        broken = list(step)
        broken[where] *= factor
        assert [c.index for c in change_points(broken)] == [10], (where, factor)


# -- over the store ------------------------------------------------------------------------------------------


def _run(store: object, label: str, samples: dict[tuple[str, str], list[float]], env: dict[str, str]) -> str:
    from mptcpkit.lab.store import Store

    assert isinstance(store, Store)
    run = store.create_run(label, env, {})
    for (scenario, metric), values in samples.items():
        direction = "lower" if metric == "latency" else "higher"
        store.add_result(Result(run.run_id, scenario, metric, "x", direction, values))  # type: ignore[arg-type]
    store.finish_run(run.run_id, "complete")
    return run.run_id


def test_compare_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    env = {"hostname": "lab1"}
    with open_store(str(tmp_path / "r.db")) as store:
        _run(
            store,
            "base",
            {
                ("bal", "goodput"): _samples(rng, 5, 0.01),
                ("bal", "latency"): _samples(rng, 5, 0.01),
                ("gone", "goodput"): [1.0, 1.0, 1.0],
            },
            env,
        )
        _run(
            store,
            "new",
            {
                ("bal", "goodput"): _samples(rng, 5, 0.01, 90.0),
                ("bal", "latency"): _samples(rng, 5, 0.01, 100.5),
                ("fresh", "goodput"): [2.0] * 3,
            },
            env,
        )
        got = {(c.scenario, c.metric): c for c in compare_runs(store, "base", "latest")}
        assert got["bal", "goodput"].comparison.verdict == "regression"
        assert got["bal", "latency"].comparison.verdict == "unchanged"
        assert got["bal", "latency"].direction == "lower"
        assert (
            got["gone", "goodput"].comparison.verdict == "inconclusive" and got["gone", "goodput"].new is None
        )
        assert "only the new run" in got["fresh", "goodput"].comparison.reason
        loose = compare_runs(store, "base", "new", min_effect={"goodput": 0.2})
        assert {c.comparison.verdict for c in loose if c.scenario == "bal"} == {"unchanged"}
        with pytest.raises(UsageError, match="no run 'nosuch'"):
            compare_runs(store, "nosuch", "latest")


def test_history_change_points(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    with open_store(str(tmp_path / "r.db")) as store:
        for i in range(12):
            level = 100.0 if i < 7 else 91.0
            _run(store, f"commit-{i}", {("bal", "goodput"): _samples(rng, 3, 0.01, level)}, {"hostname": "a"})
            # Another machine, 20 % slower and unchanged: its runs must neither hide nor fake a change.
            _run(store, f"other-{i}", {("bal", "goodput"): _samples(rng, 3, 0.01, 80.0)}, {"hostname": "b"})
        [change] = history_change_points(store, "bal", "goodput")
        assert (change.run.label, change.previous_run.label, change.kind) == (
            "commit-7",
            "commit-6",
            "regression",
        )
        assert change.change.change_pct == pytest.approx(-9, abs=2)
        assert history_change_points(store, "bal", "goodput", change.previous_run.environment_key) != []
        assert history_change_points(store, "nothing", "goodput") == []
