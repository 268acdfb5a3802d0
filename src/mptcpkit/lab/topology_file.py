"""Load topologies from TOML files (or the built-in ones by name) into the model.

Every mistake becomes one TopologyError naming file, line and field; unknown keys are refused (with a
'did you mean' hint) because a typo such as `rat = "10mbit"` would otherwise silently leave a link unshaped.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import ipaddress
import os
import stat
import tomllib
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any, cast

from mptcpkit.errors import TopologyError
from mptcpkit.lab import model
from mptcpkit.lab.model import (
    Direction,
    Endpoint,
    Host,
    Link,
    LinkEnd,
    ModelError,
    MptcpSettings,
    PathManager,
    Route,
    Topology,
    field_path_text,
)
from mptcpkit.lab.model_checks import MAX_HOSTS, MAX_LINKS
from mptcpkit.lab.toml_lines import index_lines, line_of
from mptcpkit.lab.units import Bdp, parse_duration, parse_fraction, parse_queue, parse_rate

FieldPath = tuple[str | int, ...]

_TOP_KEYS = {"name", "description", "hosts", "links"}
_HOST_KEYS = {"mptcp", "sysctls", "routes", "forwarding", "policy_routing", "ssh"}
_MPTCP_KEYS = {"enabled", "path_manager", "scheduler", "limits", "endpoints"}
_LIMIT_KEYS = {"subflows", "add_addr_accepted"}
_ENDPOINT_KEYS = {"address", "flags", "dev", "id", "port"}
_ROUTE_KEYS = {"to", "via", "dev", "metric"}
_SHAPE_KEYS = {"rate", "delay", "jitter", "loss", "queue", "reorder"}
_LINK_KEYS = {"name", "a", "b", "mtu", "a_to_b", "b_to_a"} | _SHAPE_KEYS
_END_KEYS = {"host", "ifname", "addresses"}

MAX_FILE_BYTES = 1 << 20
"""Topology files larger than this are refused before parsing (docs/topology.md, "Limits")."""


def builtin_names() -> list[str]:
    """Names of the topologies shipped with mptcpkit."""
    folder = resources.files("mptcpkit.lab") / "topologies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_topology(ref: str | Path) -> Topology:
    """Load a topology from a file path or a built-in name such as 'two-paths'."""
    path = Path(ref)
    if path.suffix == ".toml" or os.path.lexists(path) or "/" in str(ref):
        return parse_topology(read_topology_text(path), source=str(path))
    name = str(ref)
    folder = resources.files("mptcpkit.lab") / "topologies"
    candidate = folder / f"{name}.toml"
    if not name.isascii() or not name.replace("-", "").replace("_", "").isalnum() or not candidate.is_file():
        close = difflib.get_close_matches(name, builtin_names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise TopologyError(
            f"unknown topology {name[:60]!a}{hint}; built-in: {', '.join(builtin_names())}, "
            "or give a .toml file path"
        )
    return parse_topology(candidate.read_text(), source=f"{name}.toml")


def read_lab_file(
    path: Path,
    what: str = "topology file",
    error: type[TopologyError] = TopologyError,
    missing_hint: str = "",
) -> str:
    """The text of a topology, scenario or suite file, or one `error` saying why it cannot be read.

    Refuses what is not a regular file (directories, FIFOs, devices: opened non-blocking, so a FIFO cannot hang
    us), symlink loops, files over MAX_FILE_BYTES and bytes that are not UTF-8 (with the line of the first one).
    """
    shown = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        reasons = {
            errno.ENOENT: f"no such {what}{missing_hint}",
            errno.ELOOP: "symbolic link loop (too many levels of symbolic links)",
            errno.EACCES: "permission denied",
            errno.ENOTDIR: f"no such {what} (a part of the path is not a directory)",
            errno.ENAMETOOLONG: "file name too long",
        }
        raise error(reasons.get(exc.errno or 0, f"cannot open: {exc.strerror}"), file=shown) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise error(f"is a directory, not a {what}", file=shown)
        if not stat.S_ISREG(mode):
            raise error("is not a regular file", file=shown)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", file=shown) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise error(f"file is larger than {MAX_FILE_BYTES} bytes (the limit for a {what})", file=shown)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(
            f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})", file=shown, line=line
        ) from None


def read_topology_text(path: Path) -> str:
    """The text of a topology file, or one TopologyError saying why it cannot be read (see read_lab_file)."""
    return read_lab_file(path, missing_hint=f" (built-in topologies: {', '.join(builtin_names())})")


def parse_topology(text: str, source: str = "<topology>") -> Topology:
    """Parse TOML text into a validated Topology."""
    if len(text) > MAX_FILE_BYTES:
        raise TopologyError(f"topology text is larger than {MAX_FILE_BYTES} bytes", file=source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(one_line(f"not valid TOML: {exc}"), file=source) from None
    except RecursionError:
        raise TopologyError("not valid TOML: arrays or tables nested too deeply", file=source) from None
    lines = index_lines(text)
    try:
        topology = _build(data, source)
        model.validate(topology)
    except ModelError as exc:
        raise located(exc, source, lines) from None
    return topology


def located(exc: ModelError, source: str, lines: dict[FieldPath, int] | None = None) -> TopologyError:
    """`exc` as a TopologyError with file:line (the lines are indexed from `source` when not given)."""
    if lines is None:
        lines = {}
        with contextlib.suppress(TopologyError):
            lines = index_lines(read_topology_text(Path(source)))
    return TopologyError(
        one_line(exc.message), file=source, line=line_of(lines, exc.path), field=field_path_text(exc.path)
    )


def one_line(text: str) -> str:
    """`text` with control and other unprintable characters escaped: a message is one line, whatever the file held."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


