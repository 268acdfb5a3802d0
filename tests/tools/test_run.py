"""`mptcpkit run`: real curl and a real Python client become MPTCP, as the server's accepted socket shows."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tl_helpers import MPTCPKIT, stop

from mptcpkit.errors import EnvironmentProblem
from mptcpkit.tools import preload

pytestmark = pytest.mark.needs_root

# One JSON line per accepted connection, computed from the accepted socket itself.
SERVER = r"""
import json, socket, sys
from mptcpkit.mptcp_socket import IPPROTO_MPTCP, mptcp_info
ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", 8000)); ls.listen(16)
print("ready", flush=True)
while True:
    c, peer = ls.accept()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    info = mptcp_info(c) if c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == IPPROTO_MPTCP else None
    print(json.dumps({"proto": c.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL),
                      "mptcp": info is not None and not info.fallback, "peer": peer[0]}), flush=True)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
    c.close()
"""

CLIENT = r"""
import socket
s = socket.create_connection(("10.0.1.2", 8000))
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode())
"""


@pytest.fixture
def server(veth_pair: tuple[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    client_ns, server_ns = veth_pair
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-c", SERVER],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield client_ns, proc
    stop(proc)


def seen(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]


def in_ns(ns: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=30, env=env, check=False
    )


def test_curl_under_run_is_mptcp_seen_from_server(server: tuple[str, subprocess.Popen[str]]) -> None:
    ns, proc = server
    plain = in_ns(ns, "curl", "-s", "http://10.0.1.2:8000/")
    assert plain.stdout == "ok\n"
    assert seen(proc) == {"proto": 6, "mptcp": False, "peer": "10.0.1.1"}  # control: plain curl is TCP
    wrapped = in_ns(ns, MPTCPKIT, "run", "--", "curl", "-s", "http://10.0.1.2:8000/")
    assert wrapped.returncode == 0 and wrapped.stdout == "ok\n"
    assert seen(proc) == {"proto": 262, "mptcp": True, "peer": "10.0.1.1"}


def test_python_client_under_run_with_debug_log(server: tuple[str, subprocess.Popen[str]]) -> None:
    ns, proc = server
    res = in_ns(ns, MPTCPKIT, "run", "-d", "--", sys.executable, "-c", CLIENT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "HTTP/1.1 200 OK"
    # create_connection() asks for IPPROTO_TCP (6) explicitly: converted too
    assert re.search(r"socket\(AF_INET, SOCK_STREAM, [06]\) -> IPPROTO_MPTCP", res.stderr), res.stderr
    assert seen(proc)["mptcp"] is True


def test_existing_ld_preload_is_kept(server: tuple[str, subprocess.Popen[str]], tmp_path: Path) -> None:
    ns, proc = server
    other = tmp_path / "other.c"
    other.write_text(
        "#include <stdio.h>\n__attribute__((constructor)) static void hi(void)"
        '{ fprintf(stderr, "other-preload-loaded\\n"); }\n'
    )
    lib = tmp_path / "libother.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(other)], check=True)
    env = {**os.environ, "LD_PRELOAD": str(lib)}
    res = in_ns(ns, MPTCPKIT, "run", "--", "curl", "-s", "http://10.0.1.2:8000/", env=env)
    assert res.stdout == "ok\n"
    assert "other-preload-loaded" in res.stderr
    assert seen(proc)["mptcp"] is True


def test_udp_and_unix_sockets_are_untouched(tmp_path: Path) -> None:
    code = (
        "import socket\n"
        "def proto(f, t): return socket.socket(f, t).getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL)\n"
        "print(proto(socket.AF_INET, socket.SOCK_DGRAM), proto(socket.AF_UNIX, socket.SOCK_STREAM),"
        " proto(socket.AF_INET6, socket.SOCK_STREAM))"
    )
    res = subprocess.run(
        [MPTCPKIT, "run", "--", sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert res.stdout.split() == ["17", "0", "262"]


def test_shim_compiles_on_first_use_into_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache" / "libmptcpwrap-test.so"
    preload.compile_shim(preload.shim_source(), out)
    code = "import socket; print(socket.socket().getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL))"
    env = {**os.environ, "LD_PRELOAD": str(out)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert res.stdout.strip() == str(socket.IPPROTO_TCP + 256)  # 262 = IPPROTO_MPTCP


def test_missing_program_is_a_clear_error() -> None:
    res = subprocess.run([MPTCPKIT, "run", "--", "no-such-program-mkt-tl"], capture_output=True, text=True)
    assert res.returncode == 2 and "program not found" in res.stderr and "Traceback" not in res.stderr


def test_find_shim_builds_into_cache_when_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preload, "packaged_shim", lambda: tmp_path / "not-installed.so")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    shim = preload.find_shim()
    assert shim.parent == (tmp_path / "xdg" / "mptcpkit").resolve() and shim.is_file()
    assert preload.find_shim() == shim  # second use: no rebuild


def test_no_compiler_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preload, "packaged_shim", lambda: tmp_path / "not-installed.so")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(EnvironmentProblem, match="no C compiler was found"):
        preload.find_shim()
