"""Request/response: one connection, fixed request and response sizes, one transaction in flight.

Latency is measured at the client from just before the request is sent to the last byte of the response
(TCP_NODELAY on both ends), so it is one application round trip: p50/p90/p99/p99.9 and transactions/s.
"""

from __future__ import annotations

import random
import socket
import time
from typing import Any

from mptcpkit.lab.traffic.model import RrResult, TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions
from mptcpkit.lab.traffic.sockets import EngineError, Watchdog, dial, handshake, hello, recv_frame, send_frame
from mptcpkit.lab.traffic.stats import MAX_RAW_SAMPLES, Sampler, connection_stats, latency_summary


def client_rr(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    q, r = opts.rr_size
    if opts.count is None and opts.duration is None:
        raise EngineError("usage", "rr mode needs --count N or --duration S")
    sock, _ = dial(opts, wd)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake(sock, hello(opts, session, 0, "rr"))
        req = random.Random(opts.seed).randbytes(q)
        resp = bytearray(r)
        view = memoryview(resp)
        lat: list[float] = []
        sampler = Sampler(opts.interval, sock, opts.proto, None)
        sampler.start()
        t0 = time.perf_counter()
        t_end = None if opts.duration is None else t0 + opts.duration
        while True:
            if opts.count is not None and len(lat) >= opts.count:
                break
            if t_end is not None and time.perf_counter() >= t_end:
                break
            t = time.perf_counter()
            sock.sendall(req)
            got = 0
            while got < r:
                n = sock.recv_into(view[got:])
                if n == 0:
                    raise EngineError("reset", f"server closed the connection after {len(lat)} transactions")
                got += n
            lat.append((time.perf_counter() - t) * 1e6)
        dur = time.perf_counter() - t0
        sampler.stop()
        result.connections.append(connection_stats(0, sock, opts.proto, sampler.subflow_samples))
        sock.shutdown(socket.SHUT_WR)
        summary = recv_frame(sock, "reading the server's rr summary")
    s = latency_summary(lat)
    result.rr = RrResult(
        request_size=q,
        response_size=r,
        transactions=len(lat),
        duration_s=dur,
        transactions_per_s=len(lat) / dur if dur > 0 else 0.0,
        p50_us=s.p50_us,
        p90_us=s.p90_us,
        p99_us=s.p99_us,
        p999_us=s.p999_us,
        min_us=s.min_us,
        max_us=s.max_us,
        mean_us=s.mean_us,
        latencies_us=lat[:MAX_RAW_SAMPLES],
    )
    if int(summary.get("transactions", -1)) != len(lat):
        raise EngineError(
            "protocol", f"server counted {summary.get('transactions')} transactions, client {len(lat)}"
        )


def serve_rr(conn: socket.socket, hello_frame: dict[str, Any]) -> int:
    """Answer every request with the response until the client half-closes; returns the transaction count."""
    q, r = (int(x) for x in hello_frame["rr"])
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    resp = random.Random(int(hello_frame["seed"]) + 1).randbytes(r)
    req = bytearray(max(q, 1))
    view = memoryview(req)
    n_tx = 0
    while True:
        got = 0
        while got < q:
            n = conn.recv_into(view[got:q])
            if n == 0:
                break
            got += n
        if got < q:
            if got:
                raise EngineError("reset", f"client closed mid-request after {n_tx} transactions")
            break
        conn.sendall(resp)
        n_tx += 1
    send_frame(conn, {"transactions": n_tx})
    return n_tx


def server_rr_result(q: int, r: int, n_tx: int) -> RrResult:
    """The server's view: only the count (latency is measured at the client)."""
    return RrResult(
        request_size=q,
        response_size=r,
        transactions=n_tx,
        duration_s=0.0,
        transactions_per_s=0.0,
        p50_us=0,
        p90_us=0,
        p99_us=0,
        min_us=0,
        max_us=0,
        mean_us=0,
    )
