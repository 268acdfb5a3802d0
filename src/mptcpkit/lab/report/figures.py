"""Plotly figures of the report data, as JSON strings for `Plotly.newPlot` (same in the file and the dashboard).

Pure: data in, figure JSON out. The PNG writer (png.py) draws the same figures with matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mptcpkit.lab.analysis import MetricComparison
from mptcpkit.lab.report.data import MetricHistory, ScenarioData, fmt, metric_label, parse_rule, result_state

# One palette for both renderers: calm, colour-blind friendly (Okabe-Ito based).
SUBFLOW_COLORS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
PASS, FAIL, WARN, NEUTRAL, EXPECTED = "#1a8754", "#c62828", "#e69f00", "#5c6bc0", "#9e9e9e"
STATE_COLORS = {"pass": PASS, "fail": FAIL, "warn": WARN}
STATE_WORDS = {"pass": "pass", "fail": "FAIL", "warn": "FAIL (rule met, but a repetition failed)"}
VERDICT_COLORS = {
    "regression": "#c62828",
    "improvement": "#1a8754",
    "unchanged": "#78909c",
    "inconclusive": "#e69f00",
}
FONT = (
    "-apple-system, Segoe UI, Roboto, Noto Sans, DejaVu Sans, Liberation Sans, Helvetica, Arial, sans-serif"
)


def _layout(fig: go.Figure, height: int, **extra: object) -> None:
    fig.update_layout(
        height=height,
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        font={"family": FONT, "size": 12, "color": "#263238"},
        paper_bgcolor="white",
        plot_bgcolor="#fafbfc",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0, "traceorder": "normal"},
        hoverlabel={"font": {"family": FONT}},
        **extra,
    )
    fig.update_xaxes(gridcolor="#e6e9ee", zeroline=False, linecolor="#cfd8dc")
    fig.update_yaxes(gridcolor="#e6e9ee", zeroline=False, linecolor="#cfd8dc")


def goodput_figure(scenario: ScenarioData) -> str | None:
    """Goodput over time of every repetition: subflows stacked (areas), application goodput as a line.

    The typical (median) repetition is shown; buttons switch to the others.
    """
    if not scenario.reps:
        return None
    typical = scenario.typical_rep
    fig = go.Figure()
    owners: list[int] = []
    for rep in scenario.reps:
        visible = rep is typical
        for i, (name, values) in enumerate(rep.subflows.items()):
            color = SUBFLOW_COLORS[i % len(SUBFLOW_COLORS)]
            fig.add_trace(
                go.Scatter(
                    x=[round((k + 1) * rep.interval_s, 3) for k in range(len(values))],
                    y=values,
                    name=f"subflow {name}",
                    mode="lines",
                    stackgroup=f"rep{rep.rep}",
                    line={"width": 0.8, "color": color},
                    fillcolor=color + "99",
                    visible=visible,
                    hovertemplate="%{y:.2f} Mbit/s at %{x:.1f} s<extra>" + name + "</extra>",
                )
            )
            owners.append(rep.rep)
        if rep.goodput:
            fig.add_trace(
                go.Scatter(
                    x=[round((k + 1) * rep.interval_s, 3) for k in range(len(rep.goodput))],
                    y=rep.goodput,
                    name="goodput (application)",
                    mode="lines",
                    line={"width": 2.2, "color": "#263238"},
                    visible=visible,
                    hovertemplate="%{y:.2f} Mbit/s at %{x:.1f} s<extra>goodput</extra>",
                )
            )
            owners.append(rep.rep)
    buttons = [
        {
            "label": f"rep {rep.rep + 1}" + (" (median)" if rep is typical else ""),
            "method": "update",
            "args": [{"visible": [o == rep.rep for o in owners]}],
        }
        for rep in scenario.reps
    ]
    active = scenario.reps.index(typical) if typical else 0
    _layout(
        fig,
        330,
        xaxis_title="time [s]",
        yaxis_title="Mbit/s",
        updatemenus=(
            [
                {
                    "type": "buttons",
                    "direction": "left",
                    "buttons": buttons,
                    "active": active,
                    "x": 0,
                    "xanchor": "left",
                    "y": -0.22,
                    "yanchor": "top",
                    "pad": {"t": 0, "r": 4},
                    "bgcolor": "#eceff1",
                    "font": {"size": 11},
                }
            ]
            if len(buttons) > 1
            else []
        ),
    )
    fig.update_layout(margin={"b": 80})
    fig.update_yaxes(rangemode="tozero")
    return str(fig.to_json())


def _bar(x: str, y: float | None, color: str, opacity: float, hover: str) -> go.Bar:
    """One labelled bar of a metric's panel (measured median or expected value)."""
    return go.Bar(
        x=[x],
        y=[y],
        marker={"color": color, "opacity": opacity},
        width=0.5,
        showlegend=False,
        hovertemplate=hover,
    )


