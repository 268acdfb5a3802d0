"""`mptcpkit lab scenario show|check` and what `lab run` needs to pick scenarios (names, files, suites)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mptcpkit.errors import UsageError
from mptcpkit.lab.model import Direction, Topology
from mptcpkit.lab.scenarios.base import Scenario
from mptcpkit.lab.scenarios.build import build, resolve_topology
from mptcpkit.lab.scenarios.spec import ScenarioSpec
from mptcpkit.lab.scenarios.suites import (
    builtin_suite_names,
    default_suite_spec,
    load_suite,
    names_builtin_suite,
    resolve,
)
from mptcpkit.lab.units import format_duration, format_rate

app = typer.Typer(
    help="Scenario files: show them resolved, check them without running.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)
for _console in (out, err):
    if not _console.is_terminal:
        _console.width = 140


@dataclass
class Selection:
    """What `lab run` should run: specs, with the suite's defaults for --reps and --scale."""

    specs: list[ScenarioSpec]
    reps: int | None = None
    scale: float | None = None


def select(refs: list[str] | None, suite: str | None) -> Selection:
    """`-s` names/files/globs and `--suite FILE|DIR` -> specs (default: the default suite)."""
    specs: list[ScenarioSpec] = []
    reps = scale = None
    if suite:
        loaded = load_suite(suite)
        specs += loaded.scenarios
        reps, scale = loaded.reps, loaded.scale
    if refs:
        specs += resolve(refs, Path.cwd())
    if not suite and not refs:
        default = default_suite_spec()
        specs, reps, scale = list(default.scenarios), default.reps, default.scale
    seen: dict[str, ScenarioSpec] = {}
    for spec in specs:
        if spec.name in seen and seen[spec.name].origin != spec.origin:
            raise UsageError(
                f"two scenarios are called '{spec.name}': {seen[spec.name].origin} and {spec.origin}"
            )
        seen[spec.name] = spec
    return Selection(list(seen.values()), reps, scale)


def build_all(specs: list[ScenarioSpec], scale: float, engine: str | None) -> list[Scenario]:
    return [build(spec, scale, engine=None if engine in (None, "mptcpkit") else engine) for spec in specs]


def portable_refs(refs: list[str] | None, suite: str | None) -> tuple[list[str] | None, str | None]:
    """`lab run`'s scenario and suite values for a VM guest or a fleet worker: file paths made absolute (they
    see this file system, or the team's shared checkout at the same path); names and globs of names stay."""
    absolute = [str(Path(r).resolve()) if (r.endswith(".toml") or "/" in r) else r for r in refs or []]
    if suite and not names_builtin_suite(suite):
        suite = str(Path(suite).resolve())  # a file or directory; a built-in suite's name stays a name
    return absolute or None, suite or None


def print_list(specs: list[ScenarioSpec]) -> None:
    table = Table(
        "scenario",
        "origin",
        "tags",
        "description",
        caption=f"built-in suites (--suite NAME): {', '.join(builtin_suite_names())}",
    )
    for spec in specs:
        table.add_row(escape(spec.name), escape(spec.origin), ", ".join(spec.tags), spec.description)
    out.print(table)


# ---- show -------------------------------------------------------------------------------------------------


def _direction(d: Direction) -> str:
    parts = [format_rate(d.rate_bps) if d.rate_bps else "unshaped"]
    if d.delay_s:
        parts.append(f"delay {format_duration(d.delay_s)}")
    if d.jitter_s:
        parts.append(f"± {format_duration(d.jitter_s)}")
    if d.loss:
        parts.append(f"loss {100 * d.loss:g} %")
    if d.reorder:
        parts.append(f"reorder {100 * d.reorder:g} %")
    parts.append(f"queue {d.queue_packets} pkt")
    return ", ".join(parts)


