"""What every `mptcpkit lab` command module shares: the typer app, the consoles, printing helpers."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="The MPTCP performance lab: topologies, scenarios, results.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)
for _console in (out, err):
    if not _console.is_terminal:
        _console.width = 140  # piped or captured: do not squeeze tables into 80 columns

EMULATION_HELP = (
    "Link emulation: auto (netem where the kernel has it, else mptcpkit's own), netem, userspace."
)


def progress(message: str) -> None:
    """Progress lines of long operations, dimmed on stderr."""
    err.print(f"[dim]{message}[/]", highlight=False)


def say(message: str) -> None:
    """One line for the user on stderr (stdout stays for data)."""
    err.print(message)


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def run_self_check(lab: object) -> list[Any]:
    from mptcpkit.lab.selfcheck import self_check

    return self_check(lab, progress=progress)  # type: ignore[arg-type]


def print_checks(checks: list[Any]) -> None:
    table = Table("link", "dir", "what", "configured", "measured", "error", "", title="emulation self-check")
    for c in checks:
        tol = f"{c.tolerance:.2f} pt" if c.quantity == "loss" else f"{100 * c.tolerance:.0f} %"
        verdict = f"[green]ok[/] (±{tol})" if c.ok else f"[bold red]OFF[/] (±{tol})"
        table.add_row(
            c.link,
            c.direction,
            c.quantity,
            f"{c.configured:.2f} {c.unit}",
            f"{c.measured:.2f} {c.unit}",
            f"{c.error_pct:+.1f} %",
            verdict,
        )
    err.print(table)
    bad = [c for c in checks if not c.ok]
    if bad:
        err.print(
            f"[yellow]warning:[/] {len(bad)} measurement(s) differ from the configuration by more than "
            "the tolerance; results measured on this lab may not mean what the topology says"
        )