def expected_figure(scenario: ScenarioData) -> str | None:
    """Per metric: measured median (bar, green pass / red fail), every sample (dots), expected and threshold."""
    results = [r for r in scenario.results if r.samples]
    if not results:
        return None
    fig = make_subplots(
        rows=1,
        cols=len(results),
        subplot_titles=[metric_label(r) for r in results],
        horizontal_spacing=min(0.08, 0.4 / max(1, len(results))),
    )
    for col, r in enumerate(results, start=1):
        state = result_state(r)
        color = STATE_COLORS[state]
        hover = f"median %{{y:.4g}} {r.unit}<br>{STATE_WORDS[state]}: {r.rule}<extra></extra>"
        fig.add_trace(_bar("measured", r.median, color, 0.8, hover), row=1, col=col)
        fig.add_trace(
            go.Scatter(
                x=["measured"] * len(r.samples),
                y=r.samples,
                mode="markers",
                marker={"color": "#263238", "size": 7, "symbol": "circle-open", "line": {"width": 1.5}},
                showlegend=False,
                hovertemplate=f"sample %{{y:.4g}} {r.unit}<extra></extra>",
            ),
            row=1,
            col=col,
        )
        if r.expected is not None:
            hover = f"expected %{{y:.4g}} {r.unit}<extra></extra>"
            fig.add_trace(_bar("expected", r.expected, EXPECTED, 0.55, hover), row=1, col=col)
        rule = parse_rule(r.rule, r.expected)
        if rule is not None:
            fig.add_hline(
                y=rule.threshold,
                line={"color": "#37474f", "dash": "dash", "width": 1.5},
                row=1,  # type: ignore[arg-type]
                col=col,  # type: ignore[arg-type]
            )
    fig.update_annotations(font_size=12)
    _layout(fig, 300, bargap=0.3, showlegend=False)
    fig.update_yaxes(rangemode="tozero")
    fig.update_layout(margin={"t": 50})
    return str(fig.to_json())


