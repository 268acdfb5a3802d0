"""Daemon configuration compatible with mptcpd: the `[core]` section of mptcpd.conf plus the same flags.

Precedence is mptcpd's: built-in defaults < configuration file < command line. A world-writable file is
refused (anyone could steer a root daemon). Everything else follows mptcpd's forgiving rules: an unknown
key, value or flag name is a *warning* and the setting falls back, so a file that works with mptcpd works
here. `mptcpkit pm check-config` runs the same parser and turns every warning into a failure (exit 2).
"""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.netlink.mptcp_pm import EndpointFlags

DEFAULT_CONFIG = Path("/etc/mptcpd/mptcpd.conf")
DEFAULT_PLUGIN_DIR = Path("/etc/mptcpkit/pm-plugins")
LOG_TARGETS = ("stderr", "syslog", "journal", "null")
MAX_CONFIG_BYTES = 1 << 20
KNOWN_KEYS = ("log", "plugin-dir", "path-manager", "addr-flags", "notify-flags", "load-plugins")
EXTRA_KEYS = (
    "allow-interfaces",
    "deny-interfaces",
    "interface-flags",
    "address-flags",
    "control",
    "control-group",
)
"""Beyond mptcpd (see docs/pm.md): interface globs and per-interface / per-address endpoint flags."""


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


class Warnings(list[str]):
    """Problems mptcpd would only warn about; the daemon logs them, `check-config` fails on them."""


def _tokens(spec: str) -> list[str]:
    return [n.strip() for n in spec.split(",") if n.strip()]


def parse_addr_flags(spec: str, warn: Warnings | None = None, where: str = "addr-flags") -> EndpointFlags:
    """mptcpd's addr-flags: comma-separated subflow, signal, backup, fullmesh. An unknown name is skipped
    with a warning (mptcpd warns too); signal+fullmesh is refused (the kernel rejects every such endpoint)."""
    out = EndpointFlags(0)
    for name in _tokens(spec):
        if name not in _ADDR_NAMES:
            msg = f"{where}: unknown flag {name!r} ignored (expected {', '.join(_ADDR_NAMES)})"
            if warn is None:
                raise UsageError(msg)
            warn.append(msg)
            continue
        out |= EndpointFlags[name.upper()]
    if EndpointFlags.SIGNAL in out and EndpointFlags.FULLMESH in out:
        raise UsageError(f"{where}: 'signal' and 'fullmesh' cannot be combined (the kernel refuses it)")
    return out


def parse_notify_flags(spec: str, warn: Warnings | None = None, where: str = "notify-flags") -> NotifyFlags:
    out = NotifyFlags(0)
    for name in _tokens(spec):
        if name not in _NOTIFY_NAMES:
            msg = f"{where}: unknown flag {name!r} ignored (expected {', '.join(_NOTIFY_NAMES)})"
            if warn is None:
                raise UsageError(msg)
            warn.append(msg)
            continue
        out |= _NOTIFY_NAMES[name]
    return out


def parse_plugin_list(spec: str) -> tuple[str, ...]:
    return tuple(_tokens(spec))


