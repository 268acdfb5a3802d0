"""`mptcpkit check TARGET`: connect with MPTCP and report what the kernel says about that connection.

Target parsing is pure; the probe opens one MPTCP socket, exchanges some data (an HTTP request for URLs, so
MPTCP options travel on data packets too), waits briefly for extra subflows and reads MPTCP_INFO.
"""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.mptcp_socket import IPPROTO_MPTCP, mptcp_info, subflow_addrs


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    scheme: str | None = None  # "http" / "https" for URLs, None for HOST:PORT
    path: str = "/"


def parse_target(text: str) -> Target:
    """HOST:PORT, [IPv6]:PORT, or http(s)://HOST[:PORT]/PATH."""
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"unsupported URL {text!r}", hint="use http://..., https://... or HOST:PORT")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise UsageError(f"bad port in {text!r}") from exc
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(parts.hostname, port, parts.scheme, path)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        if not sep or not port_text:
            raise UsageError(f"bad target {text!r}", hint="IPv6 form: [2001:db8::1]:443")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host or ":" in host:
            raise UsageError(f"bad target {text!r}", hint="use HOST:PORT, [IPv6]:PORT or a URL")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise UsageError(f"bad port in {text!r}")
    return Target(host, int(port_text))


@dataclass(frozen=True, slots=True)
class CheckResult:
    target: Target
    address: tuple[str, int]
    mptcp: bool
    fallback: bool
    subflows: list[tuple[str, str]] = field(default_factory=list)  # (local, remote)
    http_status: str | None = None
    note: str | None = None


def _http_exchange(sock: socket.socket, target: Target, timeout: float) -> tuple[socket.socket, str | None]:
    """Send one GET, read the status line (and drain a little)."""
    conn: socket.socket = sock
    if target.scheme == "https":
        ctx = ssl.create_default_context()
        conn = ctx.wrap_socket(sock, server_hostname=target.host)
    host = target.host if ":" not in target.host else f"[{target.host}]"
    req = (
        f"GET {target.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mptcpkit-check\r\n"
        "Accept: */*\r\nConnection: close\r\n\r\n"
    )
    conn.sendall(req.encode())
    conn.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while b"\r\n" not in data and time.monotonic() < deadline:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    status = data.split(b"\r\n", 1)[0].decode("latin-1") if data else None
    return conn, status


def check_target(text: str, *, timeout: float = 5.0, wait: float = 0.5) -> CheckResult:
    target = parse_target(text)
    try:
        infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {target.host}: {exc.strerror}") from exc
    last: OSError | None = None
    for family, _, _, _, addr in infos:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create an MPTCP socket: {exc.strerror}",
                hint="run `mptcpkit check` to diagnose this system",
            ) from exc
        sock.settimeout(timeout)
        try:
            sock.connect(addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return _probe(sock, target, (str(addr[0]), int(addr[1])), timeout, wait)
    raise EnvironmentProblem(f"cannot connect to {text}: {last.strerror if last else 'no address'}")


def _probe(
    sock: socket.socket, target: Target, address: tuple[str, int], timeout: float, wait: float
) -> CheckResult:
    status = None
    note = None
    conn = sock
    try:
        if target.scheme is not None:
            try:
                conn, status = _http_exchange(sock, target, timeout)
            except (OSError, ssl.SSLError) as exc:
                note = f"HTTP exchange failed: {exc}"
        if wait > 0:
            time.sleep(wait)
        info = mptcp_info(sock)
        addrs = subflow_addrs(sock) if info is not None else []
    finally:
        conn.close()
    pairs = [(_hostport(*a.local), _hostport(*a.remote)) for a in addrs]
    if info is None or info.fallback:
        return CheckResult(target, address, mptcp=False, fallback=True, http_status=status, note=note)
    return CheckResult(
        target, address, mptcp=True, fallback=False, subflows=pairs, http_status=status, note=note
    )


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def format_result(r: CheckResult) -> str:
    where = f"{r.address[0]} port {r.address[1]}"
    lines = []
    if r.mptcp:
        lines.append(f"MPTCP end to end with {where}: yes")
        lines.append(f"subflows: {len(r.subflows)}")
        lines.extend(f"  {local} -> {remote}" for local, remote in r.subflows)
    else:
        lines.append(f"MPTCP end to end with {where}: no (fallback to TCP)")
        lines.append("the server, or a middlebox on the path, does not support MPTCP")
    if r.http_status:
        lines.append(f"HTTP: {r.http_status}")
    if r.note:
        lines.append(r.note)
    return "\n".join(lines)
