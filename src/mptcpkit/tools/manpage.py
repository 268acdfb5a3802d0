"""Man pages generated from the CLI itself (the click tree under typer), so they never drift from `--help`.

    python -m mptcpkit.tools.manpage [--out docs/man]

writes `mptcpkit.1` (every command, recursively, with its arguments and options) and `mptcpkit-pm.8` (the
path-manager daemon, section 8 like mptcpd(8)). Rendering is pure: (command tree) -> roff text. A small
generator instead of click-man: typer vendors its own click, which click-man's type checks do not know.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path("docs/man")


@dataclass(frozen=True, slots=True)
class Node:
    """One command of the tree: its words (`lab run`), help text, parameters and subcommands."""

    path: tuple[str, ...]
    help: str
    short: str
    params: tuple[tuple[str, str, bool], ...]  # (label, help, is an argument)
    children: tuple[Node, ...]


def command_tree(command: Any, ctx: Any, path: tuple[str, ...] = ()) -> Node:
    """Walk a click command (group) into Nodes; hidden commands are left out as in `--help`."""
    children: list[Node] = []
    if hasattr(command, "list_commands"):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            sub_ctx = type(ctx)(sub, info_name=name, parent=ctx)
            children.append(command_tree(sub, sub_ctx, (*path, name)))
    help_text = (command.help or "").strip()
    short = (command.short_help or help_text.split("\n\n", 1)[0]).strip().replace("\n", " ")
    params = []
    for param in command.params:
        record = None if getattr(param, "hidden", False) else param.get_help_record(ctx)
        if record is not None:
            params.append((record[0], record[1], param.param_type_name == "argument"))
    return Node(path, help_text, short, tuple(params), tuple(children))


def walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from walk(child)


def find(node: Node, path: tuple[str, ...]) -> Node:
    for n in walk(node):
        if n.path == path:
            return n
    raise KeyError(" ".join(path))


def roff(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and lines starting with a control character."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", text)  # `code` -> bold
    return "\n".join("\\&" + line if line[:1] in (".", "'") else line for line in text.splitlines())


def paragraphs(text: str) -> str:
    return "\n.PP\n".join(roff(" ".join(p.split())) for p in text.split("\n\n") if p.strip())


def param_lines(param: tuple[str, str, bool]) -> list[str]:
    """`.TP` entry of one option or argument, from click's own help record (metavar, default)."""
    label, help_text, _ = param
    parts = re.split(r"(--?[A-Za-z0-9][-A-Za-z0-9]*)", label)
    names = "".join(f"\\fB{roff(p)}\\fR" if p.startswith("-") and len(p) > 1 else roff(p) for p in parts)
    return [".TP", names, roff(" ".join(help_text.split())) or "\\&"]


def synopsis(node: Node, prog: str) -> str:
    words = " ".join([prog, *node.path])
    tail = " \\fICOMMAND\\fR [\\fIARGS\\fR]..." if node.children else ""
    args = "".join(f" \\fI{roff(label.split(' <', 1)[0])}\\fR" for label, _, arg in node.params if arg)
    return f"\\fB{roff(words)}\\fR [\\fIOPTIONS\\fR]{args}{tail}"


def command_section(node: Node, prog: str) -> list[str]:
    """A `.SS` block for one command: synopsis, description, its options."""
    lines = [f".SS {roff(' '.join([prog, *node.path]))}", synopsis(node, prog), ".PP", paragraphs(node.help)]
    for param in node.params:
        lines += param_lines(param)
    return lines


def render(root: Node, *, prog: str, path: tuple[str, ...], section: int, title: str, see_also: str) -> str:
    """The roff text of the man page for the command at `path` and everything below it."""
    node = find(root, path)
    name = "-".join([prog, *path])
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    from mptcpkit import __version__

    lines = [
        f'.TH {name.upper()} {section} "{date}" "mptcpkit {__version__}" "{title}"',
        ".SH NAME",
        f"{roff(name)} \\- {roff(node.short)}",
        ".SH SYNOPSIS",
        synopsis(node, prog),
        ".SH DESCRIPTION",
        paragraphs(node.help),
    ]
    if node.params:
        lines.append(".SH OPTIONS")
        for param in node.params:
            lines += param_lines(param)
    below = [n for n in walk(node) if n is not node]
    if below:
        lines.append(".SH COMMANDS")
        for n in below:
            lines += command_section(n, prog)
    lines += [".SH SEE ALSO", roff(see_also), ""]
    return "\n".join(lines)


def root_node() -> Node:
    import typer.main

    from mptcpkit.cli import app

    command = typer.main.get_command(app)
    ctx = command.context_class(command, info_name="mptcpkit")
    return command_tree(command, ctx)


PAGES = (
    # file, path below `mptcpkit`, section, title, see also
    (
        "mptcpkit.1",
        (),
        1,
        "User Commands",
        "mptcpkit-pm(8), mptcpd(8), mptcpize(8), ip-mptcp(8), ss(8), nstat(8)",
    ),
    (
        "mptcpkit-pm.8",
        ("pm",),
        8,
        "System Administration",
        "mptcpkit(1), mptcpd(8), mptcpd.conf, ip-mptcp(8)",
    ),
)


def build(out: Path) -> list[Path]:
    """Write every page of PAGES into `out`; returns the files written."""
    root = root_node()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for file, path, section, title, see_also in PAGES:
        target = out / file
        target.write_text(
            render(root, prog="mptcpkit", path=path, section=section, title=title, see_also=see_also)
        )
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate mptcpkit's man pages from its CLI.")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    args = parser.parse_args(argv)
    for path in build(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
