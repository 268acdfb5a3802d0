"""`mptcpkit check serve` as a real server: curl with and without `mptcpkit run`, JSON, a headless
chromium, malformed requests, and 500 concurrent slow clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tl_helpers import MPTCPKIT

from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.tools import preload

Start = Callable[..., tuple[subprocess.Popen[bytes], int]]
pytestmark = pytest.mark.needs_root


def curl(*args: str, run: bool = False) -> str:
    argv = ["curl", "-s", "--max-time", "10", *args]
    if run:
        argv = [MPTCPKIT, "run", "--", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout


def test_curl_plain_and_under_run(start_serve: Start) -> None:
    _, port = start_serve()
    url = f"http://127.0.0.1:{port}/"
    assert curl(url) == "You are not using MPTCP.\n"
    assert curl(url, run=True) == "You are using MPTCP.\n"
    head = curl("-I", url, run=True)
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: 21" in head


def test_json_variant(start_serve: Start) -> None:
    _, port = start_serve()
    url = f"http://127.0.0.1:{port}/"
    assert json.loads(curl("-H", "Accept: application/json", url, run=True)) == {
        "mptcp": True,
        "subflows": 1,
        "fallback": False,
        "state": "yes",
    }
    assert json.loads(curl("-H", "Accept: application/json", url)) == {
        "mptcp": False,
        "subflows": 0,
        "fallback": False,
        "state": "no",
    }


def test_ipv6_and_ipv4_on_dual_stack_listener(start_serve: Start) -> None:
    _, port = start_serve(host="::")
    assert curl(f"http://[::1]:{port}/", run=True) == "You are using MPTCP.\n"
    assert curl(f"http://127.0.0.1:{port}/", run=True) == "You are using MPTCP.\n"


def chromium_visit(port: int, env: dict[str, str] | None, screenshot: Path) -> tuple[str, str, list[str]]:
    """Open the page in Debian's headless chromium; returns (verdict, page text, console problems)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args, env=env)
        try:
            page = browser.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            response = page.goto(f"http://127.0.0.1:{port}/")
            assert response is not None and response.status == 200
            assert response.headers["content-type"].startswith("text/html")
            page.wait_for_load_state("networkidle")
            verdict = page.inner_text("#verdict")
            body = page.inner_text("body")
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return verdict, body, problems


def test_headless_chromium_shows_html_page(start_serve: Start, artifacts_dir: Path) -> None:
    _, port = start_serve()
    verdict, body, problems = chromium_visit(port, None, artifacts_dir / "tools-check-serve-chromium.png")
    assert "does not use MPTCP" in verdict  # chromium does not create MPTCP sockets
    assert "Your browser may not support MPTCP while your system may" in body
    assert f"mptcpkit run -- curl http://127.0.0.1:{port}/" in body
    assert problems == []


def test_chromium_under_the_run_shim_is_told_it_uses_mptcp(start_serve: Start, artifacts_dir: Path) -> None:
    _, port = start_serve()
    env = preload.build_env(os.environ, str(preload.find_shim()), debug=False)
    verdict, _, problems = chromium_visit(port, env, artifacts_dir / "tools-check-serve-chromium-mptcp.png")
    assert verdict == "Your browser connected with MPTCP."
    assert problems == []


MALFORMED = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"A" * 40000 + b"\r\n\r\n",
    b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(256)) + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\x00\x01\x02\r\n\r\n",
]


def raw_exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(payload)  # the server may close before reading everything
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def test_malformed_requests_get_4xx_and_server_survives(start_serve: Start) -> None:
    proc, port = start_serve()
    statuses = []
    for payload in MALFORMED:
        answer = raw_exchange(port, payload)
        statuses.append(answer.split(b" ", 2)[1].decode() if answer else "closed")
    assert statuses == ["400", "400", "505", "501", "431", "400", "400"]
    # half-sent request then abrupt close, and an idle connection closed without a byte
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHo")
    socket.create_connection(("127.0.0.1", port)).close()
    assert proc.poll() is None
    assert curl(f"http://127.0.0.1:{port}/", run=True) == "You are using MPTCP.\n"


