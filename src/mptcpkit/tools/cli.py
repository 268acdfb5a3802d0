"""`mptcpkit run/enable/disable/debug/check`: placeholder until the user tools land."""

import typer


def register(app: typer.Typer) -> None:
    """Add the user tools' commands to the top-level app."""
