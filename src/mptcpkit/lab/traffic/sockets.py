"""Socket plumbing shared by every mode: errors, the watchdog, control frames on a socket, dialling a session.

Blocking sockets and one thread per connection (send/recv release the GIL). The watchdog shuts every socket
down when --timeout expires, so a blocked call returns and the error is reported as `timeout`.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import threading
import time
from typing import Any

from mptcpkit import mptcp_socket as ms
from mptcpkit.lab.traffic import protocol
from mptcpkit.lab.traffic.options import ClientOptions


class EngineError(Exception):
    """A failure reported in the result JSON (kind + message), never as a traceback."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class Watchdog:
    """Shuts registered sockets down at the deadline so blocked calls return."""

    def __init__(self, timeout: float | None) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                shutdown(sock)

    def discard(self, sock: socket.socket) -> None:
        """Forget a closed socket (modes that open thousands of connections)."""
        with self._lock, contextlib.suppress(ValueError):
            self._socks.remove(sock)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.01, self.deadline - time.monotonic())

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                shutdown(s)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def classify(exc: BaseException, watchdog: Watchdog | None = None) -> EngineError:
    """Map a socket exception to a reported error kind."""
    if isinstance(exc, EngineError):
        if watchdog is not None and watchdog.expired and exc.kind in ("reset", "io"):
            return EngineError("timeout", f"timed out ({exc.message})")
        return exc
    if watchdog is not None and watchdog.expired:
        return EngineError("timeout", "timed out (--timeout expired)")
    if isinstance(exc, protocol.ProtocolError):
        return EngineError("protocol", str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return EngineError("refused", f"connection refused: {exc.strerror}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return EngineError("timeout", f"timed out: {exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return EngineError("reset", f"connection reset by peer: {exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return EngineError("unreachable", f"{exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT):
        return EngineError("environment", f"MPTCP not available: {exc.strerror} (is net.mptcp.enabled=1?)")
    if isinstance(exc, OSError):
        return EngineError("io", f"{exc.strerror or exc}")
    return EngineError("internal", f"{type(exc).__name__}: {exc}")


def make_socket(proto: str, family: int, sndbuf: int | None, rcvbuf: int | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, ms.IPPROTO_MPTCP if proto == "mptcp" else 0)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return sock


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def format_addr(addr: tuple[Any, ...]) -> str:
    """`10.0.1.1:5201` or `[fd00::1]:5201`."""
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EngineError("reset", f"peer closed the connection while {what}")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, what: str) -> dict[str, Any]:
    length = protocol.frame_length(recv_exact(sock, protocol.HEADER, what))
    return protocol.decode_body(recv_exact(sock, length, what))


def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(protocol.encode_frame(obj))


def dial(opts: ClientOptions, wd: Watchdog) -> tuple[socket.socket, float]:
    """A connected socket to the server and the time connect() took (seconds)."""
    sock = make_socket(opts.proto, family_of(opts.connect), opts.sndbuf, opts.rcvbuf)
    wd.add(sock)
    if opts.bind:
        sock.bind((opts.bind, 0))
    sock.settimeout(wd.remaining())
    t = time.perf_counter()
    try:
        sock.connect((opts.connect, opts.port))
    except BaseException:
        sock.close()
        wd.discard(sock)
        raise
    dt = time.perf_counter() - t
    sock.settimeout(None)
    return sock, dt


def hello(opts: ClientOptions, session: str, index: int, kind: str) -> dict[str, Any]:
    """The first frame of every session connection: everything the server needs to play its part."""
    return {
        "v": protocol.VERSION,
        "session": session,
        "conn": index,
        "kind": kind,
        "mode": opts.mode,
        "streams": opts.parallel,
        "seed": opts.seed,
        "bytes": opts.bytes,
        "duration": opts.duration,
        "integrity": opts.integrity,
        "interval": opts.interval,
        "rr": list(opts.rr_size),
        "count": opts.count,
        "proto": opts.proto,
        "message_size": opts.message_size,
        "rate": opts.rate,
    }


def handshake(sock: socket.socket, frame: dict[str, Any]) -> dict[str, Any]:
    send_frame(sock, frame)
    reply = recv_frame(sock, "waiting for the server's reply to the hello")
    if not reply.get("ok"):
        raise EngineError("protocol", f"server refused the session: {reply.get('error')}")
    return reply
