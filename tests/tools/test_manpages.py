"""Man pages generated from the CLI: every command is documented, groff renders them without warnings,
and the committed pages in docs/man know every command the CLI has."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mptcpkit.tools import manpage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("man")
    res = subprocess.run(
        [sys.executable, "-m", "mptcpkit.tools.manpage", "--out", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert sorted(Path(p).name for p in res.stdout.split()) == ["mptcpkit-pm.8", "mptcpkit.1"]
    return out


def rendered(page: Path) -> str:
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    res = subprocess.run(
        ["man", "--warnings", "-l", str(page)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "200", "PATH": "/usr/bin:/bin"},
        check=True,
    )
    assert res.stderr == "", res.stderr  # groff warnings: bad escapes, unknown requests
    return res.stdout


def commands_in(text: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^\.SS (mptcpkit.*)$", text, flags=re.M)}


def expected(path: tuple[str, ...]) -> set[str]:
    node = manpage.find(manpage.root_node(), path)
    return {" ".join(["mptcpkit", *n.path]) for n in manpage.walk(node) if n is not node}


def test_mptcpkit_1_lists_every_subcommand(pages: Path) -> None:
    roff = (pages / "mptcpkit.1").read_text()
    want = expected(())
    assert {"mptcpkit pm run", "mptcpkit check serve", "mptcpkit lab run", "mptcpkit enable"} <= want
    assert commands_in(roff.replace("\\-", "-")) == want
    text = rendered(pages / "mptcpkit.1")
    for command in want:
        assert command in text, command
    assert "--max-connections" in text and "[default: 10000]" in text  # options with their defaults
    assert "check.target" not in text and "mptcpkit check target" not in text  # hidden commands stay hidden


def test_mptcpkit_pm_8_lists_every_pm_subcommand_and_option(pages: Path) -> None:
    roff = (pages / "mptcpkit-pm.8").read_text()
    assert roff.startswith(".TH MPTCPKIT-PM 8 ")
    want = expected(("pm",))
    assert want and commands_in(roff.replace("\\-", "-")) == want
    text = rendered(pages / "mptcpkit-pm.8")
    for option in ("--path-manager", "--addr-flags", "--notify-flags", "--plugin-dir", "--config"):
        assert option in text
    assert "mptcpd(8)" in text


def test_committed_pages_know_every_command() -> None:
    """docs/man is regenerated with `python -m mptcpkit.tools.manpage` whenever a command is added."""
    for name, path in (("mptcpkit.1", ()), ("mptcpkit-pm.8", ("pm",))):
        committed = (REPO / "docs" / "man" / name).read_text()
        assert commands_in(committed.replace("\\-", "-")) == expected(path), (
            f"docs/man/{name} is stale: run `.venv/bin/python -m mptcpkit.tools.manpage`"
        )


def test_roff_escaping() -> None:
    assert manpage.roff("a-b \\ `x`") == "a\\-b \\e \\fBx\\fR"
    assert manpage.roff(".starts\n'quote") == "\\&.starts\n\\&'quote"
