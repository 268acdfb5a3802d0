"""`mptcpkit enable/disable UNIT`: a systemd drop-in that preloads the MPTCP shim into a service.

A drop-in never touches the unit file, so the unit's own Environment= lines survive. Since a later
`Environment=LD_PRELOAD=` would replace an earlier one, the drop-in composes with values the unit already
sets (LD_PRELOAD, GODEBUG). The drop-in records whether enable created the `UNIT.d` directory so that
disable removes exactly what enable added. Text building/parsing is pure; file and systemctl I/O is thin.

Finding the unit: like mptcpize, UNIT may be a unit file path; otherwise systemd itself is asked where the
unit file lives (`systemctl show -P FragmentPath`, which also resolves template instances such as
`getty@tty1.service` -> `getty@.service`). Where systemd is not running (containers, CI) the standard unit
directories are searched the way systemd would, template included.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.tools.preload import GODEBUG_SETTING, find_shim

DROPIN_NAME = "50-mptcpkit-mptcp.conf"
MARKER = "# Added by `mptcpkit enable`; `mptcpkit disable` removes it."
CREATED_DIR = "# mptcpkit: created-directory"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
SEARCH_DIRS = (
    Path("/etc/systemd/system"),
    Path("/run/systemd/system"),
    Path("/usr/local/lib/systemd/system"),
    Path("/usr/lib/systemd/system"),
    Path("/lib/systemd/system"),
)


def unit_name(unit: str) -> str:
    """`nginx` -> `nginx.service`; refuses names that could escape the unit directory."""
    if not unit or "/" in unit or unit.startswith(".") or any(c.isspace() for c in unit):
        raise UsageError(f"invalid unit name {unit!r}")
    name = unit if "." in unit else unit + ".service"
    if not name.endswith(".service"):
        raise UsageError(
            f"{name}: not a service unit", hint="only services run programs that an Environment= can change"
        )
    return name


def template_of(name: str) -> str | None:
    """`getty@tty1.service` -> `getty@.service`; None for a unit that is not a template instance."""
    prefix, at, rest = name.partition("@")
    if not at or not prefix:
        return None
    instance, dot, suffix = rest.rpartition(".")
    return f"{prefix}@.{suffix}" if dot and instance else None


@dataclass(frozen=True, slots=True)
class UnitLocation:
    """Where a unit's files are: its name, the fragment (unit file) and how it was found."""

    name: str
    fragment: Path
    how: str


def locate(unit: str, unit_dir: Path | None = None) -> UnitLocation:
    """A unit file path (as mptcpize accepts), or a unit name asked of systemd / searched offline."""
    if "/" in unit:
        path = Path(unit)
        if not path.is_file():
            raise UsageError(f"{unit}: no such unit file")
        if not path.name.endswith(".service"):
            raise UsageError(f"{unit}: not a service unit file (its name must end with .service)")
        name = unit_name(path.name)
        try:
            path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{unit}: cannot read it ({exc.strerror})") from exc
        return UnitLocation(name, path, "unit file given")
    name = unit_name(unit)
    if unit_dir is None and systemd_running():
        fragment = fragment_from_systemd(name)
        if fragment is None:
            raise UsageError(f"unit {name} not found", hint="systemd has no unit file for it (systemctl cat)")
        return UnitLocation(name, fragment, "systemctl show -P FragmentPath")
    dirs = search_dirs(unit_dir or DEFAULT_UNIT_DIR)
    for candidate in (name, template_of(name)):
        for d in dirs:
            if candidate and (d / candidate).is_file():
                return UnitLocation(
                    name, d / candidate, "searched the unit directories (systemd is not running)"
                )
    raise UsageError(f"unit {name} not found", hint=f"looked in {', '.join(str(d) for d in dirs)}")


