"""`mptcpkit lab`: placeholder, filled by the lab foundation."""

import typer

app = typer.Typer(help="The MPTCP performance lab.", no_args_is_help=True)
