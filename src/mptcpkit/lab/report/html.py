"""Self-contained HTML reports: Jinja2 templates, inline CSS and the plotly.js shipped in the plotly package.

The file opens offline (no CDN), e.g. as a CI artifact. The web dashboard renders the same templates but serves
plotly.js once as a cached asset instead of inlining it into every page.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from mptcpkit.errors import UsageError
from mptcpkit.lab.report import figures
from mptcpkit.lab.report.data import (
    CompareData,
    RunData,
    collect_compare,
    collect_run,
    fmt,
    fmt_pct,
    metric_label,
    result_state,
)
from mptcpkit.lab.store import Store

TEMPLATES = Path(__file__).resolve().parent / "templates"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    env.filters["pct"] = fmt_pct
    env.filters["metric_label"] = metric_label
    env.filters["figure"] = _figure_json
    env.filters["state"] = result_state
    env.globals["css"] = css
    return env


@functools.cache
def css() -> str:
    return (TEMPLATES / "style.css").read_text()


@functools.cache
def plotly_js() -> str:
    """The plotly.js bundle of the installed plotly package (about 4.6 MB, minified)."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _figure_json(fig: str | None) -> str:
    """Figure JSON made safe inside <script type="application/json">."""
    return "" if fig is None else fig.replace("</", "<\\/")


def run_figures(data: RunData) -> dict[str, dict[str, str | None]]:
    """Figure JSON per scenario: goodput (stacked subflows), expected vs measured, history."""
    return {
        s.name: {
            "goodput": figures.goodput_figure(s),
            "expected": figures.expected_figure(s),
            "history": figures.history_figure(s.history),
        }
        for s in data.scenarios
    }


def render(template: str, **context: Any) -> str:
    """Render a template; `plotly_src` None inlines plotly.js (report files), else links it (dashboard).

    `plots=False` (pages without figures) leaves plotly.js out entirely.
    """
    context.setdefault("plotly_src", None)
    context.setdefault("nav", None)
    context.setdefault("generated", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    plots = context.pop("plots", True)
    context["plotly_inline"] = plotly_js() if plots and context["plotly_src"] is None else None
    if not plots:
        context["plotly_src"] = None  # a page without figures loads no plotly at all
    return environment().get_template(template).render(**context)


def run_html(data: RunData, **context: Any) -> str:
    from mptcpkit.lab.report.sweeps import sweep_figure, sweeps_of

    results = [r for s in data.scenarios for r in s.results]
    from mptcpkit.lab.report.cost import cost_section

    order = [str(name) for name in data.run.config.get("scenarios", [])]
    sweeps = [(sweep, sweep_figure(sweep)) for sweep in sweeps_of(results, order)]
    context.setdefault("cost", cost_section(data))
    return render("report_run.html", data=data, figs=run_figures(data), sweeps=sweeps, **context)


def compare_html(data: CompareData, **context: Any) -> str:
    return render("report_compare.html", data=data, fig=figures.compare_figure(data.ordered), **context)


def profile_section(store: Store, data: CompareData) -> str:
    """lab/profiling's differential profiles of the comparison ('' when neither run was profiled)."""
    from mptcpkit.lab.profiling.flamegraph import section_html
    from mptcpkit.lab.profiling.views import compare_profiles

    diffs, note = compare_profiles(store, data.base.run_id, data.new.run_id, data.rows)
    return section_html(diffs, note=note) if diffs else ""


def build_html(
    store: Store, run_id: str | None = None, *, compare: tuple[str, str] | None = None, history: bool = True
) -> str:
    """One self-contained HTML page: a run's report, or with `compare=(base, new)` a comparison."""
    if (run_id is None) == (compare is None):
        raise UsageError("give either a run or compare=(base, new), not both or neither")
    if compare is not None:
        data = collect_compare(store, *compare)
        return compare_html(data, profile_html=profile_section(store, data))
    assert run_id is not None
    return run_html(collect_run(store, run_id, with_history=history))
