"""Finding and loading path-manager plugins, with the trust rules a root daemon needs.

Built-in and packaged plugins come from the entry-point group `mptcpkit.pm_plugins`. Directory plugins are
`*.py` files in the plugin directory, loaded only if nobody but root could have written them:

- the directory and each file: owned by root (or the daemon's own user), not writable by group or others;
- every directory above, up to `/`: owned by root (or the daemon's user), and not writable by group or
  others unless it has the sticky bit (like /tmp: others cannot rename or replace what root owns there);
- files are opened with O_NOFOLLOW relative to the checked directory and checked again on the open file,
  so a swap between check and read cannot slip in another file.

A plugin that raises (or calls sys.exit) while importing is logged and skipped; the daemon goes on, as
mptcpd does when a plugin fails to load. A plugin whose name clashes with a built-in or with another plugin
is refused at start (exit 2): silently replacing `addr_adv` would change what the daemon does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import stat
import sys
import types
from dataclasses import dataclass
from pathlib import Path

from mptcpkit.errors import UsageError
from mptcpkit.pm.plugin import ENTRY_POINT_GROUP, Plugin

log = logging.getLogger("mptcpkit.pm.plugin")
MAX_PLUGIN_BYTES = 4 << 20


def _trusted_owner(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _why_untrusted(st: os.stat_result, *, ancestor: bool) -> str | None:
    if not _trusted_owner(st.st_uid):
        return f"is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if ancestor and stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_ISVTX:
            return None  # sticky (like /tmp): others cannot replace entries root owns
        who = "others" if st.st_mode & stat.S_IWOTH else "its group"
        return f"is writable by {who}"
    return None


def check_trusted_dir(directory: Path) -> Path:
    """The real path of `directory` if it and every parent pass the rules above; else UsageError."""
    try:
        real = directory.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"plugin directory {directory}: {exc}") from None
    if not real.is_dir():
        raise UsageError(f"plugin directory {directory} is not a directory")
    for i, p in enumerate([real, *real.parents]):
        why = _why_untrusted(os.stat(p), ancestor=i > 0)
        if why is not None:
            what = "plugin directory" if i == 0 else f"parent directory {p} of plugin directory"
            fix = f"chown root: {p}; chmod go-w {p}"
            raise UsageError(f"{what} {p if i == 0 else directory} {why}; refusing to load plugins", hint=fix)
    return real


def _read_trusted_file(dir_fd: int, name: str, shown: Path) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"plugin file {shown} is not a regular file")
        why = _why_untrusted(st, ancestor=False)
        if why is not None:
            raise UsageError(f"plugin file {shown} {why}; refusing to load it", hint=f"chmod go-w {shown}")
        if st.st_size > MAX_PLUGIN_BYTES:
            raise UsageError(f"plugin file {shown} is larger than {MAX_PLUGIN_BYTES} bytes")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def plugin_classes(module: types.ModuleType) -> list[type[Plugin]]:
    return [
        obj
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Plugin) and obj is not Plugin and obj.name and obj.__module__ == module.__name__
    ]


@dataclass(frozen=True)
class Found:
    cls: type[Plugin]
    origin: str
    """Where it came from: `entry point NAME (module:attr)` or the file path."""


def entry_point_specs(group: str = ENTRY_POINT_GROUP) -> list[tuple[str, str]]:
    """(name, "module:attr") of every entry point in `group`. Read in a forked child, so the daemon never
    imports importlib.metadata (email, zipfile, csv...: about 7 MB of RSS it would keep for its life)."""

    def read() -> list[tuple[str, str]]:
        from importlib.metadata import entry_points

        return [(ep.name, ep.value) for ep in entry_points(group=group)]

    if "importlib.metadata" in sys.modules:
        return read()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return read()
    if pid == 0:  # child: answer through the pipe, never return into the caller's code
        code = 0
        try:
            os.close(r)
            data = json.dumps(read()).encode()
            while data:
                data = data[os.write(w, data) :]
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    _, status = os.waitpid(pid, 0)
    if status != 0:
        return read()
    return [(str(n), str(v)) for n, v in json.loads(b"".join(chunks) or b"[]")]


def _load_spec(value: str) -> object:
    module, _, attr = value.partition(":")
    obj: object = importlib.import_module(module.strip())
    for part in attr.strip().split(".") if attr.strip() else []:
        obj = getattr(obj, part)
    return obj


def from_entry_points() -> dict[str, Found]:
    found: dict[str, Found] = {}
    for name, value in entry_point_specs():
        origin = f"entry point {name} ({value})"
        try:
            cls = _load_spec(value)
        except (Exception, SystemExit) as exc:  # a broken third-party plugin must not stop the daemon
            log.error("plugin %s failed to import: %s", origin, exc)
            continue
        if not (inspect.isclass(cls) and issubclass(cls, Plugin)):
            log.error("%s is not a Plugin subclass; skipped", origin)
            continue
        if name in found:
            raise UsageError(f"two plugins are named {name!r}: {found[name].origin} and {origin}")
        found[name] = Found(cls, origin)
    return found


def from_directory(directory: Path) -> dict[str, Found]:
    """Python plugins in `directory` (trust-checked); mptcpd's C plugins (*.so) there are skipped."""
    real = check_trusted_dir(directory)
    found: dict[str, Found] = {}
    dir_fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        names = sorted(os.listdir(dir_fd))
        for name in names:
            if name.endswith(".so"):
                log.debug("skipping C plugin %s (mptcpkit loads Python plugins)", real / name)
            if not name.endswith(".py") or name.startswith("."):
                continue
            shown = real / name
            try:
                source = _read_trusted_file(dir_fd, name, shown)
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                log.error("plugin file %s cannot be read: %s; skipped", shown, exc.strerror)
                continue
            module = _exec_plugin(source, shown)
            if module is None:
                continue
            for cls in plugin_classes(module):
                if cls.name in found:
                    raise UsageError(
                        f"two plugins are named {cls.name!r}: {found[cls.name].origin} and {shown}"
                    )
                found[cls.name] = Found(cls, str(shown))
    finally:
        os.close(dir_fd)
    return found