@dataclass(frozen=True)
class Config:
    """Everything the daemon needs to start; built by `load()` from file + command line."""

    log: str = "stderr"
    plugin_dir: Path = DEFAULT_PLUGIN_DIR
    plugin_dir_explicit: bool = False
    """True when the file or the command line named the plugin directory (a missing one is then warned)."""
    path_manager: str | None = None
    addr_flags: EndpointFlags = EndpointFlags(0)  # noqa: RUF009 - immutable IntFlag value
    notify_flags: NotifyFlags = NotifyFlags(0)  # noqa: RUF009
    load_plugins: tuple[str, ...] | None = None
    """None = load every plugin found; else only these names."""
    allow_interfaces: tuple[str, ...] = ()
    """Globs of interface names the monitor may use (empty: all)."""
    deny_interfaces: tuple[str, ...] = ()
    """Globs of interface names the monitor ignores (checked after the allow list)."""
    interface_flags: tuple[tuple[str, EndpointFlags], ...] = ()
    """(interface glob, endpoint flags) in file order; the first match wins over `addr_flags`."""
    address_flags: tuple[tuple[str, EndpointFlags], ...] = ()
    """(address or prefix, endpoint flags); wins over `interface_flags`."""
    control: str | None = None
    """D-Bus for the control API: "system", "session" or a bus address; None: no control API."""
    control_group: str | None = None
    """Group whose members may use the control API (root always may)."""
    debug: bool = False
    config_file: Path | None = None
    netns: str | None = None
    state_file: Path | None = None
    metrics_port: int | None = None
    restore_on_exit: bool = True
    warnings: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def flags_for(self, ifname: str, addr: object) -> EndpointFlags:
        """Endpoint flags for one address: per-address rule, else per-interface glob, else addr-flags."""
        import fnmatch
        import ipaddress

        for spec, flags in self.address_flags:
            try:
                if ipaddress.ip_address(str(addr)) in ipaddress.ip_network(spec, strict=False):
                    return flags
            except ValueError:
                continue
        for glob, flags in self.interface_flags:
            if fnmatch.fnmatchcase(ifname, glob):
                return flags
        return self.addr_flags

    def interface_allowed(self, ifname: str) -> bool:
        import fnmatch

        if self.allow_interfaces and not any(fnmatch.fnmatchcase(ifname, g) for g in self.allow_interfaces):
            return False
        return not any(fnmatch.fnmatchcase(ifname, g) for g in self.deny_interfaces)


