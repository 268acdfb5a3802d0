"""`mptcpkit lab ...`: parse, call the lab, print. No lab logic lives here.

Where new commands go (the order of registration is the order of `mptcpkit lab --help`):
- labs.py: lab lifecycle (topologies, up, status, exec, check, down, console);
- run.py: `lab run` and its options;
- results.py: stored runs (runs, show, compare, history, report, serve);
- a new area: its own module in its own package with `app = typer.Typer(...)` (like lab/scenarios/cli.py,
  lab/profiling/cli.py), added below with one `app.add_typer(...)` line; or a module here whose functions use
  `@app.command(...)` from common.py, imported below.
Logic belongs in the lab modules (lifecycle.py, run_request.py, report/commands.py, ...), not here.
"""

from __future__ import annotations

import importlib

from mptcpkit.lab.cli.common import app

for _module in ("labs", "run", "results"):  # registration order = order of `mptcpkit lab --help`
    importlib.import_module(f"mptcpkit.lab.cli.{_module}")

from mptcpkit.lab.cli.labs import console_cmd  # noqa: E402

app.command("console")(console_cmd)  # listed last, after the result commands

from mptcpkit.lab.profiling.cli import app as _profile_app  # noqa: E402
from mptcpkit.lab.scenarios.cli import app as _scenario_app  # noqa: E402

app.add_typer(_scenario_app, name="scenario")
app.add_typer(_profile_app, name="profile")

from mptcpkit.lab.fleet import cli as _fleet_cli  # noqa: E402

app.command("submit")(_fleet_cli.submit)
app.command("worker")(_fleet_cli.worker)
app.add_typer(_fleet_cli.queue_app, name="queue")
app.command("bisect")(_fleet_cli.bisect)

__all__ = ["app"]