def _exec_plugin(source: bytes, path: Path) -> types.ModuleType | None:
    mod_name = f"mptcpkit_pm_plugin_{path.stem}"
    module = types.ModuleType(mod_name)
    module.__file__ = str(path)
    sys.modules[mod_name] = module
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except SystemExit as exc:
        log.error("plugin file %s called sys.exit(%s) while loading; skipped", path, exc.code)
    except (Exception, RecursionError) as exc:
        log.error("plugin file %s failed to load: %s: %s; skipped", path, type(exc).__name__, exc)
    else:
        return module
    sys.modules.pop(mod_name, None)
    return None


def discover(
    plugin_dir: Path | None, load: tuple[str, ...] | None, *, warn: list[str] | None = None
) -> list[type[Plugin]]:
    """Plugins to load, sorted by priority then name. `load` limits them; a name in `load` that is not
    found is a warning (mptcpd ignores it too)."""
    found = from_entry_points()
    if plugin_dir is not None and plugin_dir.is_dir():
        for name, f in from_directory(plugin_dir).items():
            if name in found:
                raise UsageError(
                    f"plugin {name!r} in {f.origin} has the name of {found[name].origin}; refusing to start",
                    hint="rename the plugin's `name`",
                )
            found[name] = f
    if load is not None:
        missing = [n for n in load if n not in found]
        if missing:
            msg = (
                f"load-plugins: no plugin named {', '.join(missing)} (available: {', '.join(sorted(found))})"
            )
            if warn is not None:
                warn.append(msg)
            log.warning("%s", msg)
        found = {n: found[n] for n in load if n in found}
    return sorted((f.cls for f in found.values()), key=lambda c: (c.priority, c.name))
