"""`mptcpkit check serve`: the asyncio layer around httpparse (parsing) and checkpage (answers).

One asyncio.Protocol per connection. Memory and time per connection are bounded: the parser caps head and
body sizes, a client gets `head_timeout` seconds to send a complete request and `idle_timeout` seconds
between keep-alive requests, reading pauses while the client does not read our answers, and beyond
`max_connections` concurrent clients new ones are closed at once. Downloads (`/files/NM`) are generated
chunk by chunk as the client reads them: while a download runs the transport's high-water mark is 0 (one
chunk with TLS), so at most about one chunk (64 KiB) per connection waits in user space.

Re-entrancy: asyncio's selector transport calls `resume_writing()` from inside its write-ready handler and
then, if the buffer is empty and the transport is closing, finishes the close itself. Closing the transport
from inside `resume_writing()` made it run `_call_connection_lost` twice (a logged AttributeError on a None
socket). So `resume_writing()` only schedules the work (`call_soon`); it never writes or closes directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mptcpkit.errors import EnvironmentProblem, UsageError
from mptcpkit.mptcp_socket import IPPROTO_MPTCP, mptcp_info
from mptcpkit.tools.checkpage import ConnInfo, Response, error_response, render, respond
from mptcpkit.tools.httpparse import CLOSED, NEED_DATA, RemoteProtocolError, Request, RequestParser


@dataclass(frozen=True, slots=True)
class ServeConfig:
    host: str = "::"
    port: int = 8080
    head_timeout: float = 10.0
    idle_timeout: float = 15.0
    max_connections: int = 10000
    backlog: int = 4096
    cert: Path | None = None  # PEM certificate chain: serve HTTPS
    key: Path | None = None  # PEM private key (None: it is in the `cert` file)


CHUNK = 64 * 1024
PUMP_BUDGET = 4  # chunks per download per event-loop turn
NOTSENT_LOWAT = 128 * 1024
_PATTERN = bytes(
    (i * 131 + 17) & 0xFF for i in range(CHUNK)
)  # downloads: not all zeros, not compressible away


def tls_context(cert: Path, key: Path | None) -> ssl.SSLContext:
    """A server TLS context from PEM files; a bad or missing file is a usage error, not a traceback."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(cert), str(key) if key is not None else None)
    except FileNotFoundError as exc:
        raise UsageError(f"{exc.filename or cert}: no such file") from exc
    except PermissionError as exc:
        raise UsageError(f"{exc.filename or cert}: permission denied") from exc
    except (ssl.SSLError, OSError) as exc:
        what = f"{cert}" + (f" / {key}" if key is not None else "")
        raise UsageError(
            f"cannot load the TLS certificate and key from {what}: {exc}",
            hint="--cert takes a PEM certificate (chain), --key its PEM private key",
        ) from exc
    return ctx


def conn_info(sock: Any) -> ConnInfo:
    """Ask the connection's own socket whether it is MPTCP (a TCP client gives a plain TCP socket).

    When the socket cannot be asked (an unexpected error), the answer is "maybe", never a guess.
    """
    if sock is None:
        return ConnInfo(mptcp=False, fallback=False, subflows=0, error="no socket for this connection")
    try:
        proto = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)
        if proto != IPPROTO_MPTCP:
            return ConnInfo(mptcp=False, fallback=False, subflows=0)
        info = mptcp_info(cast(socket.socket, sock))
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ConnInfo(mptcp=False, fallback=False, subflows=0, error=f"cannot read the socket: {reason}")
    if info is None or info.fallback:
        return ConnInfo(mptcp=False, fallback=True, subflows=0)
    subflows = info.subflows_total or info.subflows + 1
    return ConnInfo(mptcp=True, fallback=False, subflows=subflows)


class CheckProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: CheckServer) -> None:
        self.server = server
        self.parser = RequestParser()
        self.transport: asyncio.Transport | None = None
        self.sock: Any = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_kind: str | None = (
            None  # "head" or "idle": deadlines are not pushed back by trickled bytes
        )
        self.closing = False
        self.paused = False
        self.stream_left = 0  # bytes of a download still to generate
        self.stream_keep_alive = True
        self.scheduled = False  # a _resume is queued with call_soon
        self.abort_handle: asyncio.TimerHandle | None = None

    # -- asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.sock = transport.get_extra_info("socket")
        if self.sock is not None:
            # Unsent data in the kernel capped per connection (in-flight data keeps autotuning): without it
            # each download nobody reads pins up to tcp_wmem's max (4 MiB) of kernel memory; a few hundred
            # push the whole host into TCP memory pressure, where every connection stalls on retransmits.
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        if not self.server.connection_opened(self):
            self.closing = True
            self.transport.abort()
            return
        self._arm(self.server.config.idle_timeout, "idle")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.abort_handle is not None:
            self.abort_handle.cancel()
        self.closing = True
        self.transport = None  # finished: no timer or scheduled call may touch it any more
        self.server.connection_closed(self)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        self._process()

    def eof_received(self) -> bool:
        self.parser.feed(b"")
        self._process()
        return False

    def pause_writing(self) -> None:
        # The client does not read: stop reading its requests until it catches up.
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self._arm(self.server.config.idle_timeout, "write")

    def resume_writing(self) -> None:
        # Called from inside the transport's write handler: never write or close here (see module doc).
        self.paused = False
        self._schedule_resume()

    def _schedule_resume(self) -> None:
        if not self.scheduled and not self.closing:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._resume)

    def _resume(self) -> None:
        self.scheduled = False
        if self.paused or self.closing or self.transport is None or self.transport.is_closing():
            return
        self._disarm()
        if self.stream_left:
            self._pump()
        if not self.paused and not self.closing and not self.stream_left:
            self.transport.resume_reading()
            self._process()

    # -- request handling
    def _process(self) -> None:
        assert self.transport is not None
        while not self.closing and not self.paused and not self.stream_left:
            try:
                event = self.parser.next_event()
            except RemoteProtocolError as exc:
                self._send_error(exc.status, str(exc))
                return
            if event is NEED_DATA:
                kind = "head" if self.parser.in_request else "idle"
                if kind != self.timer_kind:
                    cfg = self.server.config
                    self._arm(cfg.head_timeout if kind == "head" else cfg.idle_timeout, kind)
                return
            if event is CLOSED:
                self._close()
                return
            assert isinstance(event, Request)
            self._answer(event)

    def _answer(self, request: Request) -> None:
        assert self.transport is not None
        keep_alive = request.keep_alive
        response = respond(request, conn_info(self.sock))
        self.server.requests += 1
        self.timer_kind = None  # the next request gets a fresh deadline
        head_only = request.method == "HEAD"
        self.transport.write(render(response, head_only=head_only, keep_alive=keep_alive))
        if response.stream_bytes and not head_only:
            self._start_stream(response, keep_alive)
        elif not keep_alive:
            self._close()

    def _start_stream(self, response: Response, keep_alive: bool) -> None:
        self.stream_left = response.stream_bytes
        self.stream_keep_alive = keep_alive
        assert self.transport is not None
        self._disarm()  # the request's head/idle deadline is over; a stalled download has its own
        self.transport.pause_reading()  # no new request until the body is out
        # Plain TCP: pause as soon as the kernel does not take a whole chunk. TLS: the TLS transport only
        # re-checks its limit when the socket transport below it resumes, and it flushes to that socket
        # transport at once, so a limit of 0 would pause it for ever; one chunk is its safe minimum.
        self.transport.set_write_buffer_limits(high=0 if self.server.tls is None else CHUNK)
        self._pump()

    def _pump(self) -> None:
        """Write download chunks until the transport asks us to pause, the body is complete, or this turn's
        budget is spent (then the rest waits behind other connections' work: one download whose client
        reads fast must not hold the event loop while the kernel takes megabytes)."""
        assert self.transport is not None
        view = memoryview(_PATTERN)
        budget = PUMP_BUDGET
        while self.stream_left and not self.paused and not self.closing:
            if self.transport.is_closing():
                return
            if budget == 0:
                self._schedule_resume()
                return
            budget -= 1
            n = min(self.stream_left, CHUNK)
            self.stream_left -= n
            self.transport.write(view[:n])
        if self.stream_left:
            return
        self.transport.set_write_buffer_limits()  # back to asyncio's defaults
        if not self.stream_keep_alive:
            self._close()
        elif not self.paused and not self.closing:
            self.transport.resume_reading()

    def _send_error(self, status: int, message: str) -> None:
        assert self.transport is not None
        self.server.errors += 1
        if not self.transport.is_closing():
            self.transport.write(render(error_response(status, message), head_only=False, keep_alive=False))
        self._close()

    def _close(self) -> None:
        self.closing = True
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()  # flushes what is buffered, then closes
            if self.transport.get_write_buffer_size():
                # A client that reads nothing cannot hold the connection: abort after a grace period.
                self.abort_handle = asyncio.get_running_loop().call_later(5.0, self._abort)

    # -- timeouts
    def _arm(self, delay: float, kind: str) -> None:
        self._disarm()
        self.timer = asyncio.get_running_loop().call_later(delay, self._timed_out)
        self.timer_kind = kind

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.timer_kind = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is None or (self.transport.is_closing() and not self.closing):
            return
        if self.timer_kind == "write" or self.closing:  # the client stopped reading our answers
            self.transport.abort()
        elif self.parser.in_request:
            self._send_error(408, "request timeout")
        else:
            self._close()
        self.server.timeouts += 1

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class CheckServer:
    """Listening socket + connection bookkeeping."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.connections: set[CheckProtocol] = set()
        self.requests = 0
        self.errors = 0
        self.timeouts = 0
        self.server: asyncio.Server | None = None
        self.sock: socket.socket | None = None
        self.refused = 0
        self.tls = tls_context(config.cert, config.key) if config.cert is not None else None

    def connection_opened(self, proto: CheckProtocol) -> bool:
        """Register a connection; False (refuse it) when `max_connections` are already being served."""
        if len(self.connections) >= self.config.max_connections:
            self.refused += 1
            return False
        self.connections.add(proto)
        return True

    def connection_closed(self, proto: CheckProtocol) -> None:
        self.connections.discard(proto)

    async def start(self) -> tuple[str, int]:
        """Open the MPTCP listening socket and start serving; returns the bound address."""
        raise_nofile_limit()
        self.sock = listen_socket(self.config.host, self.config.port, self.config.backlog)
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: CheckProtocol(self), sock=self.sock, backlog=self.config.backlog, ssl=self.tls
        )
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for proto in list(self.connections):
            if proto.transport is not None:
                proto.transport.abort()
        if self.sock is not None:
            self.sock.close()


def raise_nofile_limit() -> None:
    """Many concurrent clients need many descriptors: raise the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """An MPTCP listening socket (it accepts plain TCP clients too); IPv6 `::` also takes IPv4."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if host == "::" and not socket.has_ipv6:
        family, host = socket.AF_INET, "0.0.0.0"
    try:
        sock = socket.socket(family, socket.SOCK_STREAM, IPPROTO_MPTCP)
    except OSError as exc:
        if exc.errno == errno.EAFNOSUPPORT and host == "::":  # IPv6 disabled: serve IPv4 only
            return listen_socket("0.0.0.0", port, backlog)
        if exc.errno in (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT, errno.EINVAL):
            raise EnvironmentProblem(
                f"cannot create an MPTCP socket: {exc.strerror}",
                hint="enable MPTCP: sysctl -w net.mptcp.enabled=1 (kernel >= 5.6 with CONFIG_MPTCP); "
                "`mptcpkit check` diagnoses the system",
            ) from exc
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise EnvironmentProblem(f"cannot listen on [{host}]:{port}: {exc.strerror}") from exc
    return sock


async def serve_forever(config: ServeConfig, announce: Any = print) -> None:
    """Run until SIGINT/SIGTERM."""
    server = CheckServer(config)
    host, port = await server.start()
    scheme = "HTTPS" if config.cert is not None else "HTTP"
    announce(f"mptcpkit check serve: {scheme}, listening with MPTCP on [{host}]:{port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
