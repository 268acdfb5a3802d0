"""Connection setup: many short connections, each timed from the connect() call.

Every probe connection sends a 8-byte probe (protocol.encode_probe) and the accepting server answers with the
asked number of bytes, so one probe measures: connect() (the handshake), `served` (until the server
application accepted the connection and its first byte arrived: the accept side included), `completion` (the
whole answer: a short transfer) and, with --join N, the time until N more MPTCP subflows were established.
A control connection brackets the session so the server can report how many probes it accepted and how fast.
"""

from __future__ import annotations

import socket
import threading
import time

from mptcpkit import mptcp_socket as ms
from mptcpkit.lab.traffic import protocol
from mptcpkit.lab.traffic.model import ConnectResult, TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions
from mptcpkit.lab.traffic.sockets import (
    EngineError,
    Watchdog,
    classify,
    dial,
    handshake,
    hello,
    recv_frame,
    send_frame,
)
from mptcpkit.lab.traffic.stats import MAX_RAW_SAMPLES, connection_stats, latency_summary, percentile

JOIN_WAIT_S = 3.0
_CHUNK = bytes(1 << 16)


class _Probes:
    """Shared state of the probe workers."""

    def __init__(self, count: int | None, t_end: float | None) -> None:
        self.count = count
        self.t_end = t_end
        self.attempts = 0
        self.lock = threading.Lock()
        self.connect_us: list[float] = []
        self.served_us: list[float] = []
        self.completion_us: list[float] = []
        self.join_us: list[float] = []
        self.failures = 0
        self.last_error: EngineError | None = None
        self.bytes = 0

    def claim(self) -> int | None:
        with self.lock:
            if self.count is not None and self.attempts >= self.count:
                return None
            if self.t_end is not None and time.monotonic() >= self.t_end:
                return None
            self.attempts += 1
            return self.attempts


def _wait_join(sock: socket.socket, wanted: int, deadline: float) -> bool:
    while time.perf_counter() < deadline:
        info = ms.mptcp_info(sock)
        if info is not None and info.subflows >= wanted:
            return True
        time.sleep(0.0002)
    return False


def _probe(opts: ClientOptions, wd: Watchdog, probes: _Probes, attempt: int, result: TrafficResult) -> None:
    size = max(1, opts.bytes or 1)
    t0 = time.perf_counter()
    sock, dt = dial(opts, wd)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(protocol.encode_probe(size))
        first = sock.recv(65536)
        if not first:
            raise EngineError("reset", "server closed a probe connection without answering")
        t_served = time.perf_counter()
        got = len(first)
        t_join = None
        if opts.join and opts.proto == "mptcp":
            if not _wait_join(sock, opts.join, t0 + JOIN_WAIT_S):
                raise EngineError("join", f"no {opts.join} additional subflow(s) within {JOIN_WAIT_S} s")
            t_join = time.perf_counter()
        buf = bytearray(1 << 16)
        while got < size:
            n = sock.recv_into(buf)
            if n == 0:
                raise EngineError("reset", f"server closed a probe after {got} of {size} bytes")
            got += n
        t_done = time.perf_counter()
        if attempt == 1:
            result.connections.append(connection_stats(0, sock, opts.proto, []))
    finally:
        sock.close()
        wd.discard(sock)
    with probes.lock:
        probes.connect_us.append(dt * 1e6)
        probes.served_us.append((t_served - t0) * 1e6)
        probes.completion_us.append((t_done - t0) * 1e6)
        if t_join is not None:
            probes.join_us.append((t_join - t0) * 1e6)
        probes.bytes += got


def client_connect(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    count = opts.count if opts.count is not None else (None if opts.duration is not None else 100)
    ctl, _ = dial(opts, wd)
    with ctl:
        handshake(ctl, hello(opts, session, 0, "connect"))
        t_end = None if opts.duration is None else time.monotonic() + opts.duration
        probes = _Probes(count, t_end)

        def worker() -> None:
            while (attempt := probes.claim()) is not None:
                try:
                    _probe(opts, wd, probes, attempt, result)
                except (OSError, EngineError) as exc:
                    with probes.lock:
                        probes.failures += 1
                        probes.last_error = classify(exc, wd)
                    if wd.expired:
                        return

        t0 = time.perf_counter()
        workers = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, opts.concurrency))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        wall = max(1e-9, time.perf_counter() - t0)
        send_frame(ctl, {"done": True, "probes": len(probes.connect_us)})
        recv_frame(ctl, "reading the server's connect summary")
    n = len(probes.connect_us)
    s = sorted(probes.connect_us)
    result.connect = ConnectResult(
        attempts=n + probes.failures,
        successes=n,
        failures=probes.failures,
        samples_us=probes.connect_us[:MAX_RAW_SAMPLES],
        p50_us=percentile(s, 50),
        p90_us=percentile(s, 90),
        p99_us=percentile(s, 99),
        mean_us=sum(s) / n if n else 0.0,
        connections_per_s=n / wall,
        served=latency_summary(probes.served_us),
        completion=latency_summary(probes.completion_us) if (opts.bytes or 1) > 1 else None,
        join=latency_summary(probes.join_us) if opts.join else None,
        bytes_per_connection=max(1, opts.bytes or 1),
        goodput_bps=probes.bytes * 8 / wall,
    )
    if probes.failures and probes.last_error is not None:
        err = probes.last_error
        raise EngineError(
            err.kind, f"{probes.failures} of {probes.failures + n} connects failed: {err.message}"
        )


def serve_probe(conn: socket.socket) -> None:
    """Answer one probe connection (its magic already read): send the asked bytes, wait for the client's close."""
    size = protocol.decode_probe_size(conn.recv(4, socket.MSG_WAITALL))
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    left = size
    while left > 0:
        n = min(left, len(_CHUNK))
        conn.sendall(_CHUNK[:n])
        left -= n
    conn.recv(1)  # the client closes first, so TIME_WAIT stays on its side


def server_connect_result(accepts: list[float]) -> ConnectResult:
    """The server's view of a connect session: how many probes it accepted and how fast."""
    span = accepts[-1] - accepts[0] if len(accepts) > 1 else 0.0
    return ConnectResult(
        attempts=len(accepts),
        successes=len(accepts),
        failures=0,
        samples_us=[],
        p50_us=0,
        p90_us=0,
        p99_us=0,
        mean_us=0,
        connections_per_s=(len(accepts) - 1) / span if span > 0 else 0.0,
    )
