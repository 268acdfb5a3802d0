"""check.mptcp.dev parity of `check serve` with real clients: curl, wget, Python's urllib and chromium;
404s, /files/ downloads streamed on the fly, HTTPS with given certificate files, the "maybe" state."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from tl_helpers import MPTCPKIT

from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.tools import checkserve

Start = Callable[..., tuple[subprocess.Popen[bytes], int]]
pytestmark = pytest.mark.needs_root
MIB = 1 << 20


def run(*argv: str, mptcp: bool = False, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    cmd = [MPTCPKIT, "run", "--", *argv] if mptcp else list(argv)
    return subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)


def expected_bytes(size: int) -> bytes:
    whole, part = divmod(size, len(checkserve._PATTERN))
    return checkserve._PATTERN * whole + checkserve._PATTERN[:part]


def test_non_browser_clients_get_plain_text(start_serve: Start) -> None:
    _, port = start_serve()
    url = f"http://127.0.0.1:{port}/"
    assert run("wget", "-qO-", url).stdout == b"You are not using MPTCP.\n"
    assert run("wget", "-qO-", url, mptcp=True).stdout == b"You are using MPTCP.\n"
    assert run("curl", "-s", url, mptcp=True).stdout == b"You are using MPTCP.\n"
    with urllib.request.urlopen(url, timeout=10) as resp:  # Python-urllib/3.x
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert resp.read() == b"You are not using MPTCP.\n"
    browserish = run("curl", "-s", "-A", "Mozilla/5.0 (X11; Linux x86_64)", url).stdout.decode()
    assert browserish.startswith("<!DOCTYPE html>") and 'id="verdict"' in browserish


def test_unknown_path_is_404_for_curl_and_wget(start_serve: Start) -> None:
    _, port = start_serve()
    code = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/nope").stdout
    assert code == b"404"
    wget = run("wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/files/2000M")
    assert wget.returncode == 8  # wget: "server issued an error response"


def test_files_listing_and_downloads_with_curl_and_wget(start_serve: Start, tmp_path: Path) -> None:
    _, port = start_serve()
    base = f"http://127.0.0.1:{port}/files/"
    assert run("curl", "-s", base).stdout.split() == [
        b"/files/1M",
        b"/files/10M",
        b"/files/100M",
        b"/files/1000M",
    ]
    out = tmp_path / "10M"
    res = run("curl", "-s", "-o", str(out), base + "10M", mptcp=True)
    assert res.returncode == 0 and out.stat().st_size == 10 * MIB
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(expected_bytes(10 * MIB)).digest()
    res = run("wget", "-q", "-P", str(tmp_path / "w"), base + "1M", mptcp=True)
    assert res.returncode == 0 and (tmp_path / "w" / "1M").read_bytes() == expected_bytes(MIB)
    head = run("curl", "-sI", base + "1000M").stdout.decode()
    assert "Content-Length: 1048576000" in head and "application/octet-stream" in head


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_1000M_download_is_streamed_not_held(start_serve: Start) -> None:
    """A 1000 MiB download over MPTCP: the server's memory stays flat, keep-alive works after it."""
    proc, port = start_serve()
    before = rss_kib(proc.pid)
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(rss_kib(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        url = f"http://127.0.0.1:{port}/files/1000M"
        res = run(
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{http_code} %{num_connects}\n",
            url,
            url[: -len("files/1000M")],
            mptcp=True,
            timeout=240,
        )
    finally:
        done.set()
        sampler.join()
    assert res.stdout.decode().split() == ["1048576000", "200", "1", "21", "200", "0"]  # 2nd: same conn
    assert max(peak) - before < 30 * 1024, (before, max(peak))  # a few chunks, not 1000 MiB
    assert proc.poll() is None


def test_slow_download_reader_and_abort_mid_download(start_serve: Start) -> None:
    proc, port = start_serve("--idle-timeout", "1")
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /files/100M HTTP/1.1\r\nHost: x\r\n\r\n")
    got = 0
    while got < 2 * MIB:
        got += len(s.recv(65536))
    s.close()  # abort mid-download
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /files/1000M HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read: cut after --idle-timeout
    time.sleep(2.5)
    assert run("curl", "-s", f"http://127.0.0.1:{port}/").stdout == b"You are not using MPTCP.\n"
    s.close()
    assert proc.poll() is None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_with_given_certificate_files(start_serve: Start, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    _, port = start_serve("--cert", str(cert), "--key", str(key))
    url = f"https://127.0.0.1:{port}/"
    assert run("curl", "-s", "--cacert", str(cert), url, mptcp=True).stdout == b"You are using MPTCP.\n"
    assert run("curl", "-s", "--cacert", str(cert), url).stdout == b"You are not using MPTCP.\n"
    wget = run("wget", "-qO-", f"--ca-certificate={cert}", url, mptcp=True)
    assert wget.stdout == b"You are using MPTCP.\n"
    size = run(
        "curl", "-s", "--cacert", str(cert), "-o", "/dev/null", "-w", "%{size_download}", url + "files/10M"
    )
    assert size.stdout == str(10 * MIB).encode()
    check = subprocess.run(
        [MPTCPKIT, "check", f"127.0.0.1:{port}", "--wait", "0"], capture_output=True, timeout=30
    )
    assert check.returncode == 0  # the TLS listener is an MPTCP socket too


def test_https_chromium_gets_the_html_page(start_serve: Start, certificate: tuple[Path, Path]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("Debian chromium not installed")
    cert, key = certificate
    _, port = start_serve("--cert", str(cert), "--key", str(key))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(ignore_https_errors=True)
            response = page.goto(f"https://127.0.0.1:{port}/")
            assert response is not None and response.headers["content-type"].startswith("text/html")
            assert "does not use MPTCP" in page.inner_text("#verdict")
            page.click("text=/files/")
            assert page.url.endswith("/files/") and "1000M" in page.inner_text("body")
            missing = page.goto(f"https://127.0.0.1:{port}/missing")
            assert missing is not None and missing.status == 404
        finally:
            browser.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cert", "/nonexistent/cert.pem"], "/nonexistent/cert.pem: no such file"),
        (["--key", "/tmp/k.pem"], "--key needs --cert"),
        (["--cert", "/etc/hostname"], "cannot load the TLS certificate"),
        (["--port", "70000"], "not a TCP port"),
    ],
)
def test_bad_tls_and_port_options_exit_2(args: list[str], message: str) -> None:
    res = subprocess.run([MPTCPKIT, "check", "serve", *args], capture_output=True, text=True, timeout=30)
    assert res.returncode == 2 and message in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_maybe_state_from_a_socket_that_cannot_be_asked() -> None:
    """A real MPTCP socket whose state cannot be read (closed under us): "maybe", not a guess."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
    dup = socket.socket(fileno=os.dup(s.fileno()))
    s.close()
    dup.close()
    info = checkserve.conn_info(dup)
    assert info.state == "maybe" and info.error is not None and "cannot read the socket" in info.error
    assert checkserve.conn_info(None).state == "maybe"


def test_unread_downloads_pin_little_kernel_memory(start_serve: Start) -> None:
    """TCP_NOTSENT_LOWAT: a download nobody reads queues ~100 KiB in the kernel, not tcp_wmem's 4 MiB."""
    proc, port = start_serve()
    socks = []
    try:
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /files/1000M HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(s)
        time.sleep(1.5)
        out = subprocess.run(
            ["ss", "-Htnm", "state", "established", f"( sport = :{port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        queued = [int(w) for w in re.findall(r"\bw(\d+)", out)]
        assert len(queued) == 10, out
        assert max(queued) < 512 * 1024, queued  # was 3.7 MiB each before
    finally:
        for s in socks:
            s.close()
    assert proc.poll() is None


def test_hostile_bytes_on_the_tls_port_log_nothing(certificate: tuple[Path, Path]) -> None:
    """Plain HTTP, truncated or garbage handshakes, RSTs and hypothesis streams on the HTTPS listener."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hypothesis import HealthCheck, given, settings

    from fuzz_targets_tools import LOGGED_PROBLEM, hostile_streams, play, start_server, stop_server

    cert, key = certificate
    proc, port = start_server(
        "--cert", str(cert), "--key", str(key), "--head-timeout", "1", "--idle-timeout", "1"
    )
    try:
        play(port, ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], []))
        play(port, ([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 50], [1]))

        @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(hostile_streams())
        def one(case: tuple[list[bytes], list[int]]) -> None:
            play(port, case, read_for=0.05)
            assert proc.poll() is None

        one()
        ok = run("curl", "-s", "--cacert", str(cert), f"https://127.0.0.1:{port}/").stdout
        assert ok == b"You are not using MPTCP.\n"
    finally:
        log = stop_server(proc)
    assert LOGGED_PROBLEM.search(log) is None, log[:2000]
