"""The report's plots as PNG files, drawn with matplotlib (no browser, no kaleido download).

Same data and colours as the HTML figures: goodput with stacked subflows, expected vs measured, history with
change points, and the comparison chart.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mptcpkit.errors import UsageError
from mptcpkit.lab.analysis import MetricComparison
from mptcpkit.lab.report.data import (
    MetricHistory,
    ScenarioData,
    collect_compare,
    collect_run,
    metric_label,
    parse_rule,
    result_state,
)
from mptcpkit.lab.report.figures import EXPECTED, FAIL, NEUTRAL, STATE_COLORS, SUBFLOW_COLORS, VERDICT_COLORS
from mptcpkit.lab.store import Store

DPI = 110


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.color": "#e6e9ee",
            "axes.edgecolor": "#90a4ae",
            "axes.titlesize": 10,
        }
    )
    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def goodput_png(scenario: ScenarioData, path: Path) -> bool:
    """The typical repetition: subflows stacked, application goodput as a line. False if no series."""
    rep = scenario.typical_rep
    if rep is None:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    if rep.subflows:
        length = max(len(v) for v in rep.subflows.values())
        xs = [(k + 1) * rep.interval_s for k in range(length)]
        ys = [list(v) + [0.0] * (length - len(v)) for v in rep.subflows.values()]
        colors = [SUBFLOW_COLORS[i % len(SUBFLOW_COLORS)] for i in range(len(ys))]
        ax.stackplot(xs, ys, labels=[f"subflow {n}" for n in rep.subflows], colors=colors, alpha=0.65)
    if rep.goodput:
        xs = [(k + 1) * rep.interval_s for k in range(len(rep.goodput))]
        ax.plot(xs, rep.goodput, color="#263238", linewidth=1.8, label="goodput (application)")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("Mbit/s")
    ax.set_title(f"{scenario.name}: goodput, repetition {rep.rep + 1} of {len(scenario.reps)} (median)")
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def expected_png(scenario: ScenarioData, path: Path) -> bool:
    results = [r for r in scenario.results if r.samples]
    if not results:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(results), figsize=(max(3.0, 2.4 * len(results)), 3.2), squeeze=False)
    for ax, r in zip(axes[0], results, strict=True):
        ax.bar([0], [r.median], width=0.55, color=STATE_COLORS[result_state(r)], alpha=0.8)
        ax.scatter([0] * len(r.samples), r.samples, facecolors="none", edgecolors="#263238", zorder=3, s=22)
        labels = ["measured"]
        if r.expected is not None:
            ax.bar([1], [r.expected], width=0.55, color=EXPECTED, alpha=0.55)
            labels.append("expected")
        rule = parse_rule(r.rule, r.expected)
        if rule is not None:
            ax.axhline(rule.threshold, color="#37474f", linestyle="--", linewidth=1.2)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(metric_label(r), color="#263238" if r.passed else FAIL)
        ax.grid(axis="x", visible=False)
    fig.suptitle(
        f"{scenario.name}: expected vs measured ({'pass' if scenario.passed else 'FAIL'})", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def history_png(histories: Sequence[MetricHistory], title: str, path: Path) -> bool:
    histories = [h for h in histories if h.points]
    if not histories:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(len(histories), 1, figsize=(7.5, 0.6 + 2.3 * len(histories)), squeeze=False)
    for ax, h in zip(axes[:, 0], histories, strict=True):
        xs = list(range(1, len(h.points) + 1))
        med = [p.median for p in h.points]
        err = [[p.median - p.minimum for p in h.points], [p.maximum - p.median for p in h.points]]
        ax.errorbar(
            xs, med, yerr=err, color=NEUTRAL, ecolor="#90a4ae", marker="o", markersize=4, linewidth=1.2
        )
        for x, p in zip(xs, h.points, strict=True):
            if p.current:
                ax.plot([x], [p.median], marker="o", markersize=11, markerfacecolor="none", color="#263238")
        for ch in h.changes:
            color = VERDICT_COLORS[ch.kind]
            ax.axvline(ch.index + 0.5, color=color, linestyle="--", linewidth=1.5)
            ax.annotate(
                f"{ch.kind} {ch.change_pct:+.1f} %",
                (ch.index + 0.6, 1.0),
                xycoords=("data", "axes fraction"),
                va="top",
                color=color,
                fontsize=8,
            )
        low, high = min(p.minimum for p in h.points), max(p.maximum for p in h.points)
        centre, floor = (low + high) / 2, 0.02 * abs((low + high) / 2)
        if high - low < 2 * floor:
            ax.set_ylim(centre - floor * 1.2, centre + floor * 1.2)
        step = max(1, len(xs) // 12)
        ax.set_xticks(xs[::step], [p.name for p in h.points][::step], rotation=30 if len(xs) > 6 else 0)
        ax.set_title(f"{h.metric} [{h.unit}]" if h.unit else h.metric)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def compare_png(rows: Sequence[MetricComparison], title: str, path: Path) -> bool:
    rows = [r for r in rows if r.comparison.change_pct is not None]
    if not rows:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.28 * len(rows)))
    effect = max(r.comparison.min_effect for r in rows) * 100
    ax.axvspan(-effect, effect, color="#eceff1")
    ax.axvline(0, color="#90a4ae", linewidth=1)
    for y, r in enumerate(reversed(rows)):
        c = r.comparison
        assert c.change_pct is not None
        color = VERDICT_COLORS[c.verdict]
        if c.ci_low is not None and c.ci_high is not None:
            ax.plot([c.ci_low, c.ci_high], [y, y], color=color, linewidth=1.5)
        ax.plot([c.change_pct], [y], marker="D", color=color, markersize=6)
    ax.set_yticks(range(len(rows)), [f"{r.scenario} / {r.metric}" for r in reversed(rows)], fontsize=8)
    ax.set_xlabel("change of the median, new vs base [%]")
    ax.set_title(title)
    handles = [
        plt.Line2D([], [], marker="D", color=c, linestyle="", label=v) for v, c in VERDICT_COLORS.items()
    ]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return True


def _out_dir(out_dir: Path) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--png: {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--png: cannot create directory {out}: {exc.strerror}") from exc
    return out


def write_png(
    store: Store,
    run_id: str | None,
    out_dir: Path,
    *,
    compare: tuple[str, str] | None = None,
) -> list[Path]:
    """Write the report's plots as PNG files into `out_dir` (created); returns the files written.

    Per scenario: <scenario>-goodput.png, <scenario>-expected.png, <scenario>-history.png (with at least two
    runs on the machine); with `compare=(base, new)`: compare.png.
    """
    if (run_id is None) == (compare is None):
        raise UsageError("give either a run or compare=(base, new), not both or neither")
    out = _out_dir(out_dir)
    written: list[Path] = []
    if compare is not None:
        data = collect_compare(store, *compare)
        path = out / "compare.png"
        if compare_png(data.ordered, data.title, path):
            written.append(path)
        return written
    assert run_id is not None
    run = collect_run(store, run_id)
    for s in run.scenarios:
        base = _safe(s.name)
        goodput, expected, history = (
            out / f"{base}-{kind}.png" for kind in ("goodput", "expected", "history")
        )
        if goodput_png(s, goodput):
            written.append(goodput)
        if expected_png(s, expected):
            written.append(expected)
        if history_png(s.history, f"{s.name}: history on this machine", history):
            written.append(history)
    from mptcpkit.lab.report.sweeps import safe_name, sweep_png, sweeps_of

    order = [str(name) for name in run.run.config.get("scenarios", [])]
    for sweep in sweeps_of([r for s in run.scenarios for r in s.results], order):
        path = out / f"sweep-{safe_name(sweep.name)}.png"
        if sweep_png(sweep, path):
            written.append(path)
    return written
