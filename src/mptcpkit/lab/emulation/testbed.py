"""A minimal two-host + wire-namespace bench for testing and benchmarking the emulation on its own.

Host A (``eth0`` 10.77.0.1/24) -- veth -- ``wa`` [wire ns] ``wb`` -- veth -- host B (``eth0`` 10.77.0.2/24).
The lab's real backend builds the same shape; this one exists so emulation can be measured without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab import probe

PROBE_PATH = Path(probe.__file__).resolve()
A_ADDR, B_ADDR = "10.77.0.1", "10.77.0.2"
BIG_BUFFERS = {
    "net.ipv4.tcp_rmem": "4096 131072 134217728",
    "net.ipv4.tcp_wmem": "4096 131072 134217728",
}


def _ip(*args: str) -> None:
    res = subprocess.run(["ip", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {res.stderr.strip()}")


@dataclass
class Testbed:
    """Namespace names and helpers; ``close()`` kills what runs inside and deletes the namespaces."""

    __test__ = False  # not a pytest test class despite the name

    a: str
    b: str
    wire: str
    a_if: str = "wa"
    b_if: str = "wb"
    _spawned: list[subprocess.Popen[str]] = field(default_factory=list, repr=False)

    @property
    def namespaces(self) -> list[str]:
        return [self.a, self.b, self.wire]

    def run(self, ns: str, argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout
        )

    def spawn(self, ns: str, argv: Sequence[str]) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self._spawned.append(proc)
        return proc

    def _probe(self, ns: str, argv: Sequence[str], timeout: float = 120) -> dict[str, Any]:
        res = self.run(ns, [sys.executable, "-I", str(PROBE_PATH), *argv], timeout=timeout)
        lines = res.stdout.strip().splitlines()
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
        if res.returncode != 0 or not result or "error" in result:
            raise LabError(f"probe {argv[0]} failed: {result.get('error') or res.stderr.strip()}")
        return result

    def ping(self, count: int, interval_s: float, *, wait_s: float = 1.0, size: int = 56) -> dict[str, Any]:
        """ICMP echo from A to B with kernel receive timestamps: sent/received, RTT samples (s), reorders."""
        return self._probe(
            self.a,
            [
                "ping",
                B_ADDR,
                "--count",
                str(count),
                "--interval",
                str(interval_s),
                "--wait",
                str(wait_s),
                "--size",
                str(size),
            ],
        )

    def udp_rtt(
        self, count: int, interval_s: float, *, wait_s: float = 1.0, size: int = 64, port: int = 7777
    ) -> dict[str, Any]:
        """UDP echo probes from A to B: sent/received counts, RTT samples (s), reorder count."""
        argv = [sys.executable, "-I", str(PROBE_PATH), "echo", "--port", str(port), "--idle", "10"]
        server = self.spawn(self.b, argv)
        try:
            assert server.stdout is not None
            if "ready" not in server.stdout.readline():
                raise LabError("the UDP echo server did not start")
            return self._probe(
                self.a,
                [
                    "rtt",
                    B_ADDR,
                    "--port",
                    str(port),
                    "--count",
                    str(count),
                    "--interval",
                    str(interval_s),
                    "--wait",
                    str(wait_s),
                    "--size",
                    str(size),
                ],
            )
        finally:
            _terminate(server)

    def udp_rate(
        self,
        rate_bps: float,
        *,
        window_s: float = 1.0,
        warmup_s: float = 0.2,
        burst: int = 44,
        port: int = 7778,
        duration_s: float | None = None,
        prefill: int = 0,
    ) -> dict[str, Any]:
        """The paced UDP rate probe from A to B (sent at ``rate_bps``): the sink's JSON (``rate_bps``,
        ``datagrams`` received in the window...) plus ``sent``, the datagrams the source sent."""
        argv = [sys.executable, "-I", str(PROBE_PATH), "sink", "--bind", B_ADDR, "--port", str(port)]
        sink = self.spawn(self.b, [*argv, "--window", str(window_s), "--warmup", str(warmup_s)])
        try:
            assert sink.stdout is not None
            if "ready" not in sink.stdout.readline():
                raise LabError("the rate probe sink did not start")
            sent = self._probe(
                self.a,
                [
                    "source",
                    B_ADDR,
                    "--port",
                    str(port),
                    "--rate",
                    str(rate_bps),
                    "--burst",
                    str(burst),
                    "--duration",
                    str(duration_s or window_s + warmup_s + 0.3),
                    "--prefill",
                    str(prefill),
                ],
            )
            out, _err = sink.communicate(timeout=60)
            result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
            if "error" in result:
                raise LabError(f"rate probe: {result['error']}")
            result["sent"] = sent["sent"]
            result["source_max_late_s"] = sent["max_late_s"]
            return result
        finally:
            _terminate(sink)

    def iperf3(
        self,
        seconds: float,
        *,
        omit_s: float = 0,
        reverse: bool = False,
        port: int = 5201,
        extra: Sequence[str] = (),
    ) -> dict[str, Any]:
        """iperf3 TCP from A to B (B to A with reverse); returns iperf3's JSON."""
        server = self.spawn(self.b, ["iperf3", "-s", "-1", "-p", str(port)])
        try:
            self._wait_listening(self.b, port, server)
            argv = ["iperf3", "-c", B_ADDR, "-p", str(port), "-J", "-t", str(seconds)]
            if omit_s:
                argv += ["-O", str(omit_s)]
            if reverse:
                argv.append("-R")
            res = self.run(self.a, [*argv, *extra], timeout=seconds + omit_s + 30)
            data: dict[str, Any] = json.loads(res.stdout) if res.stdout.strip() else {}
            if "error" in data or res.returncode != 0:
                raise LabError(f"iperf3 failed: {data.get('error') or res.stderr.strip()}")
            return data
        finally:
            _terminate(server)

    def _wait_listening(self, ns: str, port: int, proc: subprocess.Popen[str], timeout: float = 10) -> None:
        """Until a TCP socket listens on ``port`` in ``ns``: a fixed sleep loses on a busy machine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if self.run(ns, ["ss", "-Hltn", f"sport = :{port}"], timeout=10).stdout.strip():
                return
            time.sleep(0.02)
        raise LabError(f"the server on port {port} in {ns} did not start listening")

    def close(self) -> None:
        for proc in self._spawned:
            _terminate(proc)
        for ns in self.namespaces:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _terminate(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def create_testbed(prefix: str = "mkt-em-") -> Testbed:
    """Build A, B and the wire namespace (names ``{prefix}{tag}-a|b|w``), hosts tuned for big BDPs."""
    tag = uuid.uuid4().hex[:6]
    bed = Testbed(a=f"{prefix}{tag}-a", b=f"{prefix}{tag}-b", wire=f"{prefix}{tag}-w")
    try:
        for ns in bed.namespaces:
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        for host, wire_end, addr in ((bed.a, bed.a_if, A_ADDR), (bed.b, bed.b_if, B_ADDR)):
            tmp = f"mkem{tag}"
            _ip("link", "add", tmp, "netns", host, "type", "veth", "peer", wire_end, "netns", bed.wire)
            _ip("-n", host, "link", "set", tmp, "name", "eth0")
            _ip("-n", host, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", host, "link", "set", "eth0", "up")
            _ip("-n", bed.wire, "link", "set", wire_end, "up")
            sysctl = ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in BIG_BUFFERS.items())]
            res = bed.run(host, sysctl)
            if res.returncode != 0:
                raise LabError(f"sysctl in {host}: {res.stderr.strip()}")
    except BaseException:
        bed.close()
        raise
    return bed


@contextlib.contextmanager
def testbed(prefix: str = "mkt-em-") -> Iterator[Testbed]:
    bed = create_testbed(prefix)
    try:
        yield bed
    finally:
        bed.close()
