"""Fixtures for the path-manager daemon tests: a namespace with links, and daemons run as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mptcpkit.mptcp_socket import IPPROTO_MPTCP
from mptcpkit.netlink import KernelEndpoint, Limits, MptcpPmClient
from mptcpkit.netlink.socket import run_in_netns

MPTCPD = Path("/usr/libexec/mptcpd")
MPTCPD_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/mptcpd")


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "-n", ns, *args], check=check, capture_output=True, text=True)


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def endpoints(ns: str) -> list[KernelEndpoint]:
    with MptcpPmClient(netns=ns) as pm:
        return pm.dump_endpoints()


def limits(ns: str) -> Limits:
    with MptcpPmClient(netns=ns) as pm:
        return pm.get_limits()


def table(ns: str) -> set[tuple[str, int, tuple[str, ...]]]:
    """KernelEndpoint table as (address, id, flags) for comparisons."""
    return {(str(e.addr), e.id, tuple(e.flags.names())) for e in endpoints(ns)}


def addrs(ns: str) -> set[str]:
    return {str(e.addr) for e in endpoints(ns)}


@pytest.fixture
def pm_ns(make_netns: Callable[[str], str]) -> str:
    """A namespace with two veth pairs: v0 (10.1.0.1/24) <-> p0 and v1 <-> p1 (no address), all up."""
    ns = make_netns("pm")
    for a, b in (("v0", "p0"), ("v1", "p1")):
        ip(ns, "link", "add", a, "type", "veth", "peer", "name", b)
        ip(ns, "link", "set", b, "up")
        ip(ns, "link", "set", a, "up")
    ip(ns, "addr", "add", "10.1.0.1/24", "dev", "v0")
    # the p* ends carry no addresses, so IPv6 link-local autoconf there is switched off
    for dev in ("p0", "p1"):
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"], check=True
        )
    return ns


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    state_file: Path
    log: Path
    argv: list[str] = field(default_factory=list)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def conf_file(tmp_path: Path) -> Path:
    p = tmp_path / "mptcpd.conf"
    p.write_text("[core]\nlog=stderr\n")
    p.chmod(0o644)
    return p


@pytest.fixture
def run_pm(tmp_path: Path, conf_file: Path) -> Iterator[Callable[..., Daemon]]:
    """Start `mptcpkit pm` for a namespace; waits until it is ready; stopped (SIGTERM) at teardown."""
    started: list[Daemon] = []

    def start(
        ns: str,
        *flags: str,
        ready: bool = True,
        conf: Path | None = None,
        state: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Daemon:
        n = len(started)
        state = state or tmp_path / f"pm-state-{n}.json"
        log = tmp_path / f"pm-{n}.log"
        argv = [
            sys.executable,
            "-m",
            "mptcpkit",
            "pm",
            "--netns",
            ns,
            "--state-file",
            str(state),
            "-c",
            str(conf or conf_file),
            "-d",
            *flags,
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        d = Daemon(proc, state, log, argv)
        started.append(d)
        if ready:
            try:
                wait_for(lambda: _ready(state, proc.pid) or proc.poll() is not None, 15, "daemon start")
            except AssertionError:
                raise AssertionError(d.output()) from None
            assert proc.poll() is None, d.output()
        return d

    yield start
    for d in started:
        d.stop()


def _ready(state: Path, pid: int) -> bool:
    try:
        return int(json.loads(state.read_text()).get("pid", 0)) == pid
    except (FileNotFoundError, ValueError):
        return False


@pytest.fixture
def run_mptcpd(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start Debian's mptcpd in a namespace (killed at teardown)."""
    procs: list[subprocess.Popen[bytes]] = []
    if not MPTCPD.exists():
        pytest.skip("Debian mptcpd not installed")

    def start(ns: str, *flags: str) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"mptcpd-{len(procs)}.log").open("wb")
        p = subprocess.Popen(
            ["ip", "netns", "exec", ns, str(MPTCPD), f"--plugin-dir={MPTCPD_PLUGINS}", *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


@contextlib.contextmanager
def mptcp_listener(ns: str, host: str, port: int) -> Iterator[list[socket.socket]]:
    """An MPTCP server in `ns` that accepts every connection and holds it open until the block ends."""
    ready, stop = threading.Event(), threading.Event()
    accepted: list[socket.socket] = []

    def serve() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
        s.settimeout(0.2)
        ready.set()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(s.accept()[0])
        for c in accepted:
            c.close()
        s.close()

    t = threading.Thread(target=run_in_netns, args=(ns, serve), daemon=True)
    t.start()
    assert ready.wait(5)
    try:
        yield accepted
    finally:
        stop.set()
        t.join(5)


def mptcp_connect(ns: str, host: str, port: int, data: bytes = b"") -> socket.socket:
    """An MPTCP client socket connected from inside `ns`."""

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.connect((host, port))
        if data:
            s.send(data)
        return s

    return run_in_netns(ns, connect)
