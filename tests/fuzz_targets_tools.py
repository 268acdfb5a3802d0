"""Hostile HTTP for `mptcpkit check serve`: hypothesis strategies and a session against the real server.

Used by tests/tools/test_check_serve_robust.py (in-process server, few cases), by benchmarks/fuzz_http.py
(>= 1,000 cases against `mptcpkit check serve` as a subprocess) and, when tests/fuzz_targets.py exists, by
benchmarks/fuzz.py through its registry (target `check-serve-http`).

A case is a stream of request-ish messages sent in pieces (cut points), read briefly, then closed politely or
with a RST. The session fails when the server logs a traceback or an asyncio "Exception in callback", exits,
or stops answering a normal request at the end.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

MPTCPKIT = str(Path(sys.executable).with_name("mptcpkit"))
Case = tuple[list[bytes], list[int]]

_token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)
_header = st.one_of(
    st.tuples(_token, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)).map(
        lambda t: f"{t[0]}: {t[1]}".encode()
    ),
    st.sampled_from([b"Accept: */*", b"User-Agent: curl/8.5.0", b"Accept: application/json"]),
    st.binary(max_size=60),
    st.sampled_from(
        [
            b"Connection: close",
            b"Connection: keep-alive",
            b"Content-Length: 5",
            b"Content-Length: 99999999",
            b"Content-Length: -1",
            b"Transfer-Encoding: chunked",
            b"Host: y",
            b" folded",
            b"Accept: application/json",
            b"Accept: text/html",
            b"User-Agent: Mozilla/5.0",
            b"X: " + b"A" * 20000,
        ]
    ),
)
_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"HEAD / HTTP/1.1",
        b"GET /files/1M HTTP/1.1",
        b"HEAD /files/1000M HTTP/1.1",
        b"GET /files/ HTTP/1.1",
        b"GET /nope HTTP/1.1",
        b"POST / HTTP/1.1",
        b"GET / HTTP/1.0",
        b"GET / HTTP/2.0",
        b"GET http://x/files/ HTTP/1.1",
        b"GET /../../etc/passwd HTTP/1.1",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
    ]
)
_request_line = st.one_of(_LINES, _LINES, st.binary(max_size=80))  # 2:1 for plausible lines
_message = st.builds(
    lambda line, host, headers, end, body: (
        line + b"\r\n" + host + b"".join(h + b"\r\n" for h in headers) + end + body
    ),
    _request_line,
    st.sampled_from([b"Host: x\r\n", b"Host: x\r\n", b"", b"Host: x\r\nHost: y\r\n"]),
    st.lists(_header, max_size=4),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b"", b"\r\n\r\n"]),
    st.one_of(st.just(b""), st.binary(max_size=20)),
)


def hostile_streams() -> st.SearchStrategy[Case]:
    """(messages, cut points): what one client sends, and where its writes are split."""
    return st.tuples(st.lists(_message, min_size=1, max_size=5), st.lists(st.integers(1, 4096), max_size=4))


def pieces(case: Case) -> list[bytes]:
    messages, cuts = case
    payload = b"".join(messages)
    out, start = [], 0
    for cut in [*sorted(cuts), len(payload)]:
        if cut > start:
            out.append(payload[start:cut])
            start = cut
    return out


def play(port: int, case: Case, *, read_for: float = 0.2) -> bytes:
    """One hostile client, blocking sockets: send the pieces, read what comes within `read_for`, close."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    answer = b""
    try:
        with contextlib.suppress(ConnectionError, TimeoutError):
            for piece in pieces(case):
                s.sendall(piece)
        s.settimeout(read_for)
        with contextlib.suppress(ConnectionError, TimeoutError, OSError):
            while len(answer) < 1 << 20 and (chunk := s.recv(65536)):
                answer += chunk
        if len(case[1]) % 2:  # an abortive close (RST) half of the time
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        s.close()
    return answer


LOGGED_PROBLEM = re.compile(r"Traceback|Exception in callback|Error on transport|Fatal error")


def start_server(*extra: str) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [MPTCPKIT, "check", "serve", "--host", "127.0.0.1", "--port", "0", *extra],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline().decode()
    m = re.search(r":(\d+)$", line.strip())
    if m is None:
        proc.kill()
        raise AssertionError(f"check serve did not start: {line!r}")
    return proc, int(m.group(1))


def stop_server(proc: subprocess.Popen[bytes]) -> str:
    """Stop the server; returns everything it logged after its start line."""
    proc.terminate()
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err.decode(errors="replace")


def normal_answer(port: int) -> bytes:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        return data
    finally:
        s.close()


@contextlib.contextmanager
def serve_session(*extra: str) -> Iterator[Callable[[Any], str]]:
    """A real `mptcpkit check serve`; check(case) -> "accepted" (2xx answer) or "refused" (error/closed)."""
    proc, port = start_server("--head-timeout", "1", "--idle-timeout", "1", *extra)
    try:

        def check(case: Any) -> str:
            answer = play(port, case)
            assert proc.poll() is None, "check serve exited"
            return "accepted" if answer.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")) else "refused"

        yield check
        assert normal_answer(port).endswith(b"You are not using MPTCP.\n"), "stopped answering"
    finally:
        log = stop_server(proc)
    problem = LOGGED_PROBLEM.search(log)
    assert problem is None, (
        f"check serve logged: {log[max(0, problem.start() - 200) : problem.start() + 800]}"
    )


with contextlib.suppress(ImportError):  # tests/fuzz_targets.py (benchmarks/fuzz.py's registry), if present
    from fuzz_targets import Target, register

    register(Target("check-serve-http", hostile_streams, serve_session, ci_cases=40))


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
