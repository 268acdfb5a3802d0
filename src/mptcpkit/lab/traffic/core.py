"""The engine's socket layer: one server, one client, bulk / rr / connect sessions.

Blocking sockets and one thread per connection (send/recv release the GIL; the hot loops only call
sendall/recv_into on 1 MiB buffers). A watchdog shuts every socket down when --timeout expires, so a blocked
call returns and the error is reported as `timeout`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mptcpkit import mptcp_socket as ms
from mptcpkit.lab.traffic import protocol, stream
from mptcpkit.lab.traffic.model import (
    ConnectionStats,
    ConnectResult,
    ErrorInfo,
    RrResult,
    Sample,
    StreamResult,
    SubflowBytes,
    SubflowSample,
    SubflowStats,
    TrafficResult,
)
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions

MAX_RAW_SAMPLES = 10_000


class EngineError(Exception):
    """A failure reported in the result JSON (kind + message), never as a traceback."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


# ---- helpers ---------------------------------------------------------------------------------------------


class Watchdog:
    """Shuts registered sockets down at the deadline so blocked calls return."""

    def __init__(self, timeout: float | None) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self.deadline = None if timeout is None else time.monotonic() + timeout
        if timeout is not None:
            self._timer = threading.Timer(timeout, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired:
                _shutdown(sock)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.01, self.deadline - time.monotonic())

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                _shutdown(s)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def classify(exc: BaseException, watchdog: Watchdog | None = None) -> EngineError:
    """Map a socket exception to a reported error kind."""
    if isinstance(exc, EngineError):
        if watchdog is not None and watchdog.expired and exc.kind in ("reset", "io"):
            return EngineError("timeout", f"timed out ({exc.message})")
        return exc
    if watchdog is not None and watchdog.expired:
        return EngineError("timeout", "timed out (--timeout expired)")
    if isinstance(exc, protocol.ProtocolError):
        return EngineError("protocol", str(exc))
    if isinstance(exc, ConnectionRefusedError):
        return EngineError("refused", f"connection refused: {exc.strerror}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return EngineError("timeout", f"timed out: {exc}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return EngineError("reset", f"connection reset by peer: {exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return EngineError("unreachable", f"{exc.strerror}")
    if isinstance(exc, OSError) and exc.errno in (errno.EPROTONOSUPPORT, errno.ENOPROTOOPT):
        return EngineError("environment", f"MPTCP not available: {exc.strerror} (is net.mptcp.enabled=1?)")
    if isinstance(exc, OSError):
        return EngineError("io", f"{exc.strerror or exc}")
    return EngineError("internal", f"{type(exc).__name__}: {exc}")


def make_socket(proto: str, family: int, sndbuf: int | None, rcvbuf: int | None) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM, ms.IPPROTO_MPTCP if proto == "mptcp" else 0)
    if sndbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return sock


def family_of(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def recv_exact(sock: socket.socket, n: int, what: str) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EngineError("reset", f"peer closed the connection while {what}")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, what: str) -> dict[str, Any]:
    length = protocol.frame_length(recv_exact(sock, protocol.HEADER, what))
    return protocol.decode_body(recv_exact(sock, length, what))


def send_frame(sock: socket.socket, obj: dict[str, Any]) -> None:
    sock.sendall(protocol.encode_frame(obj))


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    k = (len(sorted_values) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


# ---- per-connection statistics ---------------------------------------------------------------------------


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


def format_addr(addr: tuple[Any, ...]) -> str:
    """`10.0.1.1:5201` or `[fd00::1]:5201`."""
    host, port = str(addr[0]), int(addr[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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


# ---- bulk ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BulkSpec:
    """What one connection does (both ends derive theirs from the hello)."""

    send: bool
    recv: bool
    send_seed: int
    recv_seed: int
    size: int | None
    duration: float | None
    integrity: str
    interval: float
    corrupt_offset: int | None = None


@dataclass(slots=True)
class BulkOutcome:
    sent: dict[str, Any] | None = None
    """our sender summary"""
    received: dict[str, Any] | None = None
    """our receiver summary"""
    peer_sender: dict[str, Any] | None = None
    peer_receiver: dict[str, Any] | None = None
    subflow_samples: list[SubflowSample] = field(default_factory=list)
    stats: ConnectionStats | None = None


def _send_stream(
    sock: socket.socket, spec: BulkSpec, out: dict[str, Any], errors: list[BaseException]
) -> None:
    try:
        src = stream.StreamSource(spec.send_seed, sha256=spec.integrity == "sha256")
        start = time.time()
        t_end = None if spec.duration is None else time.monotonic() + spec.duration
        sent = 0
        while True:
            if spec.size is not None:
                if sent >= spec.size:
                    break
                chunk = src.next_chunk(spec.size - sent)
            else:
                assert t_end is not None
                if time.monotonic() >= t_end:
                    break
                chunk = src.next_chunk()
            off = spec.corrupt_offset
            if off is not None and sent <= off < sent + len(chunk):
                bad = bytearray(chunk)
                bad[off - sent] ^= 0xFF
                sock.sendall(bad)
            else:
                sock.sendall(chunk)
            sent += len(chunk)
        end = time.time()
        out.update(bytes=sent, sha256=src.hexdigest(), start=start, end=end)
        sock.sendall(stream.end_record(protocol.encode_frame(out)[protocol.HEADER :]))
    except BaseException as exc:
        errors.append(exc)


def _recv_stream(
    sock: socket.socket, spec: BulkSpec, sink: stream.StreamSink
) -> tuple[dict[str, Any], bytes]:
    """Receive until the end record; returns (peer sender summary, bytes that followed it)."""
    view = sink.view
    recv_into = sock.recv_into
    while not sink.ended:
        n = recv_into(view[sink.fill :])
        if n == 0:
            raise EngineError("reset", f"peer closed the connection mid-stream after {sink.data_bytes} bytes")
        sink.consume(n)
    assert sink.trailer is not None
    tail = bytes(sink.trailer)
    while (parsed := stream.parse_trailer(tail)) is None:
        more = sock.recv(65536)
        if not more:
            raise EngineError("reset", "peer closed the connection inside the end-of-stream record")
        tail += more
    body, rest = parsed
    return protocol.decode_body(body), rest


def run_bulk(sock: socket.socket, spec: BulkSpec, proto: str, index: int) -> BulkOutcome:
    """Both ends of a bulk connection run this after the hello exchange."""
    out = BulkOutcome()
    errors: list[BaseException] = []
    sent: dict[str, Any] = {}
    sender = None
    if spec.send:
        sender = threading.Thread(target=_send_stream, args=(sock, spec, sent, errors), daemon=True)
    sink = stream.StreamSink(spec.recv_seed, integrity=spec.integrity, size=spec.size) if spec.recv else None
    sampler = Sampler(spec.interval, sock, proto, (lambda: sink.data_bytes) if sink is not None else None)
    sampler.start()
    rstart = time.time()
    if sender is not None:
        sender.start()
    rest = b""
    try:
        if sink is not None:
            out.peer_sender, rest = _recv_stream(sock, spec, sink)
            rend = time.time()
            out.received = {
                "bytes": sink.data_bytes,
                "sha256": sink.hexdigest(),
                "first_bad": sink.first_bad,
                "start": rstart,
                "end": rend,
            }
    except BaseException:
        _shutdown(sock)  # unblocks our sender thread, which may be stuck in sendall
        raise
    finally:
        if sender is not None:
            sender.join()
        sampler.stop()
    if errors:
        raise errors[0]
    out.sent = sent if spec.send else None
    out.subflow_samples = sampler.subflow_samples
    out.stats = connection_stats(index, sock, proto, sampler.subflow_samples)
    if out.received is not None:
        out.received["samples"] = [asdict(s) for s in sampler.samples]
        send_frame(sock, out.received)
    if spec.send:
        what = "reading the receiver summary"
        if len(rest) < protocol.HEADER:
            rest += recv_exact(sock, protocol.HEADER - len(rest), what)
        length = protocol.frame_length(rest[: protocol.HEADER])
        rest += recv_exact(sock, max(0, protocol.HEADER + length - len(rest)), what)
        out.peer_receiver = protocol.decode_body(rest[protocol.HEADER : protocol.HEADER + length])
    return out


def stream_result(
    direction: str, index: int, integrity: str, snd: dict[str, Any], rcv: dict[str, Any]
) -> StreamResult:
    """Join the sender's and the receiver's summaries of one stream."""
    dur = max(1e-9, float(rcv["end"]) - float(rcv["start"]))
    ok: bool | None
    same_len = int(snd["bytes"]) == int(rcv["bytes"])
    if integrity == "sha256":
        ok = same_len and rcv["first_bad"] is None and snd["sha256"] == rcv["sha256"]
    elif integrity == "verify":
        ok = same_len and rcv["first_bad"] is None
    else:
        ok = None
    return StreamResult(
        direction=direction,
        connection=index,
        bytes_sent=int(snd["bytes"]),
        bytes_received=int(rcv["bytes"]),
        start=float(rcv["start"]),
        end=float(rcv["end"]),
        duration_s=dur,
        goodput_bps=int(rcv["bytes"]) * 8 / dur,
        integrity=integrity,
        sender_sha256=snd.get("sha256"),
        receiver_sha256=rcv.get("sha256"),
        integrity_ok=ok,
        first_bad_offset=rcv.get("first_bad"),
        sender_duration_s=float(snd["end"]) - float(snd["start"]),
        samples=[Sample(**s) for s in rcv.get("samples", [])],
    )


def bulk_streams(outcome: BulkOutcome, index: int, integrity: str, client: bool) -> list[StreamResult]:
    res = []
    if outcome.sent is not None and outcome.peer_receiver is not None:
        res.append(
            stream_result(
                "upload" if client else "download", index, integrity, outcome.sent, outcome.peer_receiver
            )
        )
    if outcome.received is not None and outcome.peer_sender is not None:
        res.append(
            stream_result(
                "download" if client else "upload", index, integrity, outcome.peer_sender, outcome.received
            )
        )
    return res


def finish(result: TrafficResult) -> TrafficResult:
    """Fill the totals and the verdict from the parts."""
    result.bytes_total = sum(s.bytes_received for s in result.streams)
    result.goodput_bps = sum(s.goodput_bps for s in result.streams)
    fbs = [c for c in result.connections if c.fallback]
    if fbs:
        result.fallback = True
        result.fallback_reason = f"connection {fbs[0].index}: {fbs[0].fallback_reason}"
    result.ok = (
        result.error is None
        and all(s.integrity_ok is not False for s in result.streams)
        and not (result.proto == "mptcp" and result.fallback)
    )
    result.ended_at = time.time()
    return result


# ---- client ----------------------------------------------------------------------------------------------


def _connect(opts: ClientOptions, wd: Watchdog) -> tuple[socket.socket, float]:
    family = family_of(opts.connect)
    sock = make_socket(opts.proto, family, opts.sndbuf, opts.rcvbuf)
    wd.add(sock)
    if opts.bind:
        sock.bind((opts.bind, 0))
    sock.settimeout(wd.remaining())
    t = time.perf_counter()
    sock.connect((opts.connect, opts.port))
    dt = time.perf_counter() - t
    sock.settimeout(None)
    return sock, dt


def _hello(opts: ClientOptions, session: str, index: int, kind: str) -> dict[str, Any]:
    return {
        "v": protocol.VERSION,
        "session": session,
        "conn": index,
        "kind": kind,
        "mode": opts.mode,
        "streams": opts.parallel,
        "seed": opts.seed,
        "bytes": opts.bytes,
        "duration": opts.duration,
        "integrity": opts.integrity,
        "interval": opts.interval,
        "rr": list(opts.rr_size),
        "count": opts.count,
        "proto": opts.proto,
    }


def _handshake(sock: socket.socket, hello: dict[str, Any]) -> dict[str, Any]:
    send_frame(sock, hello)
    reply = recv_frame(sock, "waiting for the server's reply to the hello")
    if not reply.get("ok"):
        raise EngineError("protocol", f"server refused the session: {reply.get('error')}")
    return reply


def run_client(opts: ClientOptions) -> TrafficResult:
    """Run one client session and return its result (errors are inside it, never raised)."""
    result = TrafficResult(
        role="client",
        engine="mptcpkit",
        mode=opts.mode,
        proto=opts.proto,
        ok=False,
        started_at=time.time(),
        ended_at=0.0,
        options={k: v for k, v in asdict(opts).items() if k != "corrupt_offset"},
    )
    wd = Watchdog(opts.timeout)
    try:
        session = uuid.uuid4().hex
        if opts.mode.startswith("bulk-"):
            _client_bulk(opts, wd, session, result)
        elif opts.mode == "rr":
            _client_rr(opts, wd, session, result)
        elif opts.mode == "connect":
            _client_connect(opts, wd, session, result)
        else:
            raise EngineError("usage", f"unknown mode {opts.mode!r}")
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            result.error = ErrorInfo("interrupted", "interrupted")
        else:
            err = classify(exc, wd)
            result.error = ErrorInfo(err.kind, err.message)
    finally:
        wd.cancel()
    return finish(result)


def _client_bulk(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    if opts.bytes is None and opts.duration is None:
        raise EngineError("usage", "bulk modes need --bytes N or --duration S")
    outcomes: list[BulkOutcome | None] = [None] * opts.parallel
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            sock, _ = _connect(opts, wd)
            with sock:
                _handshake(sock, _hello(opts, session, i, "bulk"))
                spec = BulkSpec(
                    send=opts.mode in ("bulk-upload", "bulk-both"),
                    recv=opts.mode in ("bulk-download", "bulk-both"),
                    send_seed=opts.seed * 1000 + 2 * i,
                    recv_seed=opts.seed * 1000 + 2 * i + 1,
                    size=opts.bytes,
                    duration=opts.duration,
                    integrity=opts.integrity,
                    interval=opts.interval,
                    corrupt_offset=opts.corrupt_offset,
                )
                outcomes[i] = run_bulk(sock, spec, opts.proto, i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(opts.parallel)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, o in enumerate(outcomes):
        if o is not None:
            result.streams += bulk_streams(o, i, opts.integrity, client=True)
            if o.stats is not None:
                result.connections.append(o.stats)
    if errors:
        raise errors[0]


def _client_rr(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    q, r = opts.rr_size
    if opts.count is None and opts.duration is None:
        raise EngineError("usage", "rr mode needs --count N or --duration S")
    sock, _ = _connect(opts, wd)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _handshake(sock, _hello(opts, session, 0, "rr"))
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
    s = sorted(lat)
    result.rr = RrResult(
        request_size=q,
        response_size=r,
        transactions=len(lat),
        duration_s=dur,
        transactions_per_s=len(lat) / dur if dur > 0 else 0.0,
        p50_us=percentile(s, 50),
        p90_us=percentile(s, 90),
        p99_us=percentile(s, 99),
        min_us=s[0] if s else 0.0,
        max_us=s[-1] if s else 0.0,
        mean_us=sum(s) / len(s) if s else 0.0,
        latencies_us=lat[:MAX_RAW_SAMPLES],
    )
    if int(summary.get("transactions", -1)) != len(lat):
        raise EngineError(
            "protocol", f"server counted {summary.get('transactions')} transactions, client {len(lat)}"
        )


def _client_connect(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    count = opts.count if opts.count is not None else (None if opts.duration is not None else 100)
    ctl, _ = _connect(opts, wd)
    samples: list[float] = []
    failures = 0
    last_error: EngineError | None = None
    with ctl:
        _handshake(ctl, _hello(opts, session, 0, "connect"))
        t_end = None if opts.duration is None else time.monotonic() + opts.duration
        attempts = 0
        while (count is None or attempts < count) and (t_end is None or time.monotonic() < t_end):
            attempts += 1
            try:
                sock, dt = _connect(opts, wd)
            except OSError as exc:
                failures += 1
                last_error = classify(exc, wd)
                if wd.expired:
                    break
                continue
            with sock:
                if attempts == 1:
                    result.connections.append(connection_stats(0, sock, opts.proto, []))
                samples.append(dt * 1e6)
        send_frame(ctl, {"done": True, "probes": len(samples)})
        recv_frame(ctl, "reading the server's connect summary")
    s = sorted(samples)
    result.connect = ConnectResult(
        attempts=len(samples) + failures,
        successes=len(samples),
        failures=failures,
        samples_us=samples[:MAX_RAW_SAMPLES],
        p50_us=percentile(s, 50),
        p90_us=percentile(s, 90),
        p99_us=percentile(s, 99),
        mean_us=sum(s) / len(s) if s else 0.0,
    )
    if failures and last_error is not None:
        raise EngineError(
            last_error.kind, f"{failures} of {failures + len(samples)} connects failed: {last_error.message}"
        )


# ---- server ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Session:
    hello: dict[str, Any]
    expected: int
    results: list[tuple[int, BulkOutcome | None]] = field(default_factory=list)
    rr: RrResult | None = None
    connect: ConnectResult | None = None
    error: EngineError | None = None
    probes: int = 0
    done: bool = False


class Server:
    """Accepts connections; groups them into sessions by the hello's session id; one result per session."""

    def __init__(self, opts: ServerOptions, emit: Callable[[str], None]) -> None:
        self.opts = opts
        self.emit = emit
        self.wd = Watchdog(opts.timeout)
        self.lock = threading.Lock()
        self.sessions: dict[str, _Session] = {}
        self.connect_session: str | None = None
        self.finished = threading.Event()
        family = family_of(opts.bind)
        self.listener = make_socket(opts.proto, family, opts.sndbuf, opts.rcvbuf)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((opts.bind, opts.port))
        self.listener.listen(128)
        self.wd.add(self.listener)
        self.port = int(self.listener.getsockname()[1])

    def serve(self) -> int:
        """Accept until --once is satisfied or --timeout expires; returns the exit code."""
        code = 0
        try:
            while not self.finished.is_set():
                try:
                    conn, _ = self.listener.accept()
                except OSError as exc:
                    if self.finished.is_set():
                        break
                    err = classify(exc, self.wd)
                    self._emit_error(err)
                    return 1
                self.wd.add(conn)
                threading.Thread(target=self._handle, args=(conn,), daemon=True).start()
        finally:
            self.wd.cancel()
            self.listener.close()
        return code if self.ok else 1

    ok = True

    def _emit_error(self, err: EngineError) -> None:
        res = TrafficResult(
            role="server",
            engine="mptcpkit",
            mode="",
            proto=self.opts.proto,
            ok=False,
            started_at=time.time(),
            ended_at=0.0,
            error=ErrorInfo(err.kind, err.message),
        )
        self.emit(finish(res).to_json())

    def _handle(self, conn: socket.socket) -> None:
        session: _Session | None = None
        sid = ""
        with conn:
            try:
                head = conn.recv(protocol.HEADER, socket.MSG_WAITALL)
                if not head:  # a connect-mode probe: connected and closed
                    with self.lock:
                        if self.connect_session in self.sessions:
                            self.sessions[self.connect_session].probes += 1
                    return
                if len(head) < protocol.HEADER:
                    raise protocol.ProtocolError("short hello")
                hello = protocol.decode_body(recv_exact(conn, protocol.frame_length(head), "reading the hello"))
                sid = str(hello.get("session", ""))
                if hello.get("v") != protocol.VERSION:
                    send_frame(conn, {"ok": False, "error": f"unsupported version {hello.get('v')}"})
                    raise protocol.ProtocolError(f"client speaks version {hello.get('v')}")
                with self.lock:
                    session = self.sessions.get(sid)
                    if session is None:
                        expected = int(hello.get("streams", 1)) if hello["kind"] == "bulk" else 1
                        session = self.sessions[sid] = _Session(hello=hello, expected=expected)
                    if hello["kind"] == "connect":
                        self.connect_session = sid
                send_frame(conn, {"ok": True})
                kind = hello["kind"]
                if kind == "bulk":
                    self._bulk(conn, hello, session)
                elif kind == "rr":
                    self._rr(conn, hello, session)
                elif kind == "connect":
                    done = recv_frame(conn, "waiting for the end of the connect session")
                    t_wait = time.monotonic() + 2.0  # probe handlers may still be queued behind accept()
                    while session.probes < int(done.get("probes", 0)) and time.monotonic() < t_wait:
                        time.sleep(0.01)
                    send_frame(conn, {"ok": True, "probes": session.probes})
                    session.results.append((0, None))
                else:
                    raise protocol.ProtocolError(f"unknown session kind {kind!r}")
            except BaseException as exc:
                err = classify(exc, self.wd)
                if session is None:
                    self._emit_error(err)
                    self.ok = False
                    if self.opts.once:
                        self.finished.set()
                        _shutdown(self.listener)
                    return
                session.error = session.error or err
                session.results.append((int(session.hello.get("conn", 0)), None))
            self._maybe_finish(sid)

    def _bulk(self, conn: socket.socket, hello: dict[str, Any], session: _Session) -> None:
        i = int(hello.get("conn", 0))
        seed = int(hello["seed"])
        mode = str(hello["mode"])
        spec = BulkSpec(
            send=mode in ("bulk-download", "bulk-both"),
            recv=mode in ("bulk-upload", "bulk-both"),
            send_seed=seed * 1000 + 2 * i + 1,
            recv_seed=seed * 1000 + 2 * i,
            size=hello.get("bytes"),
            duration=hello.get("duration"),
            integrity=str(hello["integrity"]),
            interval=float(hello.get("interval") or self.opts.interval),
            corrupt_offset=self.opts.corrupt_offset,
        )
        outcome = run_bulk(conn, spec, self.opts.proto, i)
        with self.lock:
            session.results.append((i, outcome))

    def _rr(self, conn: socket.socket, hello: dict[str, Any], session: _Session) -> None:
        q, r = (int(x) for x in hello["rr"])
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        resp = random.Random(int(hello["seed"]) + 1).randbytes(r)
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
        stats = connection_stats(0, conn, self.opts.proto, [])
        send_frame(conn, {"transactions": n_tx})
        with self.lock:
            session.rr = RrResult(
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
            session.results.append((0, BulkOutcome(stats=stats)))

    def _maybe_finish(self, sid: str) -> None:
        with self.lock:
            session = self.sessions.get(sid)
            if session is None or session.done or len(session.results) < session.expected:
                return
            session.done = True
            del self.sessions[sid]
        hello = session.hello
        res = TrafficResult(
            role="server",
            engine="mptcpkit",
            mode=str(hello.get("mode")),
            proto=self.opts.proto,
            ok=False,
            started_at=time.time(),
            ended_at=0.0,
            options={
                k: hello.get(k) for k in ("session", "bytes", "duration", "integrity", "streams", "seed")
            },
        )
        for i, o in sorted(session.results, key=lambda x: x[0]):
            if o is None:
                continue
            if o.stats is not None:
                res.connections.append(o.stats)
            res.streams += bulk_streams(o, i, str(hello.get("integrity")), client=False)
        if res.streams:
            res.started_at = min(s.start for s in res.streams)
        res.rr = session.rr
        if hello.get("kind") == "connect":
            res.connect = ConnectResult(
                attempts=session.probes,
                successes=session.probes,
                failures=0,
                samples_us=[],
                p50_us=0,
                p90_us=0,
                p99_us=0,
                mean_us=0,
            )
        if session.error is not None:
            res.error = ErrorInfo(session.error.kind, session.error.message)
        finish(res)
        if not res.ok:
            self.ok = False
        self.emit(res.to_json())
        if self.opts.once:
            self.finished.set()
            _shutdown(self.listener)


def ready_line(port: int) -> str:
    return json.dumps({"ready": True, "port": port, "pid": os.getpid()}, separators=(",", ":"))