def fragment_from_systemd(name: str) -> Path | None:
    """Ask the running systemd where the unit file of `name` is (`FragmentPath`); None if it has none."""
    try:
        proc = subprocess.run(
            [systemctl(), "show", "-P", "FragmentPath", "--", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"cannot ask systemd about {name}: {exc}") from exc
    if proc.returncode != 0:
        raise EnvironmentProblem(f"systemctl show {name} failed: {proc.stderr.strip()}")
    path = proc.stdout.strip()
    return Path(path) if path else None


def systemctl() -> str:
    """The systemctl to run (`MPTCPKIT_SYSTEMCTL` overrides it, e.g. for a systemd in a container)."""
    return os.environ.get("MPTCPKIT_SYSTEMCTL", "systemctl")


def search_dirs(unit_dir: Path) -> list[Path]:
    """Unit directories, highest priority first (the chosen base directory first)."""
    return [unit_dir, *[d for d in SEARCH_DIRS if d != unit_dir]]


def parse_environment(text: str) -> dict[str, str]:
    """The variables set by `Environment=` lines of a unit file text (later assignments win, as in systemd).

    `Environment=` with an empty value resets the list, as systemd does.
    """
    env: dict[str, str] = {}
    section = ""
    for raw in _logical_lines(text):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if not sep or key.strip() != "Environment" or section != "Service":
            continue
        value = value.strip()
        if not value:
            env.clear()
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = value.split()
        for word in words:
            name, eq, val = word.partition("=")
            if eq:
                env[name] = val
    return env


def _logical_lines(text: str) -> Iterable[str]:
    buf = ""
    for line in text.splitlines():
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        yield buf + line
        buf = ""
    if buf:
        yield buf


def dropin_text(existing: dict[str, str], shim: str, *, created_dir: bool) -> str:
    """The drop-in: LD_PRELOAD and GODEBUG extended from the values the unit already has."""
    preload = [p for p in existing.get("LD_PRELOAD", "").replace(" ", ":").split(":") if p]
    if shim not in preload:
        preload.append(shim)
    godebug = [p for p in existing.get("GODEBUG", "").split(",") if p]
    if not any(p.split("=", 1)[0] == "multipathtcp" for p in godebug):
        godebug.append(GODEBUG_SETTING)
    lines = [MARKER]
    if created_dir:
        lines.append(CREATED_DIR)
    lines += [
        "[Service]",
        f'Environment="LD_PRELOAD={":".join(preload)}"',
        f'Environment="GODEBUG={",".join(godebug)}"',
        "",
    ]
    return "\n".join(lines)


def unit_texts(name: str, unit_dir: Path, fragment: Path | None = None) -> list[str]:
    """Texts of the unit file and its other drop-ins, in systemd's order (unit, then drop-ins by name).

    For a template instance, the template's drop-ins (`foo@.service.d`) apply as well as the instance's.
    """
    dirs = search_dirs(unit_dir)
    texts: list[str] = []
    if fragment is not None:
        texts = [fragment.read_text(errors="replace")]
    else:
        for candidate in [c for c in (template_of(name), name) if c]:
            for d in reversed(dirs):  # lowest priority first; later overrides
                if (d / candidate).is_file():
                    texts = [(d / candidate).read_text(errors="replace")]
    dropins: dict[str, Path] = {}
    for candidate in [c for c in (template_of(name), name) if c]:
        for d in reversed(dirs):
            ddir = d / f"{candidate}.d"
            if ddir.is_dir():
                for conf in ddir.glob("*.conf"):
                    if conf.name != DROPIN_NAME:
                        dropins[conf.name] = conf
    texts += [dropins[k].read_text(errors="replace") for k in sorted(dropins)]
    return texts


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def daemon_reload() -> str:
    """`systemctl daemon-reload`, or a note saying why it was skipped."""
    if not systemd_running():
        return "note: systemd is not running here (not PID 1): skipped `systemctl daemon-reload`"
    proc = subprocess.run([systemctl(), "daemon-reload"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise EnvironmentProblem(f"systemctl daemon-reload failed: {proc.stderr.strip()}")
    return "systemctl daemon-reload: done"


def enable(unit: str, *, unit_dir: Path | None = None, shim: str | None = None) -> list[str]:
    """Write the drop-in; returns the messages to show."""
    where = locate(unit, unit_dir)
    name = where.name
    base = unit_dir or DEFAULT_UNIT_DIR
    texts = unit_texts(name, base, where.fragment)
    existing: dict[str, str] = {}
    for text in texts:
        existing.update(parse_environment(text))
    ddir = base / f"{name}.d"
    path = ddir / DROPIN_NAME
    created = not ddir.exists()
    if path.exists():
        created = CREATED_DIR in path.read_text(errors="replace")
    try:
        ddir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(dropin_text(existing, shim or str(find_shim()), created_dir=created))
        os.replace(tmp, path)
    except PermissionError as exc:
        raise EnvironmentProblem(f"cannot write {path}: permission denied", hint="run as root") from exc
    return [
        f"unit file: {where.fragment} ({where.how})",
        f"wrote {path}",
        daemon_reload(),
        f"restart the service to apply: systemctl restart {name}",
    ]


def disable(unit: str, *, unit_dir: Path | None = None) -> list[str]:
    """Remove the drop-in (and its directory if enable created it and it is empty now)."""
    name = unit_name(Path(unit).name if "/" in unit else unit)
    base = unit_dir or DEFAULT_UNIT_DIR
    ddir = base / f"{name}.d"
    path = ddir / DROPIN_NAME
    if not path.is_file():
        return [f"{name}: MPTCP was not enabled by mptcpkit (no {path})"]
    text = path.read_text(errors="replace")
    if MARKER not in text:
        raise UsageError(f"{path} was not written by mptcpkit; not removing it")
    try:
        path.unlink()
        msgs = [f"removed {path}"]
        if CREATED_DIR in text and not any(ddir.iterdir()):
            ddir.rmdir()
            msgs.append(f"removed {ddir}")
    except PermissionError as exc:
        raise EnvironmentProblem(f"cannot remove {path}: permission denied", hint="run as root") from exc
    return [*msgs, daemon_reload(), f"restart the service to apply: systemctl restart {name}"]