async def slow_client(port: int, mptcp: bool, pieces: int, pause: float) -> bytes:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP if mptcp else 0)
    # asyncio's sock_connect() resolves with proto=262, which getaddrinfo rejects: connect first.
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    request = b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: slow\r\nConnection: close\r\n\r\n"
    step = -(-len(request) // pieces)
    for i in range(0, len(request), step):
        writer.write(request[i : i + step])
        await writer.drain()
        await asyncio.sleep(pause)
    data = await asyncio.wait_for(reader.read(), 20)
    writer.close()
    return data


async def slow_crowd(port: int) -> tuple[list[bytes], float, bytes]:
    tasks = [asyncio.create_task(slow_client(port, i % 2 == 0, 4, 0.5)) for i in range(500)]
    await asyncio.sleep(0.5)  # the crowd is connected and trickling
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        "curl", "-s", "--max-time", "10", f"http://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE
    )
    quick, _ = await proc.communicate()
    latency = time.monotonic() - t0
    return await asyncio.gather(*tasks), latency, quick


def test_500_concurrent_slow_clients(start_serve: Start) -> None:
    proc, port = start_serve()
    answers, latency, quick = asyncio.run(slow_crowd(port))
    assert quick == b"You are not using MPTCP.\n"
    assert latency < 3.0  # a normal client is served while 500 slow ones trickle
    bodies = [a.split(b"\r\n\r\n", 1)[1] for a in answers]
    assert bodies.count(b"You are using MPTCP.\n") == 250
    assert bodies.count(b"You are not using MPTCP.\n") == 250
    assert proc.poll() is None


def test_slowloris_is_cut_by_head_timeout(start_serve: Start) -> None:
    proc, port = start_serve("--head-timeout", "1", "--idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes the head
        t0 = time.monotonic()
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert 0.5 < time.monotonic() - t0 < 5
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # idle keep-alive is closed
        assert s.recv(4096) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:  # trickling does not extend it
        t0 = time.monotonic()
        s.setblocking(False)
        answer = b""
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, ConnectionResetError):
                s.send(bytes([byte]))
            time.sleep(0.1)
            with contextlib.suppress(BlockingIOError):
                answer += s.recv(4096)
            if answer:
                break
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.monotonic() - t0 < 4
    assert proc.poll() is None


def test_keepalive_and_pipelining(start_serve: Start) -> None:
    _, port = start_serve()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 3
            + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 4 and data.count(b"You are not using MPTCP.") == 4


def test_check_target_against_serve_and_plain_server(start_serve: Start) -> None:
    _, port = start_serve()
    res = subprocess.run(
        [MPTCPKIT, "check", f"http://127.0.0.1:{port}/", "--wait", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 0, res.stderr
    assert "MPTCP end to end with 127.0.0.1 port" in res.stdout and ": yes" in res.stdout
    assert "subflows: 1" in res.stdout and "HTTP: HTTP/1.1 200 OK" in res.stdout
    plain = socket.socket()
    plain.bind(("127.0.0.1", 0))
    plain.listen()
    try:
        res = subprocess.run(
            [MPTCPKIT, "check", f"127.0.0.1:{plain.getsockname()[1]}", "--wait", "0"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        plain.close()
    assert res.returncode == 1 and "no (fallback to TCP)" in res.stdout


def test_client_that_never_reads_is_dropped(start_serve: Start) -> None:
    proc, port = start_serve("--idle-timeout", "1")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    pending = request * 20000  # ~6 MB of answers: far beyond every buffer on the way
    deadline = time.monotonic() + 3
    while pending and time.monotonic() < deadline:
        try:
            pending = pending[s.send(pending) :]
        except BlockingIOError:
            time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            break
    time.sleep(2.5)  # the server paused reading; after --idle-timeout without progress it aborts
    server_side = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert server_side.strip() == "", server_side  # the server's end of the connection is gone
    s.setblocking(True)
    s.settimeout(5)
    received = b""
    ended = False
    try:
        while chunk := s.recv(65536):
            received += chunk
        ended = True
    except ConnectionResetError:
        ended = True
    s.close()
    assert ended
    assert received.count(b"HTTP/1.1 200 OK") < 20000
    assert proc.poll() is None
    assert curl(f"http://127.0.0.1:{port}/") == "You are not using MPTCP.\n"