def check_not_world_writable(path: Path, what: str) -> None:
    """Refuse as mptcpd does: a world-writable config would let anyone steer a root daemon."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise UsageError(f"{what} {path}: {exc.strerror}") from None
    if st.st_mode & stat.S_IWOTH:
        raise UsageError(f"{what} {path} is world-writable; refusing to use it", hint=f"chmod o-w {path}")


@dataclass(frozen=True)
class Entry:
    key: str
    value: str
    line: int


def parse_ini(text: str, source: str, warn: Warnings) -> list[Entry]:
    """The `[core]` entries of an mptcpd.conf (ELL settings syntax), in order, with line numbers.

    Linear time, never raises: a line that is neither `[group]`, `key=value`, blank nor a `#`/`;` comment
    is skipped with a warning (ELL would drop the whole file; mptcpd then runs on its defaults)."""
    out: list[Entry] = []
    group: str | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                warn.append(f"{source}:{n}: malformed group header {line[:40]!r} ignored")
                group = None
                continue
            group = line[1:-1].strip()
            if group != "core":
                warn.append(f"{source}:{n}: group [{group[:40]}] ignored (only [core] is read)")
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            warn.append(f"{source}:{n}: not a key=value line, ignored: {line[:40]!r}")
            continue
        if group is None:
            warn.append(f"{source}:{n}: key {key.strip()[:40]!r} outside [core] ignored")
            continue
        if group == "core":
            out.append(Entry(key.strip(), value.strip(), n))
    return out


def read_file(path: Path, warn: Warnings) -> list[Entry]:
    """The `[core]` entries of an mptcpd.conf; refuses world-writable files, directories and binaries."""
    check_not_world_writable(path, "configuration file")
    if not path.is_file():
        raise UsageError(f"configuration file {path} is not a regular file")
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"configuration file {path}: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"configuration file {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    if "\0" in text:
        raise UsageError(f"{path}: contains NUL bytes (not a text file)")
    return parse_ini(text, str(path), warn)


def _flag_rules(spec: str, where: str, warn: Warnings) -> tuple[tuple[str, EndpointFlags], ...]:
    """`eth0=subflow wlan*=subflow+backup` -> ((glob, flags), ...); '+' joins flags inside one rule."""
    rules: list[tuple[str, EndpointFlags]] = []
    for item in spec.split():
        name, sep, flags = item.partition("=")
        if not sep or not name:
            warn.append(f"{where}: {item[:40]!r} is not NAME=FLAGS, ignored")
            continue
        rules.append((name, parse_addr_flags(flags.replace("+", ","), warn, where)))
    return tuple(rules)


def apply_value(cfg: Config, key: str, value: str, where: str, warn: Warnings, *, cli: bool) -> Config:
    """Overlay one mptcpd key (file or flag, same names). Command-line errors follow mptcpd's argp errors:
    an unknown --log and empty --plugin-dir/--path-manager/--load-plugins are refused."""
    where = f"{where}: {key}"
    if key == "log":
        if value not in LOG_TARGETS:
            msg = f"{where}: {value!r} is not one of {', '.join(LOG_TARGETS)}"
            if cli:
                raise UsageError(msg)
            warn.append(msg + "; using stderr")
            return cfg
        return replace(cfg, log=value)
    if cli and not value and key in ("plugin-dir", "path-manager", "load-plugins"):
        raise UsageError(f"{where}: needs a value (mptcpd refuses an empty --{key} too)")
    if key == "plugin-dir":
        # empty means the built-in default, as in mptcpd (never the current directory)
        if not value:
            return replace(cfg, plugin_dir=DEFAULT_PLUGIN_DIR, plugin_dir_explicit=False)
        return replace(cfg, plugin_dir=Path(value), plugin_dir_explicit=True)
    if key == "path-manager":
        return replace(cfg, path_manager=value or None)
    if key == "addr-flags":
        return replace(cfg, addr_flags=parse_addr_flags(value, warn, where))
    if key == "notify-flags":
        return replace(cfg, notify_flags=parse_notify_flags(value, warn, where))
    if key == "load-plugins":
        names = parse_plugin_list(value)
        return replace(cfg, load_plugins=names or None)
    if key == "allow-interfaces":
        return replace(cfg, allow_interfaces=tuple(value.replace(",", " ").split()))
    if key == "deny-interfaces":
        return replace(cfg, deny_interfaces=tuple(value.replace(",", " ").split()))
    if key == "interface-flags":
        return replace(cfg, interface_flags=_flag_rules(value, where, warn))
    if key == "address-flags":
        rules = _flag_rules(value, where, warn)
        good = []
        for spec, flags in rules:
            import ipaddress

            try:
                ipaddress.ip_network(spec, strict=False)
            except ValueError:
                warn.append(f"{where}: {spec[:40]!r} is not an address or prefix, ignored")
                continue
            good.append((spec, flags))
        return replace(cfg, address_flags=tuple(good))
    if key == "control":
        return replace(cfg, control=value or None)
    if key == "control-group":
        return replace(cfg, control_group=value or None)
    warn.append(f"{where}: unknown key ignored")
    return replace(cfg, extra={**cfg.extra, key: value})


def load(config_file: Path | None, cli: dict[str, str | None], **runtime: object) -> Config:
    """Defaults < file < command line. `config_file` None means mptcpd's default path if it exists.
    Fatal problems raise UsageError; warnings land in `Config.warnings`."""
    warn = Warnings()
    cfg = Config()
    path = config_file
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    if path is not None:
        for e in read_file(path, warn):
            cfg = apply_value(cfg, e.key[:60], e.value, f"{path}:{e.line}", warn, cli=False)
        cfg = replace(cfg, config_file=path)
    for key, value in cli.items():
        if value is not None:
            k = key.replace("_", "-")
            cfg = apply_value(cfg, k, value, "command line", warn, cli=True)
    cfg = replace(cfg, **runtime)  # type: ignore[arg-type]
    if cfg.plugin_dir_explicit and not cfg.plugin_dir.exists():
        warn.append(f"plugin directory {cfg.plugin_dir} does not exist; only built-in plugins are loaded")
    return replace(cfg, warnings=tuple(warn))


def _read_proc(netns: str | None, names: tuple[str, ...]) -> str | None:
    from mptcpkit.netlink.socket import run_in_netns

    def read() -> str | None:
        for name in names:
            try:
                with open(os.path.join("/proc/sys/net/mptcp", name)) as f:
                    return f.read().strip()
            except FileNotFoundError:
                continue
        return None

    return run_in_netns(netns, read)


def mptcp_enabled_value(netns: str | None = None) -> str | None:
    """Contents of net.mptcp.enabled as seen from `netns` (None: the sysctl is absent)."""
    return _read_proc(netns, ("enabled",))


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
    v = _read_proc(netns, ("path_manager", "pm_type"))
    if v is None:
        return "kernel"
    return {"0": "kernel", "1": "userspace"}.get(v, v)
