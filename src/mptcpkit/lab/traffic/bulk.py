"""Bulk transfers: the pattern stream in one or both directions on N parallel connections, checked end to end.

Both ends run `run_bulk` after the hello; each derives its `BulkSpec` from the hello (client: `client_bulk`,
server: `server_spec`). The hot loops only call sendall/recv_into on 1 MiB buffers.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from mptcpkit.lab.traffic import kmem, protocol, stream
from mptcpkit.lab.traffic.model import (
    ConnectionStats,
    KernelMemory,
    StreamResult,
    SubflowSample,
    TrafficResult,
)
from mptcpkit.lab.traffic.options import ClientOptions
from mptcpkit.lab.traffic.results import stream_result
from mptcpkit.lab.traffic.sockets import (
    EngineError,
    Watchdog,
    dial,
    handshake,
    hello,
    recv_exact,
    send_frame,
    shutdown,
)
from mptcpkit.lab.traffic.stats import Sampler, connection_stats, subflow_stats


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


def _recv_stream(sock: socket.socket, sink: stream.StreamSink) -> tuple[dict[str, Any], bytes]:
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
            out.peer_sender, rest = _recv_stream(sock, sink)
            rend = time.time()
            out.received = {
                "bytes": sink.data_bytes,
                "sha256": sink.hexdigest(),
                "first_bad": sink.first_bad,
                "start": rstart,
                "end": rend,
            }
    except BaseException:
        shutdown(sock)  # unblocks our sender thread, which may be stuck in sendall
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


def server_spec(hello_frame: dict[str, Any], interval: float, corrupt_offset: int | None) -> BulkSpec:
    """The server's half of connection `conn` of a bulk session (seeds mirror the client's)."""
    i = int(hello_frame.get("conn", 0))
    seed = int(hello_frame["seed"])
    mode = str(hello_frame["mode"])
    return BulkSpec(
        send=mode in ("bulk-download", "bulk-both"),
        recv=mode in ("bulk-upload", "bulk-both"),
        send_seed=seed * 1000 + 2 * i + 1,
        recv_seed=seed * 1000 + 2 * i,
        size=hello_frame.get("bytes"),
        duration=hello_frame.get("duration"),
        integrity=str(hello_frame["integrity"]),
        interval=float(hello_frame.get("interval") or interval),
        corrupt_offset=corrupt_offset,
    )


class _MemoryProbe:
    """Measures kernel memory once every connection finished its hello and the transfer settled."""

    def __init__(self, opts: ClientOptions) -> None:
        self.wanted = opts.parallel
        self.proto = opts.proto
        self.settle = 0.5 if opts.duration is None else min(1.0, opts.duration / 3)
        self.before = kmem.snapshot()
        self.result: KernelMemory | None = None
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if len(self._socks) != self.wanted:
                return
        threading.Thread(target=self._take, daemon=True).start()

    def _take(self) -> None:
        time.sleep(self.settle)
        during = kmem.snapshot()
        buffers = objects = 0
        for sock in self._socks:
            buffers += kmem.socket_buffer_bytes(sock)
            subflows = len(subflow_stats(sock)) if self.proto == "mptcp" else 1
            objects += kmem.socket_object_bytes(
                during.slabs, self.proto, subflows, sock.family == socket.AF_INET6
            )
        self.result = kmem.difference(self.before, during, self.wanted, own_bytes=buffers + objects)
        self.result.socket_buffer_bytes = buffers
        self.result.socket_object_bytes = objects


def client_bulk(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    if opts.bytes is None and opts.duration is None:
        raise EngineError("usage", "bulk modes need --bytes N or --duration S")
    outcomes: list[BulkOutcome | None] = [None] * opts.parallel
    errors: list[BaseException] = []
    memory = _MemoryProbe(opts) if opts.memory else None

    def one(i: int) -> None:
        try:
            sock, _ = dial(opts, wd)
            with sock:
                handshake(sock, hello(opts, session, i, "bulk"))
                if memory is not None:
                    memory.connected(sock)
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
    if memory is not None:
        result.memory = memory.result
    if errors:
        raise errors[0]
