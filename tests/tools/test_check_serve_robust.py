"""`check serve` under hostile and awkward clients: no asyncio traceback, ever, and it keeps answering.

The server runs in this process (a real listening socket, real client sockets) so that asyncio's
exception handler can be watched directly: every "Exception in callback" asyncio would log is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from mptcpkit.tools.checkserve import CheckProtocol, CheckServer, ServeConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fuzz_targets_tools import Case, hostile_streams, pieces, serve_session

pytestmark = pytest.mark.needs_root  # MPTCP listening socket

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Watched:
    """A CheckServer in the running loop, with asyncio's exception handler recording every report."""

    def __init__(self, config: ServeConfig, tune: Callable[[CheckProtocol], None] | None = None) -> None:
        self.server = CheckServer(config)
        self.reports: list[str] = []
        self.port = 0
        if tune is not None:
            opened = self.server.connection_opened

            def tuned(proto: CheckProtocol) -> bool:
                tune(proto)
                return opened(proto)

            self.server.connection_opened = tuned  # type: ignore[method-assign]

    def record(self, _loop: Any, context: dict[str, Any]) -> None:
        self.reports.append(f"{context.get('message')}: {context.get('exception')!r}")


@contextlib.asynccontextmanager
async def watched(
    config: ServeConfig, tune: Callable[[CheckProtocol], None] | None = None
) -> AsyncIterator[Watched]:
    w = Watched(config, tune)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(w.record)
    _, w.port = await w.server.start()
    try:
        yield w
    finally:
        await w.server.close()
        await asyncio.sleep(0.05)  # let close callbacks run while the handler still watches


async def exchange(port: int, payload: bytes, *, rcvbuf: int | None = None, delay: float = 0.0) -> bytes:
    loop = asyncio.get_running_loop()
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    try:
        await loop.sock_connect(s, ("127.0.0.1", port))
        with contextlib.suppress(ConnectionError):
            await loop.sock_sendall(s, payload)
        if delay:
            await asyncio.sleep(delay)
        data = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await asyncio.wait_for(loop.sock_recv(s, 1 << 20), 10):
                data += chunk
        return data
    finally:
        s.close()


def small_buffers(proto: CheckProtocol) -> None:
    """Tiny kernel and transport buffers: every pipelined burst pauses and resumes writing."""
    proto.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert proto.transport is not None
    proto.transport.set_write_buffer_limits(high=4096)


def test_pipelined_bursts_ending_with_close_log_no_traceback() -> None:
    """Issue 15: `_call_connection_lost` ran twice when the close came from inside resume_writing().

    Before the fix this logged an AttributeError for a large share of these bursts.
    """

    async def main() -> list[str]:
        async with watched(ServeConfig(host="127.0.0.1", port=0), small_buffers) as w:
            for n in range(1, 160):
                answer = await exchange(w.port, GET * n + CLOSE, rcvbuf=4096, delay=0.005)
                assert answer.count(b"HTTP/1.1 200 OK") == n + 1
            return w.reports

    assert asyncio.run(main()) == []


def test_default_buffers_long_bursts() -> None:
    async def main() -> list[str]:
        async with watched(ServeConfig(host="127.0.0.1", port=0)) as w:
            for n in (500, 3000, 12000):
                answer = await exchange(w.port, GET * n + CLOSE, delay=0.01)
                assert answer.count(b"HTTP/1.1 200 OK") == n + 1
            return w.reports

    assert asyncio.run(main()) == []


# ---- hypothesis: hostile request streams (strategies shared with benchmarks/fuzz_http.py) ------------


async def hostile_case(port: int, case: Case) -> None:
    """Send the stream in pieces (cut points), read a little, close abruptly or politely."""
    loop = asyncio.get_running_loop()
    s = socket.socket()
    s.setblocking(False)
    try:
        await loop.sock_connect(s, ("127.0.0.1", port))
        for piece in pieces(case):
            with contextlib.suppress(ConnectionError):
                await loop.sock_sendall(s, piece)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(loop.sock_recv(s, 65536), 0.2)
        if len(case[1]) % 2:  # an abortive close (RST) half of the time
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        s.close()


def run_hostile_cases(cases: int) -> None:
    """Drive `cases` hypothesis cases against one server; then a normal client must still be served."""
    reports: list[str] = []

    async def serve_and_check(w: Watched) -> None:
        @settings(
            max_examples=cases,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(hostile_streams())
        def one(case: Case) -> None:
            fut = asyncio.run_coroutine_threadsafe(hostile_case(w.port, case), loop)
            fut.result(timeout=30)

        await asyncio.to_thread(one)
        answer = await exchange(w.port, CLOSE)
        assert answer.endswith(b"You are not using MPTCP.\n")
        reports.extend(w.reports)

    async def main() -> None:
        nonlocal loop
        loop = asyncio.get_running_loop()
        async with watched(ServeConfig(host="127.0.0.1", port=0, head_timeout=1, idle_timeout=1)) as w:
            await serve_and_check(w)

    loop: asyncio.AbstractEventLoop
    asyncio.run(main())
    assert reports == []


def test_hypothesis_hostile_requests() -> None:
    run_hostile_cases(150)


async def hold_open(port: int, count: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        if i % 3 == 1:
            await loop.sock_sendall(s, b"GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"h" * 12000)  # unfinished
        elif i % 3 == 2:
            await loop.sock_sendall(s, b"GET /files/1000M HTTP/1.1\r\nHost: x\r\n\r\n")  # never reads it
        socks.append(s)
    return socks


def test_1000_connections_held_open_and_huge_heads() -> None:
    """1,000 concurrent clients (idle, half a huge head, a 1000M download nobody reads), then normal ones."""

    async def main() -> list[str]:
        async with watched(ServeConfig(host="127.0.0.1", port=0)) as w:
            socks = await hold_open(w.port, 1000)
            try:
                for _ in range(200):  # accepted at the server's pace (a loaded machine is slow)
                    if len(w.server.connections) >= 1000:
                        break
                    await asyncio.sleep(0.05)
                assert len(w.server.connections) == 1000
                answer = await exchange(
                    w.port, CLOSE
                )  # answered while the crowd is held (latency: benchmark)
                assert answer.endswith(b"You are not using MPTCP.\n")
                huge = await exchange(
                    w.port, b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"A" * 70000 + b"\r\n\r\n"
                )
                assert huge.startswith(b"HTTP/1.1 431")
                many = await exchange(w.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 200 + b"\r\n")
                assert many.startswith(b"HTTP/1.1 431")
            finally:
                for s in socks:
                    s.close()
            for _ in range(200):
                if not w.server.connections:
                    break
                await asyncio.sleep(0.05)
            assert len(w.server.connections) == 0  # every closed client was noticed and forgotten
            return w.reports

    assert asyncio.run(main()) == []


def test_hypothesis_against_the_real_server_process() -> None:
    """The same cases against `mptcpkit check serve` itself: its stderr must stay free of tracebacks."""
    counts = {"accepted": 0, "refused": 0}
    with serve_session() as check:

        @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(hostile_streams())
        def one(case: Case) -> None:
            counts[check(case)] += 1

        one()
    assert counts["accepted"] > 0 and counts["refused"] > 0
