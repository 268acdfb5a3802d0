"""A paced application stream: fixed-size messages at a fixed rate, each acknowledged by the receiver.

Models a video call or a game stream: the application offers `rate` bit/s in `message_size` messages, and what
matters is how late each message arrives, not the throughput. Message i is due at t0 + i * interval; its delay
is measured at the sender from that due time until the receiver's 8-byte acknowledgement arrives, so a sender
blocked by a full send buffer and head-of-line blocking at the receiver both show up (on top of one RTT).
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

from mptcpkit.lab.traffic.model import PacedResult, TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions
from mptcpkit.lab.traffic.sockets import (
    EngineError,
    Watchdog,
    dial,
    handshake,
    hello,
    recv_exact,
    recv_frame,
    send_frame,
)
from mptcpkit.lab.traffic.stats import Sampler, connection_stats, latency_summary

_SEQ = struct.Struct("!Q")
END = 2**64 - 1
MIN_MESSAGE = _SEQ.size


def client_paced(opts: ClientOptions, wd: Watchdog, session: str, result: TrafficResult) -> None:
    size = opts.message_size
    if opts.rate is None or opts.rate <= 0:
        raise EngineError("usage", "paced mode needs --rate BITS_PER_S")
    if size < MIN_MESSAGE:
        raise EngineError("usage", f"--message-size must be >= {MIN_MESSAGE}")
    if opts.count is None and opts.duration is None:
        raise EngineError("usage", "paced mode needs --count N or --duration S")
    interval = size * 8 / opts.rate
    total = opts.count if opts.count is not None else int((opts.duration or 0) / interval)
    sock, _ = dial(opts, wd)
    with sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handshake(sock, hello(opts, session, 0, "stream"))
        due = [0.0] * total
        delays: list[float] = []
        errors: list[BaseException] = []
        summary: dict[str, Any] = {}

        def read_acks() -> None:
            try:
                while True:
                    (seq,) = _SEQ.unpack(recv_exact(sock, _SEQ.size, "reading acknowledgements"))
                    if seq == END:
                        summary.update(recv_frame(sock, "reading the receiver's summary"))
                        return
                    delays.append((time.perf_counter() - due[seq]) * 1e6)
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read_acks, daemon=True)
        sampler = Sampler(opts.interval, sock, opts.proto, None)
        pad = bytes(size - _SEQ.size)
        late = 0
        reader.start()
        sampler.start()
        t0 = time.perf_counter()
        for i in range(total):
            due[i] = t0 + i * interval
            wait = due[i] - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif -wait > interval:
                late += 1
            sock.sendall(_SEQ.pack(i) + pad)
            if errors:
                break
        dur = time.perf_counter() - t0
        sock.shutdown(socket.SHUT_WR)
        reader.join()
        sampler.stop()
        if errors:
            raise errors[0]
        result.connections.append(connection_stats(0, sock, opts.proto, sampler.subflow_samples))
    result.paced = PacedResult(
        message_size=size,
        rate_bps=opts.rate,
        messages_sent=total,
        messages_acked=len(delays),
        duration_s=dur,
        delay=latency_summary(delays),
        late_sends=late,
    )
    if int(summary.get("messages", -1)) != total or len(delays) != total:
        raise EngineError(
            "protocol", f"sent {total} messages, receiver got {summary.get('messages')}, {len(delays)} acked"
        )


def serve_paced(conn: socket.socket, hello_frame: dict[str, Any]) -> int:
    """Acknowledge every whole message until the sender half-closes; returns the message count."""
    size = int(hello_frame.get("message_size") or 1024)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = bytearray(size)
    view = memoryview(buf)
    n = 0
    while True:
        got = 0
        while got < size:
            k = conn.recv_into(view[got:])
            if k == 0:
                break
            got += k
        if got < size:
            if got:
                raise EngineError("reset", f"sender closed mid-message after {n} messages")
            break
        conn.sendall(buf[: _SEQ.size])  # the message's own sequence number is the acknowledgement
        n += 1
    conn.sendall(_SEQ.pack(END))
    send_frame(conn, {"messages": n})
    return n