class _Reader:
    """Typed access to one TOML table with the path it lives at."""

    def __init__(self, data: Any, path: FieldPath, allowed: set[str]) -> None:
        if not isinstance(data, dict):
            raise ModelError(path, f"expected a table, got {type(data).__name__}")
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(key, sorted(allowed), n=1)
                hint = (
                    f" (did you mean '{close[0]}'?)" if close else f"; allowed: {', '.join(sorted(allowed))}"
                )
                raise ModelError((*path, key), f"unknown field '{key}'{hint}")
        self.data: dict[str, Any] = data
        self.path = path

    def at(self, key: str) -> FieldPath:
        return (*self.path, key)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) and kind is not bool and not (isinstance(kind, tuple) and bool in kind):
            raise ModelError(self.at(key), f"expected {_kind_name(kind)}, got a boolean")
        if not isinstance(value, kind):
            raise ModelError(
                self.at(key), f"expected {_kind_name(kind)}, got {type(value).__name__} {value!r}"
            )
        return value

    def parse(self, key: str, parser: Any, default: Any = None) -> Any:
        if key not in self.data:
            return default
        try:
            return parser(self.data[key])
        except ValueError as exc:
            raise ModelError(self.at(key), str(exc)) from None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        bool: "true or false",
        list: "a list",
        dict: "a table",
        float: "a number",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _build(data: dict[str, Any], source: str) -> Topology:
    top = _Reader(data, (), _TOP_KEYS)
    name = top.get("name", str) or Path(source).stem
    hosts_data = top.get("hosts", dict) or {}
    if len(hosts_data) > MAX_HOSTS:
        raise ModelError(("hosts",), f"{len(hosts_data)} hosts; at most {MAX_HOSTS} are supported")
    hosts = tuple(_host(hname, hdata) for hname, hdata in hosts_data.items())
    links_data = top.get("links", list) or []
    if len(links_data) > MAX_LINKS:
        raise ModelError(("links",), f"{len(links_data)} links; at most {MAX_LINKS} are supported")
    next_ifindex: dict[str, int] = {}
    links = tuple(_link(i, ldata, next_ifindex) for i, ldata in enumerate(links_data))
    return Topology(
        name=name, hosts=hosts, links=links, description=top.get("description", str) or "", source=source
    )


def _host(name: str, data: Any) -> Host:
    r = _Reader(data, ("hosts", name), _HOST_KEYS)
    sysctls_data = r.get("sysctls", dict) or {}
    sysctls = {}
    for key, value in sysctls_data.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ModelError((*r.at("sysctls"), key), "sysctl values are strings or numbers")
        sysctls[key] = str(value)
    routes = tuple(_route((*r.at("routes"), i), rd) for i, rd in enumerate(r.get("routes", list) or []))
    mptcp = _mptcp(r.at("mptcp"), r.get("mptcp", dict) or {})
    return Host(
        name=name,
        mptcp=mptcp,
        sysctls=sysctls,
        routes=routes,
        forwarding=bool(r.get("forwarding", bool, False)),
        policy_routing=r.get("policy_routing", bool),
        ssh=r.get("ssh", str),
    )


def _address(path: FieldPath, value: Any) -> model.IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ModelError(path, f"'{value}' is not an IPv4 or IPv6 address") from None


def _route(path: FieldPath, data: Any) -> Route:
    r = _Reader(data, path, _ROUTE_KEYS)
    to = r.get("to", str)
    if to is None:
        raise ModelError(r.at("to"), "a route needs 'to' (a prefix or \"default\")")
    if to != "default":
        try:
            ipaddress.ip_network(to, strict=False)
        except ValueError:
            raise ModelError(
                r.at("to"), f"'{to}' is not a prefix such as 10.0.0.0/24 or \"default\""
            ) from None
    via = r.get("via", str)
    return Route(
        to=to,
        via=_address(r.at("via"), via) if via else None,
        dev=r.get("dev", str),
        metric=r.get("metric", int),
    )


