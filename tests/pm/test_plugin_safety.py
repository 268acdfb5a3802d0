"""Plugins in a root daemon: who may have written them, and what a broken plugin can do (issue 15)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import Daemon, wait_for

pytestmark = pytest.mark.needs_root
NOBODY = 65534

GOOD = """
from mptcpkit.pm.plugin import Plugin

class Good(Plugin):
    name = "good"
"""


def plugin_dir(tmp_path: Path, files: dict[str, str], mode: int = 0o755) -> Path:
    d = tmp_path / "plugins"
    d.mkdir(mode=0o755)
    for name, text in files.items():
        (d / name).write_text(text)
        (d / name).chmod(0o644)
    d.chmod(mode)
    return d


def refused(d: Daemon, *words: str) -> None:
    assert d.proc.wait(15) == 2, d.output()
    out = d.output()
    assert all(w in out for w in words), out
    assert "Traceback" not in out


def plugins_of(d: Daemon) -> list[str]:
    return [p["name"] for p in json.loads(d.state_file.read_text())["plugins"]]


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("dir_group", ("writable by its group",)),
        ("dir_other", ("writable by others",)),
        ("dir_owner", ("owned by uid 65534",)),
        ("file_group", ("plugin file", "writable by its group")),
        ("file_owner", ("plugin file", "owned by uid 65534")),
        ("parent_writable", ("parent directory", "writable by others")),
    ],
)
def test_untrusted_plugins_are_refused(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path, setup: str, words: tuple[str, ...]
) -> None:
    base = tmp_path
    if setup == "parent_writable":
        base = tmp_path / "open"
        base.mkdir()
        base.chmod(0o777)  # anyone could rename plugins/ and put their own in its place
    d = plugin_dir(base, {"good.py": GOOD})
    if setup == "dir_group":
        d.chmod(0o775)
    elif setup == "dir_other":
        d.chmod(0o757)
    elif setup == "dir_owner":
        os.chown(d, NOBODY, NOBODY)
    elif setup == "file_group":
        (d / "good.py").chmod(0o664)
    elif setup == "file_owner":
        os.chown(d / "good.py", NOBODY, NOBODY)
    refused(run_pm(pm_ns, f"--plugin-dir={d}", ready=False), *words)


def test_trusted_dir_under_sticky_tmp_loads(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = plugin_dir(tmp_path, {"good.py": GOOD, "link.py": ""})
    (d / "link.py").unlink()
    (d / "link.py").symlink_to(d / "good.py")  # symlinks are not followed
    daemon = run_pm(pm_ns, f"--plugin-dir={d}")
    assert "good" in plugins_of(daemon)
    assert "link.py" in daemon.output()


def test_empty_plugin_dir_never_loads_the_current_directory(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    conf = tmp_path / "empty.conf"
    conf.write_text("[core]\nplugin-dir=\n")
    old = os.getcwd()
    os.chdir(cwd)
    try:
        d = run_pm(pm_ns, conf=conf)
    finally:
        os.chdir(old)
    assert d.alive() and not marker.exists()


BROKEN = {
    "raises.py": "raise RuntimeError('boom at import')\n",
    "exits.py": "import sys\nsys.exit(3)\n",
    "badstart.py": GOOD.replace('"good"', '"badstart"').replace(
        "name =", "def start(self):\n        raise ValueError('no')\n    name ="
    ),
    "exitcb.py": GOOD.replace('"good"', '"exitcb"')
    + "    def new_local_address(self, iface, addr):\n        raise SystemExit(9)\n",
    "good.py": GOOD,
}


def test_broken_plugins_are_contained(pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path) -> None:
    from .conftest import addrs, ip

    d = run_pm(pm_ns, f"--plugin-dir={plugin_dir(tmp_path, BROKEN)}", "--addr-flags=subflow")
    assert sorted(plugins_of(d)) == ["addr_adv", "exitcb", "good", "sspi"]
    ip(pm_ns, "addr", "add", "10.1.1.1/24", "dev", "v1")
    wait_for(lambda: "10.1.1.1" in addrs(pm_ns), 5, "endpoint after a plugin's sys.exit")
    assert d.alive()
    out = d.output()
    for text in (
        "raises.py failed to load",
        "exits.py called sys.exit(3)",
        "badstart failed to start",
        "exitcb called sys.exit(9) in new_local_address",
    ):
        assert text in out, out


def test_name_clash_with_a_builtin_is_refused(
    pm_ns: str, run_pm: Callable[..., Daemon], tmp_path: Path
) -> None:
    d = plugin_dir(tmp_path, {"fake.py": GOOD.replace('"good"', '"addr_adv"')})
    refused(run_pm(pm_ns, f"--plugin-dir={d}", ready=False), "has the name of", "addr_adv")
