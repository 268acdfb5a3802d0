"""Per-connection statistics: percentiles, MPTCP_INFO / fallback, per-subflow tcp_info, the interval sampler."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from mptcpkit import mptcp_socket as ms
from mptcpkit.lab.traffic.model import (
    ConnectionStats,
    LatencySummary,
    Sample,
    SubflowBytes,
    SubflowSample,
    SubflowStats,
)
from mptcpkit.lab.traffic.sockets import format_addr

MAX_RAW_SAMPLES = 10_000


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def latency_summary(values_us: Sequence[float]) -> LatencySummary:
    """p50/p90/p99/p99.9/min/max/mean of latencies in microseconds, plus the first raw samples."""
    s = sorted(values_us)
    return LatencySummary(
        count=len(s),
        p50_us=percentile(s, 50),
        p90_us=percentile(s, 90),
        p99_us=percentile(s, 99),
        p999_us=percentile(s, 99.9),
        min_us=s[0] if s else 0.0,
        max_us=s[-1] if s else 0.0,
        mean_us=sum(s) / len(s) if s else 0.0,
        samples_us=list(values_us[:MAX_RAW_SAMPLES]),
    )


def fallback_state(sock: socket.socket, proto: str) -> tuple[bool, str | None, ms.MptcpInfo | None]:
    """(fell back?, reason, MPTCP_INFO) for a connected socket."""
    if proto != "mptcp":
        return False, None, None
    try:
        info = ms.mptcp_info(sock)
    except OSError as exc:
        return False, f"MPTCP_INFO failed: {exc.strerror}", None
    if info is None:
        return True, "MPTCP_INFO unavailable: the connection fell back to TCP (peer without MPTCP?)", None
    if info.fallback:
        return True, "MPTCP_INFO flags has MPTCP_INFO_FLAG_FALLBACK: the connection fell back to TCP", info
    return False, None, info


def subflow_stats(sock: socket.socket) -> list[SubflowStats]:
    try:
        infos = ms.subflow_tcp_info(sock)
        addrs = ms.subflow_addrs(sock)
    except OSError:
        return []
    out = []
    for i, ti in enumerate(infos):
        ad = addrs[i] if i < len(addrs) else ms.SubflowAddrs(("", 0), ("", 0))
        out.append(
            SubflowStats(
                local=ad.local[0],
                local_port=ad.local[1],
                remote=ad.remote[0],
                remote_port=ad.remote[1],
                bytes_sent=ti.bytes_sent,
                bytes_received=ti.bytes_received,
                bytes_acked=ti.bytes_acked,
                bytes_retrans=ti.bytes_retrans,
                total_retrans=ti.total_retrans,
                rtt_us=ti.rtt_us,
                min_rtt_us=ti.min_rtt_us,
                snd_mss=ti.snd_mss,
                rcv_mss=ti.rcv_mss,
                snd_cwnd=ti.snd_cwnd,
                delivery_rate=ti.delivery_rate,
            )
        )
    return out


def socket_mss(sock: socket.socket, subflows: list[SubflowStats]) -> int | None:
    try:
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG))
    except OSError:
        return subflows[0].snd_mss if subflows else None


def connection_stats(
    index: int, sock: socket.socket, proto: str, samples: list[SubflowSample]
) -> ConnectionStats:
    fb, reason, info = fallback_state(sock, proto)
    subs = subflow_stats(sock) if proto == "mptcp" and not fb else []
    try:
        local = format_addr(sock.getsockname())
        remote = format_addr(sock.getpeername())
    except OSError:
        local = remote = ""
    return ConnectionStats(
        index=index,
        proto=proto,
        local=local,
        remote=remote,
        mss=socket_mss(sock, subs),
        fallback=fb,
        fallback_reason=reason,
        mptcp_info=None if info is None else asdict(info),
        subflows=subs,
        subflow_samples=samples,
    )


class Sampler:
    """Every interval: bytes received so far (goodput samples) and per-subflow counters (MPTCP)."""

    def __init__(
        self, interval: float, sock: socket.socket, proto: str, progress: Callable[[], int] | None
    ) -> None:
        self.interval = interval
        self.sock = sock
        self.mptcp = proto == "mptcp"
        self.progress = progress
        self.samples: list[Sample] = []
        self.subflow_samples: list[SubflowSample] = []
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._last = (0.0, 0)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        n = 1
        while not self._stop.wait(max(0.0, self.t0 + n * self.interval - time.monotonic())):
            self.take()
            n += 1

    def take(self) -> None:
        t = time.monotonic() - self.t0
        if self.progress is not None:
            b = self.progress()
            lt, lb = self._last
            bps = (b - lb) * 8 / (t - lt) if t > lt else 0.0
            self.samples.append(Sample(t=round(t, 6), bytes=b, bps=bps))
            self._last = (t, b)
        if self.mptcp:
            subs = subflow_stats(self.sock)
            if subs:
                self.subflow_samples.append(
                    SubflowSample(
                        t=round(t, 6),
                        subflows=[
                            SubflowBytes(
                                local=format_addr((s.local, s.local_port)),
                                remote=format_addr((s.remote, s.remote_port)),
                                bytes_sent=s.bytes_sent,
                                bytes_received=s.bytes_received,
                                bytes_acked=s.bytes_acked,
                            )
                            for s in subs
                        ],
                    )
                )

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.take()
