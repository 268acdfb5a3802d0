"""Sweeps in reports: each `[matrix]` scenario drawn as metric against parameter, with a confidence band.

Results of sweep cases carry `sweep` and `params` (store v3). Per sweep and metric: x = the sweep's first
parameter, one line per combination of the other parameters, the median of each case as a point and a band
from its 95 % median CI (distribution-free; with fewer than 6 repetitions the band is min..max and says so).
Pure data -> figure JSON (plotly, same in the HTML file and the dashboard) and PNG (matplotlib).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mptcpkit.lab.analysis.ci import median_ci
from mptcpkit.lab.report.figures import FONT, SUBFLOW_COLORS, _layout
from mptcpkit.lab.store import Result


@dataclass(slots=True)
class SweepPoint:
    case: str
    x: Any
    median: float
    low: float
    high: float
    samples: list[float]
    expected: float | None = None


@dataclass(slots=True)
class SweepMetric:
    metric: str
    unit: str
    lines: dict[str, list[SweepPoint]] = field(default_factory=dict)
    """Label of the other parameters' values ('' when the sweep has one parameter) -> points along x."""


@dataclass(slots=True)
class SweepData:
    name: str
    params: list[str]
    x_param: str
    metrics: list[SweepMetric]
    ci: bool
    """True when every band is a 95 % CI (else some are min..max)."""

    @property
    def anchor(self) -> str:
        return "sweep-" + "".join(c if c.isalnum() else "-" for c in self.name)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "/".join(_text(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweeps_of(results: Sequence[Result], order: Sequence[str] = ()) -> list[SweepData]:
    """Group a run's results by sweep; points along x in numeric order, else in `order` (the run's scenario
    list, which is the matrix order), else as stored."""
    by_sweep: dict[str, list[Result]] = {}
    for r in results:
        if r.sweep and r.params is not None and r.samples:
            by_sweep.setdefault(r.sweep, []).append(r)
    sweeps = []
    for name, rows in by_sweep.items():
        params = list(rows[0].params or {})
        x_param = params[0]
        metrics: dict[str, SweepMetric] = {}
        all_ci = True
        for r in rows:
            p = r.params or {}
            finite = [v for v in r.samples if not math.isnan(v)]
            if not finite:
                continue
            ci = median_ci(finite)
            all_ci &= ci is not None
            low, high = ci if ci is not None else (min(finite), max(finite))
            median = statistics.median(finite)
            line = ", ".join(f"{k}={_text(p.get(k))}" for k in params[1:])
            metric = metrics.setdefault(r.metric, SweepMetric(r.metric, r.unit))
            metric.lines.setdefault(line, []).append(
                SweepPoint(r.scenario, p.get(x_param), median, low, high, list(r.samples), r.expected)
            )
        rank = {case: i for i, case in enumerate(order)}
        for metric in metrics.values():
            for points in metric.lines.values():
                if _numeric(points):
                    points.sort(key=lambda p: float(p.x))
                else:
                    points.sort(key=lambda p: rank.get(p.case, len(rank)))
        sweeps.append(SweepData(name, params, x_param, list(metrics.values()), all_ci))
    return sweeps


def _numeric(points: Sequence[SweepPoint]) -> bool:
    return all(isinstance(p.x, int | float) and not isinstance(p.x, bool) for p in points)


def _xs(points: Sequence[SweepPoint]) -> list[Any]:
    return [p.x if _numeric(points) else _text(p.x) for p in points]


def sweep_figure(sweep: SweepData) -> str:
    """Plotly JSON: one panel per metric, metric against the first parameter, a band per line."""
    n = len(sweep.metrics)
    fig = make_subplots(
        rows=1,
        cols=max(1, n),
        subplot_titles=[f"{m.metric} [{m.unit}]" if m.unit else m.metric for m in sweep.metrics],
        horizontal_spacing=min(0.08, 0.4 / max(1, n)),
    )
    band = "95 % CI of the median" if sweep.ci else "95 % CI (min..max where under 6 repetitions)"
    for col, metric in enumerate(sweep.metrics, start=1):
        for i, (line, points) in enumerate(sorted(metric.lines.items())):
            color = SUBFLOW_COLORS[i % len(SUBFLOW_COLORS)]
            xs = _xs(points)
            name = line or metric.metric
            fig.add_trace(
                go.Scatter(
                    x=xs + xs[::-1],
                    y=[p.high for p in points] + [p.low for p in points][::-1],
                    fill="toself",
                    fillcolor=color,
                    opacity=0.2,
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=name,
                    name=f"{name} band",
                ),
                row=1,
                col=col,
            )
            fig.add_trace(
                go.Scatter(
                    x=xs,
                    y=[p.median for p in points],
                    mode="lines+markers",
                    line={"color": color, "width": 2},
                    marker={"size": 8},
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1 and bool(line),
                    customdata=[[p.case, p.low, p.high, len(p.samples)] for p in points],
                    hovertemplate="%{customdata[0]}<br>median %{y:.4g} "
                    + metric.unit
                    + "<br>band %{customdata[1]:.4g} .. %{customdata[2]:.4g}, n=%{customdata[3]}<extra></extra>",
                ),
                row=1,
                col=col,
            )
            expected = [p for p in points if p.expected is not None]
            if expected:
                fig.add_trace(
                    go.Scatter(
                        x=_xs(expected),
                        y=[p.expected for p in expected],
                        mode="lines",
                        line={"color": "#9e9e9e", "dash": "dash", "width": 1.5},
                        name="expected",
                        legendgroup="expected",
                        showlegend=False,
                        hovertemplate="expected %{y:.4g} " + metric.unit + "<extra></extra>",
                    ),
                    row=1,
                    col=col,
                )
        fig.update_xaxes(title_text=sweep.x_param, row=1, col=col)
        if all(
            _numeric(points) and all(isinstance(p.x, int) for p in points) for points in metric.lines.values()
        ):
            fig.update_xaxes(dtick=1, row=1, col=col)
    fig.update_annotations(font_size=12)
    _layout(
        fig,
        320,
        title={"text": f"band: {band}", "font": {"size": 11, "family": FONT}, "x": 0.99, "xanchor": "right"},
    )
    fig.update_layout(margin={"t": 60})
    return str(fig.to_json())


def sweep_png(sweep: SweepData, path: Path) -> bool:
    """The same plot as PNG."""
    from mptcpkit.lab.report.png import _pyplot

    plt = _pyplot()
    n = max(1, len(sweep.metrics))
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], sweep.metrics, strict=False):
        for i, (line, points) in enumerate(sorted(metric.lines.items())):
            color = SUBFLOW_COLORS[i % len(SUBFLOW_COLORS)]
            xs = _xs(points) if _numeric(points) else list(range(len(points)))
            ax.fill_between(
                xs, [p.low for p in points], [p.high for p in points], color=color, alpha=0.2, lw=0
            )
            ax.plot(xs, [p.median for p in points], "o-", color=color, label=line or None)
            expected = [(x, p.expected) for x, p in zip(xs, points, strict=True) if p.expected is not None]
            if expected:
                ax.plot(
                    *zip(*expected, strict=True),
                    "--",
                    color="#9e9e9e",
                    lw=1.2,
                    label="expected" if i == 0 else None,
                )
            if _numeric(points) and all(isinstance(p.x, int) for p in points):
                ax.set_xticks(xs)
            if not _numeric(points):
                ax.set_xticks(xs, [_text(p.x) for p in points])
        ax.set_title(f"{metric.metric} [{metric.unit}]" if metric.unit else metric.metric, fontsize=10)
        ax.set_xlabel(sweep.x_param)
        ax.grid(True, color="#e6e9ee")
        if ax.get_legend_handles_labels()[1]:
            ax.legend(fontsize=8)
    band = "95 % CI of the median" if sweep.ci else "min..max (under 6 repetitions)"
    fig.suptitle(f"sweep {sweep.name} (band: {band})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