def resolved_json(spec: ScenarioSpec, topology: Topology) -> dict[str, Any]:
    """A spec with its resolved topology as JSON (units: bit/s, seconds, bytes, fractions)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            items = [plain(v) for v in value]
            return sorted(items) if isinstance(value, set | frozenset) else items
        if isinstance(value, str | int | float | bool) or value is None:
            return value
        return str(value)

    data = plain(dataclasses.replace(spec, topology=dataclasses.replace(spec.topology, inline=None)))
    data["topology"] = {"from": spec.topology.text(), "resolved": plain(topology)}
    return dict(data)


def print_spec(spec: ScenarioSpec, topology: Topology) -> None:
    out.print(f"[bold]{escape(spec.name)}[/]  ({escape(spec.origin)})", highlight=False)
    if spec.description:
        out.print(f"  {spec.description}", highlight=False)
    if spec.tags:
        out.print(f"  tags: {', '.join(spec.tags)}", highlight=False)
    if spec.params:
        out.print(
            f"  sweep {spec.sweep}: {', '.join(f'{k}={v}' for k, v in spec.params.items())}", highlight=False
        )
    out.print(f"  topology: {spec.topology.text()} -> {escape(topology.name)}", highlight=False)
    links = Table("link", "a", "b", "a -> b", "b -> a", "mtu", title="links")
    for link in topology.links:
        links.add_row(
            link.name,
            link.a.host,
            link.b.host,
            _direction(link.a_to_b),
            _direction(link.b_to_a),
            str(link.mtu),
        )
    out.print(links)
    hosts = Table("host", "path manager", "scheduler", "limits", "endpoints", "sysctls", title="hosts")
    for host in topology.hosts:
        m = host.mptcp
        hosts.add_row(
            host.name,
            m.path_manager,
            m.scheduler or "-",
            f"subflows={m.subflows} add_addr_accepted={m.add_addr_accepted}",
            "\n".join(
                f"{e.address} {'+'.join(sorted(e.flags))}" + (f" dev {e.dev}" if e.dev else "")
                for e in m.endpoints
            )
            or "-",
            "\n".join(f"{k}={v}" for k, v in host.sysctls.items()) or "-",
        )
    out.print(hosts)
    flows = Table(
        "flow",
        "proto",
        "mode",
        "size / duration",
        "parallel",
        "start",
        "client -> server",
        "engine",
        title="flows",
    )
    for f in spec.flows:
        amount = (
            f"{f.size_bytes} B"
            if f.size_bytes is not None
            else (f"{f.duration_s:g} s" if f.duration_s else "-")
        )
        flows.add_row(
            f.name,
            f.proto + (f" (server {f.server_proto})" if f.server_proto else ""),
            f.mode,
            amount,
            str(f.parallel),
            f"{f.start_s:g} s",
            f"{f.client} -> {f.server}" + (f" ({f.to})" if f.to else ""),
            f.engine,
        )
    out.print(flows)
    if spec.actions:
        acts = Table("at", "action", title="actions")
        for a in sorted(spec.actions, key=lambda a: a.at_s):
            acts.add_row(f"{a.at_s:g} s", a.label())
        out.print(acts)
    rules = Table("metric", "kind", "of", "options", "expect", "pass", title="metrics and rules")
    for metric in spec.metrics:
        expect = "-" if metric.expect is None else str(metric.expect)
        if metric.expect_options:
            expect += f" {dict(metric.expect_options)}"
        rules.add_row(
            metric.name,
            metric.kind,
            metric.flow or ", ".join(metric.flows) or spec.flows[0].name,
            ", ".join(f"{k}={v}" for k, v in metric.options.items()) or "-",
            expect,
            f"median {metric.rule.text()} x expected" if metric.rule else "informational",
        )
    for r in spec.relations:
        rules.add_row(r.name, "relation", "", "", "1 (ratio)", r.text())
    out.print(rules)


@app.command("show")
def show_cmd(
    ref: str = typer.Argument(
        ..., metavar="NAME|FILE", help="A built-in scenario (or sweep) name, or a .toml file."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print a scenario fully resolved: topology with changes, flows, actions, metrics and rules."""
    specs = resolve([ref], Path.cwd())
    if as_json:
        print(json.dumps([resolved_json(s, resolve_topology(s)) for s in specs], indent=2))
        return
    for spec in specs:
        print_spec(spec, resolve_topology(spec))


@app.command("check")
def check_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="Scenario or suite files."),
) -> None:
    """Validate scenario and suite files without running them; exit 2 if any is wrong."""
    bad = 0
    for file in files:
        try:
            kind, count = _check_one(file)
        except UsageError as exc:
            err.print(f"[bold red]error[/] {escape(str(exc))}", highlight=False)
            bad += 1
            continue
        out.print(f"[green]ok[/] {file}: {kind} with {count} scenario(s)", highlight=False)
    if bad:
        raise typer.Exit(2)


def _check_one(file: Path) -> tuple[str, int]:
    from mptcpkit.lab.scenarios.loader import load_scenario_file
    from mptcpkit.lab.scenarios.values import read_text

    text = read_text(file)
    try:
        is_suite = "scenarios" in tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        is_suite = False
    if is_suite:
        suite = load_suite(file)
        for spec in suite.scenarios:
            resolve_topology(spec)
        return "suite", len(suite.scenarios)
    specs = load_scenario_file(file)
    for spec in specs:
        resolve_topology(spec)
    return ("sweep" if specs[0].sweep else "scenario"), len(specs)
