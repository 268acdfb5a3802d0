"""The engine server: accepts connections, groups them into sessions by the hello's id, one result per session."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mptcpkit.lab.traffic import protocol
from mptcpkit.lab.traffic.bulk import BulkOutcome, bulk_streams, run_bulk, server_spec
from mptcpkit.lab.traffic.connect import serve_probe, server_connect_result
from mptcpkit.lab.traffic.model import ConnectionStats, ErrorInfo, PacedResult, RrResult
from mptcpkit.lab.traffic.options import ServerOptions
from mptcpkit.lab.traffic.paced import serve_paced
from mptcpkit.lab.traffic.results import finish, mark_cpu_baseline, server_result
from mptcpkit.lab.traffic.rr import serve_rr, server_rr_result
from mptcpkit.lab.traffic.sockets import (
    EngineError,
    Watchdog,
    classify,
    family_of,
    make_socket,
    recv_exact,
    recv_frame,
    send_frame,
    shutdown,
)
from mptcpkit.lab.traffic.stats import connection_stats, latency_summary

PROBE_WAIT_S = 2.0


@dataclass(slots=True)
class _Session:
    hello: dict[str, Any]
    expected: int
    results: list[tuple[int, BulkOutcome | None]] = field(default_factory=list)
    rr: RrResult | None = None
    paced: PacedResult | None = None
    accepts: list[float] = field(default_factory=list)
    error: EngineError | None = None
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
        self.ok = True
        self.listener = make_socket(opts.proto, family_of(opts.bind), opts.sndbuf, opts.rcvbuf)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((opts.bind, opts.port))
        self.listener.listen(1024)
        self.wd.add(self.listener)
        self.port = int(self.listener.getsockname()[1])

    def serve(self) -> int:
        """Accept until --once is satisfied or --timeout expires; returns the exit code."""
        mark_cpu_baseline()
        try:
            while not self.finished.is_set():
                try:
                    conn, _ = self.listener.accept()
                except OSError as exc:
                    if self.finished.is_set():
                        break
                    self._emit_error(classify(exc, self.wd))
                    return 1
                accepted = time.perf_counter()
                self.wd.add(conn)
                threading.Thread(target=self._handle, args=(conn, accepted), daemon=True).start()
        finally:
            self.wd.cancel()
            self.listener.close()
        return 0 if self.ok else 1

    def _emit_error(self, err: EngineError) -> None:
        res = server_result("", self.opts.proto, {})
        res.error = ErrorInfo(err.kind, err.message)
        self.emit(finish(res).to_json())

    def _probe(self, conn: socket.socket, accepted: float) -> None:
        """A connect-mode probe (empty, or the probe magic): count it for the running connect session."""
        with self.lock:
            session = self.sessions.get(self.connect_session or "")
            if session is not None:
                session.accepts.append(accepted)

    def _handle(self, conn: socket.socket, accepted: float) -> None:
        session: _Session | None = None
        sid = ""
        with conn:
            try:
                head = conn.recv(protocol.HEADER, socket.MSG_WAITALL)
                if not head or head == protocol.PROBE_MAGIC:
                    self._probe(conn, accepted)
                    if head:  # the client counts failed probes itself
                        with contextlib.suppress(OSError, EngineError, protocol.ProtocolError):
                            serve_probe(conn)
                    return
                if len(head) < protocol.HEADER:
                    raise protocol.ProtocolError("short hello")
                hello = protocol.decode_body(
                    recv_exact(conn, protocol.frame_length(head), "reading the hello")
                )
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
                self._run_kind(conn, hello, session)
            except BaseException as exc:
                err = classify(exc, self.wd)
                if session is None:
                    self._emit_error(err)
                    self.ok = False
                    if self.opts.once:
                        self.finished.set()
                        shutdown(self.listener)
                    return
                session.error = session.error or err
                session.results.append((int(session.hello.get("conn", 0)), None))
            finally:
                self.wd.discard(conn)
            self._maybe_finish(sid)

    def _run_kind(self, conn: socket.socket, hello: dict[str, Any], session: _Session) -> None:
        kind = hello["kind"]
        if kind == "bulk":
            i = int(hello.get("conn", 0))
            outcome = run_bulk(
                conn, server_spec(hello, self.opts.interval, self.opts.corrupt_offset), self.opts.proto, i
            )
            with self.lock:
                session.results.append((i, outcome))
        elif kind == "rr":
            n_tx = serve_rr(conn, hello)
            q, r = (int(x) for x in hello["rr"])
            self._one_connection(conn, session, rr=server_rr_result(q, r, n_tx))
        elif kind == "stream":
            n = serve_paced(conn, hello)
            size = int(hello.get("message_size") or 1024)
            paced = PacedResult(size, float(hello.get("rate") or 0), n, n, 0.0, latency_summary([]))
            self._one_connection(conn, session, paced=paced)
        elif kind == "connect":
            done = recv_frame(conn, "waiting for the end of the connect session")
            t_wait = time.monotonic() + PROBE_WAIT_S  # probe handlers may still be queued behind accept()
            while len(session.accepts) < int(done.get("probes", 0)) and time.monotonic() < t_wait:
                time.sleep(0.01)
            send_frame(conn, {"ok": True, "probes": len(session.accepts)})
            session.results.append((0, None))
        else:
            raise protocol.ProtocolError(f"unknown session kind {kind!r}")

    def _one_connection(
        self,
        conn: socket.socket,
        session: _Session,
        rr: RrResult | None = None,
        paced: PacedResult | None = None,
    ) -> None:
        stats: ConnectionStats = connection_stats(0, conn, self.opts.proto, [])
        with self.lock:
            session.rr = rr
            session.paced = paced
            session.results.append((0, BulkOutcome(stats=stats)))

    def _maybe_finish(self, sid: str) -> None:
        with self.lock:
            session = self.sessions.get(sid)
            if session is None or session.done or len(session.results) < session.expected:
                return
            session.done = True
            del self.sessions[sid]
        hello = session.hello
        res = server_result(
            str(hello.get("mode")),
            self.opts.proto,
            {k: hello.get(k) for k in ("session", "bytes", "duration", "integrity", "streams", "seed")},
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
        res.paced = session.paced
        if hello.get("kind") == "connect":
            res.connect = server_connect_result(sorted(session.accepts))
        if session.error is not None:
            res.error = ErrorInfo(session.error.kind, session.error.message)
        finish(res)
        if not res.ok:
            self.ok = False
        self.emit(res.to_json())
        if self.opts.once:
            self.finished.set()
            shutdown(self.listener)


def ready_line(port: int) -> str:
    return json.dumps({"ready": True, "port": port, "pid": os.getpid()}, separators=(",", ":"))
