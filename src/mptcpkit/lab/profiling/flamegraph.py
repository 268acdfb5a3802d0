"""HTML for differential profiles: tables of the biggest share changes and a differential flame graph drawn by
d3-flame-graph (vendored from npm with d3, licenses beside them), inlined so the report stays one offline file.

Colours follow d3-flame-graph's differential mapper: red frames grew in new, blue shrank, the width is new's
samples. MPTCP functions are outlined (and can be highlighted in magenta with the search box).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import jinja2

from mptcpkit.lab.profiling.diff import ProfileDiff

HERE = Path(__file__).resolve().parent


@functools.cache
def assets() -> dict[str, str]:
    vendor = HERE / "vendor"
    return {
        "d3": (vendor / "d3.min.js").read_text(),
        "flamegraph": (vendor / "d3-flamegraph.min.js").read_text(),
        "css": (vendor / "d3-flamegraph.css").read_text(),
    }


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("profiles.html")


def _json(value: object) -> str:
    """JSON safe inside <script type="application/json">."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def section_html(diffs: Sequence[ProfileDiff], *, note: str = "", top: int = 15) -> str:
    """One <section> with every diff; '' when there is nothing to show and nothing to say."""
    if not diffs and not note:
        return ""
    return _template().render(
        diffs=diffs,
        note=note,
        top=top,
        flames=[_json(d.flame) for d in diffs],
        assets=assets() if diffs else None,
    )