def _mptcp(path: FieldPath, data: Any) -> MptcpSettings:
    r = _Reader(data, path, _MPTCP_KEYS)
    limits = _Reader(r.get("limits", dict) or {}, r.at("limits"), _LIMIT_KEYS)
    endpoints = tuple(
        _endpoint((*r.at("endpoints"), i), ed) for i, ed in enumerate(r.get("endpoints", list) or [])
    )
    pm = r.get("path_manager", str) or "kernel"
    if pm not in ("kernel", "userspace"):
        raise ModelError(r.at("path_manager"), f"must be 'kernel' or 'userspace', got '{pm}'")
    enabled = r.get("enabled", bool)
    return MptcpSettings(
        enabled=True if enabled is None else enabled,
        path_manager=cast(PathManager, pm),
        scheduler=r.get("scheduler", str),
        subflows=limits.get("subflows", int),
        add_addr_accepted=limits.get("add_addr_accepted", int),
        endpoints=endpoints,
    )


def _endpoint(path: FieldPath, data: Any) -> Endpoint:
    r = _Reader(data, path, _ENDPOINT_KEYS)
    address = r.get("address", str)
    if address is None:
        raise ModelError(r.at("address"), "an endpoint needs an address")
    flags = r.get("flags", (list, str)) or ["subflow"]
    if isinstance(flags, str):
        flags = [flags]
    return Endpoint(
        address=_address(r.at("address"), address),
        flags=frozenset(str(f) for f in flags),
        dev=r.get("dev", str),
        id=r.get("id", int),
        port=r.get("port", int),
    )


def _direction(r: _Reader, base: Direction) -> Direction:
    rate = r.parse("rate", parse_rate, base.rate_bps)
    return Direction(
        rate_bps=rate,
        delay_s=r.parse("delay", parse_duration, base.delay_s),
        jitter_s=r.parse("jitter", parse_duration, base.jitter_s),
        loss=r.parse("loss", parse_fraction, base.loss),
        queue_packets=_packets_or(r.parse("queue", parse_queue), base.queue_packets),
        reorder=r.parse("reorder", parse_fraction, base.reorder),
    )


def _packets_or(queue: int | Bdp | None, default: int) -> int:
    return queue if isinstance(queue, int) else default  # a Bdp is resolved by _bdp_queue


def _bdp_queue(direction: Direction, own: _Reader, link: _Reader, rtt_s: float, mtu: int) -> Direction:
    """Turn a queue given in BDP units (in this direction's table or the link's) into packets."""
    reader = own if "queue" in own.data else link
    queue = reader.parse("queue", parse_queue)
    if not isinstance(queue, Bdp):
        return direction
    if direction.rate_bps is None:
        raise ModelError(reader.at("queue"), "a queue in BDP units needs a rate on this link direction")
    return replace(direction, queue_packets=queue.packets(direction.rate_bps, rtt_s, mtu + 14))


def _link(index: int, data: Any, next_ifindex: dict[str, int]) -> Link:
    path: FieldPath = ("links", index)
    r = _Reader(data, path, _LINK_KEYS)
    ends = []
    for side in ("a", "b"):
        e = _Reader(r.get(side, dict) or {}, r.at(side), _END_KEYS)
        host = e.get("host", str)
        if host is None:
            raise ModelError(e.at("host"), f"link end '{side}' needs a host")
        ifname = e.get("ifname", str)
        if ifname is None:
            ifname = f"eth{next_ifindex.get(host, 0)}"
        next_ifindex[host] = next_ifindex.get(host, 0) + 1
        addresses = []
        for ai, text in enumerate(e.get("addresses", list) or []):
            if not isinstance(text, str):
                raise ModelError(
                    (*e.at("addresses"), ai),
                    f'expected an address with prefix as a string, e.g. "10.0.1.1/24", got {text!r}'[:160],
                )
            try:
                addresses.append(ipaddress.ip_interface(text))
            except ValueError:
                raise ModelError(
                    (*e.at("addresses"), ai),
                    f"'{text}' is not an address with prefix, e.g. 10.0.1.1/24 or fd00::1/64",
                ) from None
        ends.append(LinkEnd(host=host, ifname=ifname, addresses=tuple(addresses)))
    both = _direction(r, Direction())
    ab = _Reader(r.get("a_to_b", dict) or {}, r.at("a_to_b"), _SHAPE_KEYS)
    ba = _Reader(r.get("b_to_a", dict) or {}, r.at("b_to_a"), _SHAPE_KEYS)
    a_to_b, b_to_a = _direction(ab, both), _direction(ba, both)
    rtt_s, mtu = a_to_b.delay_s + b_to_a.delay_s, r.get("mtu", int, 1500)
    a_to_b, b_to_a = _bdp_queue(a_to_b, ab, r, rtt_s, mtu), _bdp_queue(b_to_a, ba, r, rtt_s, mtu)
    return Link(
        name=r.get("name", str) or f"link{index}",
        a=ends[0],
        b=ends[1],
        a_to_b=a_to_b,
        b_to_a=b_to_a,
        mtu=r.get("mtu", int, 1500),
    )
