"""Daemon configuration compatible with mptcpd: the `[core]` section of mptcpd.conf plus the same flags.

Precedence is mptcpd's: built-in defaults < configuration file < command line. A world-writable file or plugin
directory is refused (anyone could make the daemon load code or change what it does as root).
"""

from __future__ import annotations

import configparser
import enum
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink.mptcp_pm import EndpointFlags

DEFAULT_CONFIG = Path("/etc/mptcpd/mptcpd.conf")
DEFAULT_PLUGIN_DIR = Path("/etc/mptcpkit/pm-plugins")
LOG_TARGETS = ("stderr", "syslog", "journal", "null")


class NotifyFlags(enum.IntFlag):
    """mptcpd's notify-flags: which address changes reach the plugins."""

    EXISTING = 1 << 0
    """Also report the addresses present when the daemon starts."""
    SKIP_LINK_LOCAL = 1 << 1
    """Ignore addresses of link scope (fe80::/10, 169.254/16)."""
    SKIP_LOOPBACK = 1 << 2
    """Ignore addresses of host scope (127/8, ::1)."""
    CHECK_ROUTE = 1 << 3
    """Report an address only once a default route leaves through its interface."""


_NOTIFY_NAMES = {
    "existing": NotifyFlags.EXISTING,
    "skip_link_local": NotifyFlags.SKIP_LINK_LOCAL,
    "skip_loopback": NotifyFlags.SKIP_LOOPBACK,
    "check_route": NotifyFlags.CHECK_ROUTE,
}
_ADDR_NAMES = ("subflow", "signal", "backup", "fullmesh")


def parse_addr_flags(spec: str) -> EndpointFlags:
    """mptcpd's addr-flags: comma-separated subflow, signal, backup, fullmesh; signal+fullmesh is invalid."""
    out = EndpointFlags(0)
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        if name not in _ADDR_NAMES:
            raise UsageError(f"addr-flags: unknown flag {name!r} (expected {', '.join(_ADDR_NAMES)})")
        out |= EndpointFlags[name.upper()]
    if EndpointFlags.SIGNAL in out and EndpointFlags.FULLMESH in out:
        raise UsageError("addr-flags: 'signal' and 'fullmesh' cannot be combined (the kernel refuses it)")
    return out


def parse_notify_flags(spec: str) -> NotifyFlags:
    out = NotifyFlags(0)
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        if name not in _NOTIFY_NAMES:
            raise UsageError(f"notify-flags: unknown flag {name!r} (expected {', '.join(_NOTIFY_NAMES)})")
        out |= _NOTIFY_NAMES[name]
    return out


def parse_plugin_list(spec: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in spec.split(",") if p.strip())


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs to start; built by `load()` from file + command line."""

    log: str = "stderr"
    plugin_dir: Path | None = None
    path_manager: str | None = None
    addr_flags: EndpointFlags = EndpointFlags(0)  # noqa: RUF009 - immutable IntFlag value
    notify_flags: NotifyFlags = NotifyFlags(0)  # noqa: RUF009
    load_plugins: tuple[str, ...] | None = None
    """None = load every plugin found; else only these names."""
    debug: bool = False
    config_file: Path | None = None
    netns: str | None = None
    state_file: Path | None = None
    metrics_port: int | None = None
    restore_on_exit: bool = True
    extra: dict[str, str] = field(default_factory=dict)


def check_not_world_writable(path: Path, what: str) -> None:
    """Refuse as mptcpd does: a world-writable config or plugin dir would let anyone steer a root daemon."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    if st.st_mode & stat.S_IWOTH:
        raise UsageError(f"{what} {path} is world-writable; refusing to use it", hint=f"chmod o-w {path}")


def read_file(path: Path) -> dict[str, str]:
    """The `[core]` keys of an mptcpd.conf (unknown keys are kept so they can be warned about)."""
    check_not_world_writable(path, "configuration file")
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=("#",))
    try:
        parser.read_string(path.read_text(), source=str(path))
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot parse: {exc}") from None
    if not parser.has_section("core"):
        return {}
    return {k: v.strip() for k, v in parser.items("core")}


def apply(base: Config, values: dict[str, str | None], source: str) -> Config:
    """Overlay mptcpd keys (file or flags, same names) on `base`; None values are ignored."""
    cfg = base
    extra = dict(base.extra)
    for key, value in values.items():
        if value is None:
            continue
        k = key.replace("_", "-")
        try:
            if k == "log":
                if value not in LOG_TARGETS:
                    raise UsageError(f"log: {value!r} is not one of {', '.join(LOG_TARGETS)}")
                cfg = replace(cfg, log=value)
            elif k == "plugin-dir":
                cfg = replace(cfg, plugin_dir=Path(value))
            elif k == "path-manager":
                cfg = replace(cfg, path_manager=value or None)
            elif k == "addr-flags":
                cfg = replace(cfg, addr_flags=parse_addr_flags(value))
            elif k == "notify-flags":
                cfg = replace(cfg, notify_flags=parse_notify_flags(value))
            elif k == "load-plugins":
                cfg = replace(cfg, load_plugins=parse_plugin_list(value))
            else:
                extra[k] = value
        except UsageError as exc:
            raise UsageError(f"{source}: {exc.message}", hint=exc.hint) from None
    return replace(cfg, extra=extra)


def load(config_file: Path | None, cli: dict[str, str | None], **runtime: object) -> Config:
    """Defaults < file < command line. `config_file` None means mptcpd's default path if it exists."""
    cfg = Config()
    path = config_file
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is not None:
        cfg = apply(cfg, dict(read_file(path)), str(path))
        cfg = replace(cfg, config_file=path)
    cfg = apply(cfg, cli, "command line")
    cfg = replace(cfg, **runtime)  # type: ignore[arg-type]
    if cfg.plugin_dir is not None and cfg.plugin_dir.exists():
        check_not_world_writable(cfg.plugin_dir, "plugin directory")
    return cfg


def mptcp_enabled_value(netns: str | None = None) -> str | None:
    """Contents of net.mptcp.enabled as seen from `netns` (None: the sysctl is absent)."""
    from mptcpkit.netlink.socket import run_in_netns

    def read() -> str | None:
        try:
            with open("/proc/sys/net/mptcp/enabled") as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    return run_in_netns(netns, read)


def require_mptcp_enabled(netns: str | None = None) -> None:
    """Refuse to start when MPTCP is off, naming the sysctl to set."""
    value = mptcp_enabled_value(netns)
    where = f" in network namespace {netns!r}" if netns else ""
    if value is None:
        raise EnvironmentProblem(f"this kernel has no MPTCP support{where} (/proc/sys/net/mptcp is missing)")
    if value != "1":
        prefix = f"ip netns exec {netns} " if netns else ""
        raise EnvironmentProblem(
            f"MPTCP is disabled{where} (net.mptcp.enabled = {value})",
            hint=f"{prefix}sysctl -w net.mptcp.enabled=1",
        )


def pm_type(netns: str | None = None) -> str:
    """ "kernel" or "userspace": the path manager the kernel uses in `netns` (net.mptcp.path_manager)."""
    from mptcpkit.netlink.socket import run_in_netns

    def read() -> str:
        for name in ("path_manager", "pm_type"):
            try:
                with open(f"/proc/sys/net/mptcp/{name}") as f:
                    v = f.read().strip()
            except FileNotFoundError:
                continue
            return {"0": "kernel", "1": "userspace"}.get(v, v)
        return "kernel"

    return run_in_netns(netns, read)
