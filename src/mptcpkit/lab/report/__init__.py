"""Lab reports: one self-contained HTML file, PNG plots, JUnit XML and Markdown for CI, and a web dashboard.

    html = build_html(store, "latest")                       # or compare=("v6.17", "v6.18")
    write_png(store, "latest", Path("plots"))
    xml = junit_xml(store, "latest"); md = markdown_summary(store, compare=("base", "new"))
    make_app("results.db")                                   # the Starlette dashboard; serve(db, host, port)

data.py gathers what is shown (pure apart from the collect_* readers); figures.py (plotly) and png.py
(matplotlib) draw it; html.py, junit.py and markdown.py format it; web.py serves it; commands.py is CLI glue.
"""

from mptcpkit.lab.report.commands import ReportOutcome, report_cmd, serve_cmd
from mptcpkit.lab.report.html import build_html
from mptcpkit.lab.report.junit import junit_xml
from mptcpkit.lab.report.markdown import markdown_summary
from mptcpkit.lab.report.png import write_png
from mptcpkit.lab.report.web import make_app, serve

__all__ = [
    "ReportOutcome",
    "build_html",
    "junit_xml",
    "make_app",
    "markdown_summary",
    "report_cmd",
    "serve",
    "serve_cmd",
    "write_png",
]
