"""`mptcpkit run`: find (or build) the LD_PRELOAD shim and prepare the environment of the wrapped program.

The environment builder is pure; locating and compiling the shim is the only I/O besides the final exec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

from mptcpkit.errors import EnvironmentProblem, UsageError

SHIM_NAME = "libmptcpwrap.so"
DEBUG_ENV = "MPTCPKIT_RUN_DEBUG"
GODEBUG_SETTING = "multipathtcp=1"


def _append_list(current: str | None, item: str, sep: str) -> str:
    """`item` appended to a separated list, unless already present."""
    parts = [p for p in (current or "").split(sep) if p]
    if item not in parts:
        parts.append(item)
    return sep.join(parts)


def _godebug(current: str | None) -> str:
    """GODEBUG with multipathtcp=1, unless the user set multipathtcp explicitly (their choice wins)."""
    parts = [p for p in (current or "").split(",") if p]
    if any(p.split("=", 1)[0].strip() == "multipathtcp" for p in parts):
        return ",".join(parts)
    return ",".join([*parts, GODEBUG_SETTING])


def build_env(environ: Mapping[str, str], shim: str, *, debug: bool) -> dict[str, str]:
    """The environment for the wrapped program: shim appended to LD_PRELOAD, Go told to use MPTCP.

    ld.so accepts both spaces and colons in LD_PRELOAD; an existing value keeps its separator style.
    """
    env = dict(environ)
    current = env.get("LD_PRELOAD", "").strip()
    sep = " " if (" " in current and ":" not in current) else ":"
    env["LD_PRELOAD"] = _append_list(current, shim, sep)
    env["GODEBUG"] = _godebug(env.get("GODEBUG"))
    if debug:
        env[DEBUG_ENV] = "1"
    else:
        env.pop(DEBUG_ENV, None)
    return env


# ---- locating / building the shim ---------------------------------------------------------------------


def shim_source() -> Path:
    """The C source shipped inside the package."""
    return Path(str(resources.files("mptcpkit.tools") / "csrc" / "mptcpwrap.c"))


def packaged_shim() -> Path:
    """Where setup.py puts the shim built at install time."""
    return Path(str(resources.files("mptcpkit.tools") / SHIM_NAME))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mptcpkit"


def compiler() -> str | None:
    """The C compiler to use: $CC, else cc/gcc/clang from PATH."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc.split()[0]) and cc
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def compile_shim(source: Path, output: Path) -> None:
    """Compile the shim with the system C compiler; atomic, so concurrent first uses do not race."""
    cc = compiler()
    if cc is None:
        raise EnvironmentProblem(
            "the `mptcpkit run` shim is not built and no C compiler was found",
            hint="install one (Debian/Ubuntu: apt install gcc; Fedora: dnf install gcc), then retry; "
            "or reinstall mptcpkit where a compiler is present",
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=output.parent)
    os.close(fd)
    argv = [*cc.split(), "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, str(source), "-ldl"]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        os.unlink(tmp)
        raise EnvironmentProblem(
            f"compiling the `mptcpkit run` shim failed: {' '.join(argv)}\n{proc.stderr.strip()}",
            hint="install the C compiler and libc headers (Debian: apt install gcc libc6-dev)",
        )
    os.chmod(tmp, 0o755)
    os.replace(tmp, output)


def find_shim() -> Path:
    """The shim to preload: the one built at install time, else one compiled into the cache on first use."""
    packaged = packaged_shim()
    if packaged.is_file():
        return packaged.resolve()
    source = shim_source()
    if not source.is_file():
        raise EnvironmentProblem(
            f"the shim source {source} is missing from the installation", hint="reinstall mptcpkit"
        )
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"libmptcpwrap-{digest}.so"
    if not cached.is_file():
        compile_shim(source, cached)
    return cached.resolve()


def exec_program(argv: Sequence[str], *, debug: bool) -> None:
    """Replace this process with `argv` under the shim (exit status and signals stay its own)."""
    if not argv:
        raise UsageError("no program given", hint="mptcpkit run -- PROGRAM [ARGS...]")
    program = shutil.which(argv[0]) if "/" not in argv[0] else argv[0]
    if program is None or not os.access(program, os.X_OK):
        raise UsageError(f"program not found or not executable: {argv[0]}")
    env = build_env(os.environ, str(find_shim()), debug=debug)
    if debug:
        os.write(2, f"mptcpkit run: LD_PRELOAD={env['LD_PRELOAD']} GODEBUG={env['GODEBUG']}\n".encode())
    os.execve(program, list(argv), env)
