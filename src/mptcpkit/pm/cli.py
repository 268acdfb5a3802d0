"""`mptcpkit pm`: placeholder until the path-manager daemon lands."""

import typer

app = typer.Typer(help="Path-manager daemon (mptcpd drop-in).", no_args_is_help=True)