def history_figure(histories: Sequence[MetricHistory]) -> str | None:
    """Per metric (one row each): the per-run median with min..max bars, the current run ringed, change
    points as dashed vertical lines (red: regression, green: improvement)."""
    histories = [h for h in histories if h.points]
    if not histories:
        return None
    fig = make_subplots(
        rows=len(histories),
        cols=1,
        shared_xaxes=False,
        subplot_titles=[f"{h.metric} [{h.unit}]" if h.unit else h.metric for h in histories],
        vertical_spacing=min(0.12, 0.5 / len(histories)),
    )
    for row, h in enumerate(histories, start=1):
        xs = list(range(1, len(h.points) + 1))
        texts = [f"{p.name}<br>{p.started_at}<br>n={p.n}" for p in h.points]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[p.median for p in h.points],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": [p.maximum - p.median for p in h.points],
                    "arrayminus": [p.median - p.minimum for p in h.points],
                    "color": "#90a4ae",
                    "thickness": 1,
                    "width": 3,
                },
                mode="lines+markers",
                line={"color": NEUTRAL, "width": 1.5},
                marker={"size": 7, "color": NEUTRAL},
                text=texts,
                hovertemplate="%{text}<br>median %{y:.4g}<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=1,
        )
        current = [(x, p) for x, p in zip(xs, h.points, strict=True) if p.current]
        if current:
            fig.add_trace(
                go.Scatter(
                    x=[x for x, _ in current],
                    y=[p.median for _, p in current],
                    mode="markers",
                    marker={"size": 14, "color": "rgba(0,0,0,0)", "line": {"color": "#263238", "width": 2}},
                    hovertemplate="this run<extra></extra>",
                    showlegend=False,
                ),
                row=row,
                col=1,
            )
        for ch in h.changes:
            color = VERDICT_COLORS[ch.kind]
            fig.add_vline(
                x=ch.index + 0.5,
                line={"color": color, "dash": "dash", "width": 2},
                row=row,  # type: ignore[arg-type]
                col=1,  # type: ignore[arg-type]
            )
            fig.add_annotation(
                x=ch.index + 0.5,
                y=1,
                yref="y domain" if row == 1 else f"y{row} domain",
                xref="x" if row == 1 else f"x{row}",
                text=f"{ch.kind} {ch.change_pct:+.1f} %",
                showarrow=False,
                font={"color": color, "size": 11},
                xanchor="left",
                yanchor="top",
                bgcolor="rgba(255,255,255,0.8)",
            )
        low, high = min(p.minimum for p in h.points), max(p.maximum for p in h.points)
        centre = (low + high) / 2
        floor = 0.02 * abs(centre)  # never magnify noise below +-2 % of the level into a dramatic picture
        if high - low < 2 * floor:
            fig.update_yaxes(range=[centre - floor * 1.2, centre + floor * 1.2], row=row, col=1)
        fig.update_xaxes(
            tickmode="array",
            tickvals=xs,
            ticktext=[p.name for p in h.points],
            tickangle=-30 if len(xs) > 6 else 0,
            nticks=20,
            row=row,
            col=1,
        )
    fig.update_annotations(font_size=12, selector={"showarrow": False, "xref": "paper"})
    _layout(fig, 120 + 230 * len(histories), showlegend=False)
    return str(fig.to_json())


def compare_figure(rows: Sequence[MetricComparison]) -> str | None:
    """Change in % of every metric with its confidence interval, coloured by verdict; the +-minimum-effect
    band around zero is the "too small to matter" zone."""
    rows = [r for r in rows if r.comparison.change_pct is not None]
    if not rows:
        return None
    labels = [f"{r.scenario} / {r.metric}" for r in rows]
    fig = go.Figure()
    effect = max(r.comparison.min_effect for r in rows) * 100
    fig.add_vrect(x0=-effect, x1=effect, fillcolor="#eceff1", line_width=0, layer="below")
    fig.add_vline(x=0, line={"color": "#90a4ae", "width": 1})
    for verdict, color in VERDICT_COLORS.items():
        picked = [(lab, r) for lab, r in zip(labels, rows, strict=True) if r.comparison.verdict == verdict]
        if not picked:
            continue
        xs = [r.comparison.change_pct for _, r in picked]
        plus = [
            (r.comparison.ci_high - r.comparison.change_pct)
            if r.comparison.ci_high is not None and r.comparison.change_pct is not None
            else 0.0
            for _, r in picked
        ]
        minus = [
            (r.comparison.change_pct - r.comparison.ci_low)
            if r.comparison.ci_low is not None and r.comparison.change_pct is not None
            else 0.0
            for _, r in picked
        ]
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[lab for lab, _ in picked],
                mode="markers",
                name=verdict,
                marker={"color": color, "size": 10, "symbol": "diamond"},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    "array": plus,
                    "arrayminus": minus,
                    "color": color,
                },
                text=[
                    f"{lab}<br>{fmt(r.comparison.base_median)} -> {fmt(r.comparison.new_median)} {r.unit}"
                    f"<br>{r.direction} is better<br>{r.comparison.reason}"
                    for lab, r in picked
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(labels)), automargin=True)
    _layout(fig, 110 + 26 * len(rows), xaxis_title="change of the median, new vs base [%]")
    fig.update_layout(margin={"l": 10})
    return str(fig.to_json())
