"""The cost section of run reports (issue 11): MPTCP/TCP ratios, CPU per GB, latency CDFs.

Reads what the run already stores: ratio metrics (relations, unit "x", e.g. `mptcp_vs_tcp`, `best_path_score`),
CPU metrics (unit "s/GB") and the `latency-cdf:FLOW` series written for rr, stream and connect flows. Nothing is
shown for runs without them.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import plotly.graph_objects as go

from mptcpkit.lab.cost_metrics import CDF_QUANTILES
from mptcpkit.lab.report.data import RunData


@dataclass(slots=True)
class CostSection:
    ratio_figure: str | None
    cpu_figure: str | None
    cdf_figures: list[tuple[str, str]]
    """(scenario, figure) for every scenario with latency CDFs"""


def _bar(rows: list[tuple[str, list[float]]], title: str, unit: str, line: float | None) -> str | None:
    if not rows:
        return None
    labels = [name for name, _ in rows]
    medians = [statistics.median(v) for _, v in rows]
    fig = go.Figure(
        go.Bar(
            x=labels,
            y=medians,
            error_y={
                "type": "data",
                "symmetric": False,
                "array": [max(v) - m for (_, v), m in zip(rows, medians, strict=True)],
                "arrayminus": [m - min(v) for (_, v), m in zip(rows, medians, strict=True)],
            },
            hovertemplate="%{x}: %{y:.3g} " + unit + "<extra></extra>",
        )
    )
    if line is not None:
        fig.add_hline(y=line, line_dash="dot", annotation_text=f"{line:g}")
    fig.update_layout(title=title, yaxis_title=unit, height=360, margin={"l": 60, "r": 20, "t": 50, "b": 120})
    return str(fig.to_json())


def cost_section(data: RunData) -> CostSection | None:
    """The figures, or None when the run has no ratio, CPU or latency-CDF data."""
    ratios: list[tuple[str, list[float]]] = []
    cpu: list[tuple[str, list[float]]] = []
    cdfs: list[tuple[str, str]] = []
    for scenario in data.scenarios:
        for r in scenario.results:
            finite = [v for v in r.samples if v == v]
            if not finite:
                continue
            if r.unit == "x":
                ratios.append((f"{scenario.name}: {r.metric}", finite))
            elif r.unit == "s/GB":
                cpu.append((f"{scenario.name}: {r.metric}", finite))
        fig = go.Figure()
        for rep in scenario.reps:
            for flow, values in sorted(rep.cdfs.items()):
                if len(values) != len(CDF_QUANTILES):
                    continue
                fig.add_trace(
                    go.Scatter(
                        x=[v / 1000 for v in values],
                        y=[q / 100 for q in CDF_QUANTILES],
                        mode="lines+markers",
                        name=f"{flow} (rep {rep.rep + 1})",
                        hovertemplate="%{x:.3f} ms at %{y:.3f}<extra>" + flow + "</extra>",
                    )
                )
        if fig.data:
            fig.update_layout(
                title=f"{scenario.name}: latency CDF",
                xaxis={"title": "latency (ms)", "type": "log"},
                yaxis={"title": "fraction of samples", "range": [0, 1.01]},
                height=340,
                margin={"l": 60, "r": 20, "t": 50, "b": 50},
            )
            cdfs.append((scenario.name, str(fig.to_json())))
    if not (ratios or cpu or cdfs):
        return None
    return CostSection(
        ratio_figure=_bar(ratios, "MPTCP against TCP in the same run (ratio, median and range)", "x", 1.0),
        cpu_figure=_bar(cpu, "CPU seconds per GB moved", "s/GB", None),
        cdf_figures=cdfs,
    )
