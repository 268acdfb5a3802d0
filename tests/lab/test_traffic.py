"""Traffic engine: pure stream/framing/argv/parser tests, then real server/client processes in namespaces."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mptcpkit.errors import LabError
from mptcpkit.lab.traffic import engine, iperf3, kmem, protocol, stream
from mptcpkit.lab.traffic.cli import parse_size
from mptcpkit.lab.traffic.model import TrafficResult
from mptcpkit.lab.traffic.options import ClientOptions, ServerOptions
from mptcpkit.lab.traffic.results import stream_result
from mptcpkit.lab.traffic.stats import latency_summary, percentile

FIXTURES = Path(__file__).parent / "fixtures"
PY = (sys.executable,)


# ---- pure: the stream ------------------------------------------------------------------------------------


def _feed(sink: stream.StreamSink, data: bytes, rng: random.Random) -> None:
    """Deliver `data` into the sink in random-sized receives, like a socket would."""
    pos = 0
    while pos < len(data) and not sink.ended:
        room = stream.BUFFER - sink.fill
        n = min(room, len(data) - pos, rng.choice([1, 3, 7, 9, 1000, 65536, 300000, 1 << 20]))
        sink.view[sink.fill : sink.fill + n] = data[pos : pos + n]
        sink.consume(n)
        pos += n


def _source_bytes(seed: int, size: int | None, blocks: int = 0) -> tuple[bytes, str | None]:
    src = stream.StreamSource(seed, sha256=True)
    out = bytearray()
    if size is not None:
        while len(out) < size:
            out += src.next_chunk(size - len(out))
    else:
        for _ in range(blocks):
            out += src.next_chunk()
    return bytes(out), src.hexdigest()


def test_source_matches_reference_and_counters_make_blocks_unique() -> None:
    data, digest = _source_bytes(7, 3 * stream.BUFFER + 12345)
    assert data == stream.expected_bytes(7, 0, len(data))
    assert digest == hashlib.sha256(data).hexdigest()
    assert data[: stream.BLOCK] != data[stream.BLOCK : 2 * stream.BLOCK]
    assert data[stream.BLOCK + 8 : 2 * stream.BLOCK] == data[8 : stream.BLOCK]  # template shared, cheap


@pytest.mark.parametrize("integrity", ["sha256", "verify", "none"])
@pytest.mark.parametrize("size", [None, 2 * stream.BUFFER + 5, stream.BLOCK * 3 + 3, 100])
def test_sink_accepts_intact_stream_any_chunking(integrity: str, size: int | None) -> None:
    data, digest = _source_bytes(3, size, blocks=3)
    summary = b'{"bytes":1}'
    rest = b"\x00\x00\x00\x02{}"
    for trial in range(3):
        sink = stream.StreamSink(3, integrity=integrity, size=size)
        _feed(sink, data + stream.end_record(summary) + rest, random.Random(trial))
        assert sink.ended and sink.first_bad is None
        assert sink.data_bytes == len(data)
        assert sink.hexdigest() == (digest if integrity == "sha256" else None)
        assert sink.trailer is not None
        tail = bytes(sink.trailer)
        parsed = stream.parse_trailer(tail)
        if parsed is not None:  # the sink stops at the record; the socket layer reads the remainder
            assert parsed[0] == summary
            assert rest.startswith(parsed[1])


@pytest.mark.parametrize("integrity", ["sha256", "verify"])
@pytest.mark.parametrize("offset", [0, 5, 100, stream.BLOCK + 3, stream.BUFFER + 70000])
def test_sink_catches_a_flipped_byte(integrity: str, offset: int) -> None:
    data, digest = _source_bytes(5, 2 * stream.BUFFER)
    bad = bytearray(data)
    bad[offset] ^= 0x01
    sink = stream.StreamSink(5, integrity=integrity, size=len(data))
    _feed(sink, bytes(bad) + stream.end_record(b"{}"), random.Random(1))
    if integrity == "verify" or offset % stream.BLOCK < stream.COUNTER:
        assert sink.first_bad == offset
    if integrity == "sha256":
        assert sink.hexdigest() != digest


def test_sink_catches_a_swapped_block() -> None:
    data, _ = _source_bytes(9, None, blocks=1)
    b = stream.BLOCK
    swapped = data[:b] + data[2 * b : 3 * b] + data[b : 2 * b] + data[3 * b :]
    sink = stream.StreamSink(9, integrity="verify", size=None)
    _feed(sink, swapped + stream.end_record(b"{}"), random.Random(0))
    assert sink.first_bad == b


@pytest.mark.parametrize("offset", [0, 7, stream.BLOCK + 2, stream.BUFFER + 5 * stream.BLOCK + 4])
def test_none_mode_counter_check_is_exact_at_any_chunking(offset: int) -> None:
    """`none` on a duration run checks all counters of a piece at once; misplaced data is still located."""
    data, _ = _source_bytes(4, None, blocks=3)
    b = stream.BLOCK
    swapped = data[:b] + data[2 * b : 3 * b] + data[b : 2 * b] + data[3 * b :]
    flipped = bytearray(data)
    flipped[offset] ^= 0x10
    for payload, first_bad in ((swapped, b), (bytes(flipped), offset), (data, None)):
        for trial in range(6):
            sink = stream.StreamSink(4, integrity="none", size=None)
            _feed(sink, payload + stream.end_record(b"{}"), random.Random(trial))
            assert sink.ended and sink.data_bytes == len(data)
            assert sink.first_bad == first_bad


def test_parse_trailer_incomplete_then_complete() -> None:
    rec = stream.end_record(b'{"a":1}')
    assert stream.parse_trailer(rec[:5]) is None
    assert stream.parse_trailer(rec[:-1]) is None
    assert stream.parse_trailer(rec + b"xy") == (b'{"a":1}', b"xy")


def test_control_frames_roundtrip_and_reject_garbage() -> None:
    frame = protocol.encode_frame({"v": 1, "mode": "rr"})
    assert protocol.decode_body(frame[protocol.HEADER :]) == {"v": 1, "mode": "rr"}
    assert protocol.frame_length(frame[: protocol.HEADER]) == len(frame) - protocol.HEADER
    with pytest.raises(protocol.ProtocolError):
        protocol.frame_length(b"GET ")
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_body(b"[1]")


def test_probe_frames_and_latency_summary() -> None:
    probe = protocol.encode_probe(65536)
    assert probe[: protocol.HEADER] == protocol.PROBE_MAGIC and protocol.decode_probe_size(probe[4:]) == 65536
    with pytest.raises(protocol.ProtocolError):  # the magic can never be mistaken for a frame header
        protocol.frame_length(protocol.PROBE_MAGIC)
    s = latency_summary([float(v) for v in range(1, 1001)])
    assert s.count == 1000 and s.p50_us == pytest.approx(500.5) and s.p999_us == pytest.approx(999.001)
    assert s.min_us == 1 and s.max_us == 1000 and len(s.samples_us) == 1000


def test_kernel_memory_parsers() -> None:
    sockstat = "sockets: used 17\nTCP: inuse 1 orphan 0 tw 497 alloc 3 mem 8957\nUDP: inuse 0 mem 0\n"
    assert kmem.parse_sockstat_tcp_mem(sockstat) == 8957 and kmem.parse_sockstat_tcp_mem("") == 0
    slabinfo = (
        "slabinfo - version: 2.1\n"
        "MPTCP                 64     64   1984   16    8 : tunables    0    0    0 : slabdata      4      4      0\n"
        "TCP                   65     65   2368   13    8 : tunables    0    0    0 : slabdata      5      5      0\n"
        "kmalloc-64          9000   9000     64   64    1 : tunables    0    0    0 : slabdata    140    140      0\n"
    )
    slabs = kmem.parse_slabinfo(slabinfo)
    assert slabs == {"MPTCP": (64, 1984), "TCP": (65, 2368)}
    before = kmem.MemSnapshot(100, {"MPTCP": (64, 1984), "TCP": (65, 2368)})
    during = kmem.MemSnapshot(110, {"MPTCP": (74, 1984), "TCP": (85, 2368)})
    mem = kmem.difference(before, during, 10)
    assert mem.sockstat_mem_bytes == 10 * 4096 and mem.slab_bytes == 10 * 1984 + 20 * 2368
    assert mem.per_connection_bytes == pytest.approx((40960 + 19840 + 47360) / 10)
    assert mem.slabs == {"MPTCP": 10, "TCP": 20}


def test_stream_result_verdicts() -> None:
    snd = {"bytes": 10, "sha256": "aa", "start": 1.0, "end": 2.0}
    rcv = {"bytes": 10, "sha256": "aa", "first_bad": None, "start": 1.0, "end": 3.0, "samples": []}
    ok = stream_result("upload", 0, "sha256", snd, rcv)
    assert ok.integrity_ok is True and ok.goodput_bps == pytest.approx(40.0)
    assert stream_result("upload", 0, "sha256", snd, {**rcv, "sha256": "bb"}).integrity_ok is False
    assert stream_result("upload", 0, "verify", snd, {**rcv, "bytes": 9}).integrity_ok is False
    assert stream_result("upload", 0, "none", snd, rcv).integrity_ok is None


def test_percentile_and_sizes() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([5.0], 99) == 5.0
    assert parse_size("64K") == 65536 and parse_size("10M") == 10 << 20 and parse_size("1000") == 1000


# ---- pure: runner API and iperf3 -------------------------------------------------------------------------


def test_argv_builders() -> None:
    srv = engine.server_argv(ServerOptions(bind="10.0.1.2", port=0, once=True, timeout=30), python=PY)
    assert srv == [
        *PY,
        "-m",
        "mptcpkit.lab.traffic",
        "server",
        "--bind",
        "10.0.1.2",
        "--port",
        "0",
        "--proto",
        "mptcp",
        "--timeout",
        "30",
        "--once",
    ]
    cli = engine.client_argv(
        ClientOptions(
            connect="10.0.1.2",
            port=5000,
            mode="bulk-upload",
            bytes=1 << 20,
            parallel=2,
            integrity="verify",
            interval=0.05,
            proto="tcp",
        ),
        python=("python3",),
    )
    assert cli == [
        "python3",
        "-m",
        "mptcpkit.lab.traffic",
        "client",
        "--connect",
        "10.0.1.2",
        "--mode",
        "bulk-upload",
        "--port",
        "5000",
        "--proto",
        "tcp",
        "--interval",
        "0.05",
        "--bytes",
        "1048576",
        "--parallel",
        "2",
        "--integrity",
        "verify",
    ]
    rr = engine.client_argv(
        ClientOptions(connect="::1", port=1, mode="rr", duration=2.5, rr_size=(100, 2000))
    )
    assert rr[-4:] == ["--duration", "2.5", "--rr-size", "100:2000"]


def test_parse_ready_and_results() -> None:
    assert engine.parse_ready('{"ready":true,"port":4242,"pid":1}') == 4242
    with pytest.raises(LabError, match="failed to start"):
        engine.parse_ready('{"ok":false,"error":{"kind":"io","message":"Address in use"}}')
    with pytest.raises(LabError, match="no result"):
        engine.parse_result('{"ready":true,"port":1}\n')
    res = TrafficResult(
        role="client", engine="mptcpkit", mode="rr", proto="tcp", ok=True, started_at=1.0, ended_at=2.0
    )
    assert engine.parse_result('{"ready":true,"port":1}\n' + res.to_json() + "\n") == res


def test_iperf3_parser_on_captured_mptcpize_runs() -> None:
    up = iperf3.parse((FIXTURES / "iperf3_mptcpize_upload.json").read_text(), mode="bulk-upload")
    assert up.ok and up.engine == "iperf3" and up.error is None
    assert up.bytes_total == 1033633792
    assert up.goodput_bps == pytest.approx(8264161424.114077)
    (s,) = up.streams
    assert s.direction == "upload" and s.integrity_ok is None
    assert s.samples and s.samples[-1].bytes == s.bytes_received  # receiver (server) samples
    assert up.connections[0].mss == 1448 and up.connections[0].local.startswith("10.9.1.1:")
    assert up.options["retransmits"] == 45
    assert up.cpu is not None and up.cpu.source == "iperf3"  # its cpu_utilization_percent x duration
    assert up.cpu.sys_s == pytest.approx(0.7795, rel=0.01) and up.cpu.peer_sys_s == pytest.approx(
        0.2305, rel=0.01
    )
    down = iperf3.parse((FIXTURES / "iperf3_mptcpize_download.json").read_text(), mode="bulk-download")
    assert down.streams[0].direction == "download" and down.bytes_total == 20 << 20
    assert TrafficResult.from_json(down.to_json()) == down
    bad = iperf3.parse((FIXTURES / "iperf3_refused.json").read_text())
    assert not bad.ok and bad.error is not None and bad.error.kind == "refused"
    with pytest.raises(ValueError):
        iperf3.parse("not json")


def test_iperf3_argv() -> None:
    assert iperf3.supports_mptcp("  -m, --mptcp   use MPTCP") and not iperf3.supports_mptcp("-J, --json")
    c = iperf3.Iperf3Client(connect="10.0.1.2", port=5201, mode="bulk-download", duration=2)
    assert iperf3.client_argv(c, wrapper="mptcpize") == [
        "mptcpize",
        "run",
        "iperf3",
        "-c",
        "10.0.1.2",
        "-p",
        "5201",
        "-J",
        "--get-server-output",
        "-i",
        "0.1",
        "-t",
        "2",
        "-R",
    ]
    assert iperf3.client_argv(c, wrapper="native")[:2] == ["iperf3", "-c"]
    # whole seconds, never 0 (iperf3's "forever"): a fractional scenario duration must still end
    assert [iperf3.whole_seconds(d) for d in (0.2, 0.5, 1.0, 2.0000000001, 2.5, 3)] == [1, 1, 1, 2, 3, 3]
    short = iperf3.Iperf3Client(connect="10.0.1.2", port=5201, duration=0.5)
    assert iperf3.client_argv(short)[-2:] == ["-t", "1"]
    assert "--mptcp" in iperf3.client_argv(c, wrapper="native")
    assert iperf3.server_argv("0.0.0.0", 5201, wrapper="mptcpkit")[:4] == ["mptcpkit", "run", "--", "iperf3"]
    assert iperf3.server_argv("0.0.0.0", 5201, proto="tcp")[0] == "iperf3"


# ---- real processes in namespaces ------------------------------------------------------------------------


def _ns(ns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv]


class Procs:
    """Spawned processes, killed at teardown even when the test fails."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def server(self, ns: str, opts: ServerOptions) -> tuple[subprocess.Popen[str], int]:
        p = subprocess.Popen(_ns(ns, engine.server_argv(opts, python=PY)), stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout is not None
        return p, engine.parse_ready(p.stdout.readline())

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    yield ps
    ps.close()


def run_client(ns: str, opts: ClientOptions) -> tuple[int, TrafficResult]:
    cp = subprocess.run(
        _ns(ns, engine.client_argv(opts, python=PY)), capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in cp.stderr, cp.stderr
    return cp.returncode, engine.parse_result(cp.stdout)


def server_result(p: subprocess.Popen[str]) -> TrafficResult:
    out, _ = p.communicate(timeout=30)
    return engine.parse_result(out)


SessionRunner = Callable[..., tuple[int, TrafficResult, TrafficResult]]


@pytest.fixture
def session(veth_pair: tuple[str, str], procs: Procs) -> SessionRunner:
    """Run one server (10.0.1.2) + client (10.0.1.1) session; returns (client rc, client, server result)."""
    cli_ns, srv_ns = veth_pair

    def run(
        server_proto: str = "mptcp", server_corrupt: int | None = None, **client: object
    ) -> tuple[int, TrafficResult, TrafficResult]:
        p, port = procs.server(
            srv_ns,
            ServerOptions(
                bind="10.0.1.2",
                port=0,
                once=True,
                timeout=30,
                proto=server_proto,
                corrupt_offset=server_corrupt,
            ),
        )
        rc, res = run_client(cli_ns, ClientOptions(connect="10.0.1.2", port=port, timeout=30, **client))  # type: ignore[arg-type]
        return rc, res, server_result(p)

    return run


@pytest.mark.needs_root
@pytest.mark.parametrize("mode", ["bulk-upload", "bulk-download", "bulk-both"])
def test_bulk_small_transfers_are_intact(session: SessionRunner, mode: str) -> None:
    size = 3 * stream.BUFFER + 777
    rc, res, srv = session(mode=mode, bytes=size, interval=0.02)
    assert rc == 0 and res.ok and res.error is None, res.error
    assert srv.ok and srv.mode == mode
    directions = {
        "bulk-upload": ["upload"],
        "bulk-download": ["download"],
        "bulk-both": ["upload", "download"],
    }
    assert sorted(s.direction for s in res.streams) == sorted(directions[mode])
    for s in res.streams + srv.streams:
        assert s.bytes_received == s.bytes_sent == size
        assert s.integrity_ok is True and s.sender_sha256 == s.receiver_sha256 is not None
        assert s.samples and s.samples[-1].bytes == size and s.goodput_bps > 0
    conn = res.connections[0]
    assert not conn.fallback and conn.mptcp_info is not None and conn.mss and conn.mss > 1000
    assert [sf.local for sf in conn.subflows] == ["10.0.1.1"] and conn.subflows[0].remote == "10.0.1.2"
    assert res.bytes_total == size * len(res.streams)


@pytest.mark.needs_root
def test_bulk_by_duration_verify_mode_parallel(session: SessionRunner) -> None:
    rc, res, srv = session(mode="bulk-upload", duration=0.5, integrity="verify", parallel=2)
    assert rc == 0 and res.ok, res.error
    assert len(res.streams) == 2 and len(res.connections) == 2 and len(srv.streams) == 2
    for s in res.streams:
        assert s.integrity_ok is True and s.receiver_sha256 is None and s.bytes_received > 0
        assert s.bytes_received % stream.BUFFER == 0  # duration mode sends whole buffers
        assert 0.4 < s.duration_s < 5


@pytest.mark.needs_root
def test_corrupted_upload_is_caught(session: SessionRunner) -> None:
    rc, res, srv = session(mode="bulk-upload", bytes=2 * stream.BUFFER, corrupt_offset=100_000)
    assert rc == 1 and not res.ok and res.error is None
    (s,) = res.streams
    assert s.integrity_ok is False and s.sender_sha256 != s.receiver_sha256
    assert srv.streams[0].integrity_ok is False and not srv.ok


@pytest.mark.needs_root
def test_corrupted_download_is_located_in_verify_mode(session: SessionRunner) -> None:
    rc, res, _ = session(
        mode="bulk-download", bytes=2 * stream.BUFFER, integrity="verify", server_corrupt=1_500_000
    )
    assert rc == 1
    assert res.streams[0].integrity_ok is False and res.streams[0].first_bad_offset == 1_500_000


@pytest.mark.needs_root
def test_fallback_to_tcp_is_reported(session: SessionRunner) -> None:
    rc, res, srv = session(server_proto="tcp", mode="bulk-upload", bytes=100_000)
    assert rc == 1 and not res.ok and res.fallback
    assert res.fallback_reason is not None and "fell back" in res.fallback_reason
    assert res.streams[0].integrity_ok is True  # the data still arrived; the MPTCP test failed
    assert srv.proto == "tcp" and not srv.fallback


@pytest.mark.needs_root
def test_plain_tcp_mode(session: SessionRunner) -> None:
    rc, res, _ = session(server_proto="tcp", proto="tcp", mode="bulk-both", bytes=500_000)
    assert rc == 0 and res.ok and not res.fallback and res.connections[0].mptcp_info is None


@pytest.mark.needs_root
def test_rr_reports_rate_and_percentiles(session: SessionRunner) -> None:
    rc, res, srv = session(mode="rr", count=300, rr_size=(64, 1500))
    assert rc == 0 and res.ok and res.rr is not None
    assert res.cpu is not None and res.cpu.source == "rusage" and res.cpu.user_s + res.cpu.sys_s > 0
    assert res.rr.transactions == 300 and len(res.rr.latencies_us) == 300
    assert 0 < res.rr.min_us <= res.rr.p50_us <= res.rr.p90_us <= res.rr.p99_us <= res.rr.max_us
    assert res.rr.transactions_per_s > 0 and res.rr.response_size == 1500
    assert srv.rr is not None and srv.rr.transactions == 300


@pytest.mark.needs_root
def test_connect_mode_samples_setup_time(session: SessionRunner) -> None:
    rc, res, srv = session(mode="connect", count=20)
    assert rc == 0 and res.ok and res.connect is not None
    assert res.connect.successes == 20 and len(res.connect.samples_us) == 20 and res.connect.p50_us > 0
    assert not res.connections[0].fallback
    assert srv.connect is not None and srv.connect.successes == 20


@pytest.mark.needs_root
def test_connect_mode_accept_side_and_short_transfers(session: SessionRunner) -> None:
    rc, res, srv = session(
        mode="connect", count=60, bytes=64 << 10, concurrency=4, proto="tcp", server_proto="tcp"
    )
    assert rc == 0 and res.ok, res.error
    c = res.connect
    assert c is not None and c.successes == 60 and c.bytes_per_connection == 64 << 10
    assert c.served is not None and c.completion is not None and c.join is None
    # the accept side comes after the handshake, the last byte after the first
    assert c.served.p50_us > c.p50_us and c.completion.p50_us >= c.served.p50_us
    assert c.served.p50_us <= c.served.p99_us <= c.served.p999_us <= c.served.max_us
    assert c.connections_per_s > 0 and res.goodput_bps == pytest.approx(c.goodput_bps)
    assert c.goodput_bps >= 60 * (64 << 10) * 8 / 60  # 60 transfers took less than a minute
    assert srv.connect is not None and srv.connect.successes == 60 and srv.connect.connections_per_s > 0


@pytest.mark.needs_root
def test_rr_p999_and_paced_stream_delay(session: SessionRunner) -> None:
    rc, res, _ = session(mode="rr", count=2000, rr_size=(1, 1))
    assert rc == 0 and res.rr is not None
    assert res.rr.p99_us <= res.rr.p999_us <= res.rr.max_us
    rc, res, srv = session(mode="stream", rate=8e6, message_size=1024, duration=0.5)
    assert rc == 0 and res.ok, res.error
    p = res.paced
    assert p is not None and p.messages_sent == p.messages_acked == 488  # 0.5 s at 8 Mbit/s of 1 KiB
    assert 0 < p.delay.p50_us <= p.delay.p99_us <= p.delay.max_us and len(p.delay.samples_us) == 488
    assert 0.45 < p.duration_s < 1.0  # paced, not blasted
    assert srv.paced is not None and srv.paced.messages_acked == 488
    argv = ["client", "--connect", "127.0.0.1", "--port", "9", "--mode", "stream", "--duration", "1"]
    cp = subprocess.run([*PY, "-m", "mptcpkit.lab.traffic", *argv], capture_output=True, text=True)
    res = engine.parse_result(cp.stdout)
    assert cp.returncode == 2 and res.error is not None and res.error.kind == "usage", cp.stdout
    assert "--rate" in res.error.message


@pytest.mark.needs_root
def test_bulk_kernel_memory_per_connection(session: SessionRunner) -> None:
    rc, res, _ = session(mode="bulk-download", parallel=20, duration=1.0, memory=True, integrity="none")
    assert rc == 0 and res.ok, res.error
    assert len(res.streams) == 20
    mem = res.memory
    assert mem is not None and mem.connections == 20
    # 20 busy connections hold buffer pages; the counters are machine-wide and SLUB reports slabs in whole
    # pages per CPU, so only a loose lower bound and the slab names
    assert {"TCP", "MPTCP"} <= set(mem.slabs), mem
    # the per-connection figure comes from the client's own sockets: an MPTCP and a TCP socket object each
    # (about 2 KB apiece here) plus their buffers mid-transfer
    slab = kmem.snapshot().slabs
    assert mem.socket_object_bytes == 20 * (slab["MPTCP"][1] + slab["TCP"][1]), mem
    assert mem.socket_buffer_bytes > 0
    assert mem.per_connection_bytes == pytest.approx((mem.socket_buffer_bytes + mem.socket_object_bytes) / 20)


@pytest.mark.needs_root
def test_refused_and_reset_are_errors_not_tracebacks(veth_pair: tuple[str, str], procs: Procs) -> None:
    cli_ns, srv_ns = veth_pair
    rc, res = run_client(cli_ns, ClientOptions(connect="10.0.1.2", port=9, mode="rr", count=1, timeout=5))
    assert rc == 1 and res.error is not None and res.error.kind == "refused"
    p, port = procs.server(srv_ns, ServerOptions(bind="10.0.1.2", port=0))
    copts = ClientOptions(connect="10.0.1.2", port=port, mode="bulk-upload", duration=10, timeout=6)
    client = subprocess.Popen(
        _ns(cli_ns, engine.client_argv(copts, python=PY)), stdout=subprocess.PIPE, text=True
    )
    procs.procs.append(client)
    ss = ["ip", "netns", "exec", srv_ns, "ss", "-Htn", "state", "established", f"( sport = :{port} )"]
    deadline = time.monotonic() + 15
    while not subprocess.run(ss, capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "client never connected"
        time.sleep(0.05)
    time.sleep(0.3)  # mid-stream
    p.kill()
    out, _ = client.communicate(timeout=30)
    res = engine.parse_result(out)
    # usually a reset; sometimes the kernel keeps the MPTCP connection open after the peer died (no
    # MP_FASTCLOSE seen), and only --timeout ends it: both must be a clean error, never a hang
    assert client.returncode == 1 and res.error is not None and res.error.kind in ("reset", "io", "timeout")
    assert "Traceback" not in out


@pytest.mark.needs_root
def test_timeout_bounds_a_silent_server(veth_pair: tuple[str, str], procs: Procs) -> None:
    cli_ns, srv_ns = veth_pair
    code = (
        "import socket,time;s=socket.socket();s.bind(('10.0.1.2',5999));s.listen();"
        "print(1,flush=True);time.sleep(30)"
    )
    p = subprocess.Popen(_ns(srv_ns, [sys.executable, "-c", code]), stdout=subprocess.PIPE, text=True)
    procs.procs.append(p)
    assert p.stdout is not None and p.stdout.readline()
    t = time.monotonic()
    rc, res = run_client(
        cli_ns, ClientOptions(connect="10.0.1.2", port=5999, mode="rr", count=1, timeout=1, proto="tcp")
    )
    assert rc == 1 and res.error is not None and res.error.kind == "timeout"
    assert time.monotonic() - t < 10


@pytest.fixture
def two_paths(veth_pair: tuple[str, str]) -> tuple[str, str]:
    """A second veth pair (10.0.2.1 <-> 10.0.2.2) and an MPTCP `subflow` endpoint on the client."""
    cli_ns, srv_ns = veth_pair
    cmds = [
        ["ip", "link", "add", "mkttr0", "netns", cli_ns, "type", "veth", "peer", "mkttr1", "netns", srv_ns],
        ["ip", "-n", cli_ns, "link", "set", "mkttr0", "name", "eth1"],
        ["ip", "-n", srv_ns, "link", "set", "mkttr1", "name", "eth1"],
        ["ip", "-n", cli_ns, "addr", "add", "10.0.2.1/24", "dev", "eth1"],
        ["ip", "-n", srv_ns, "addr", "add", "10.0.2.2/24", "dev", "eth1"],
        ["ip", "-n", cli_ns, "link", "set", "eth1", "up"],
        ["ip", "-n", srv_ns, "link", "set", "eth1", "up"],
        ["ip", "-n", cli_ns, "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"],
        ["ip", "-n", srv_ns, "mptcp", "limits", "set", "subflows", "2", "add_addr_accepted", "2"],
        ["ip", "-n", cli_ns, "mptcp", "endpoint", "add", "10.0.2.1", "dev", "eth1", "subflow"],
    ]
    for c in cmds:  # the links live in the namespaces, so the namespace teardown removes them
        subprocess.run(c, check=True)
    return cli_ns, srv_ns


@pytest.mark.needs_root
def test_two_subflows_reported_with_their_addresses(two_paths: tuple[str, str], procs: Procs) -> None:
    cli_ns, srv_ns = two_paths
    p, port = procs.server(srv_ns, ServerOptions(bind="0.0.0.0", port=0, once=True, timeout=30))
    rc, res = run_client(
        cli_ns,
        ClientOptions(
            connect="10.0.1.2", port=port, mode="bulk-upload", duration=1.0, interval=0.05, timeout=30
        ),
    )
    srv = server_result(p)
    assert rc == 0 and res.ok, res.error
    conn = res.connections[0]
    pairs = {(sf.local, sf.remote) for sf in conn.subflows}
    assert pairs == {("10.0.1.1", "10.0.1.2"), ("10.0.2.1", "10.0.1.2")}, pairs
    assert conn.mptcp_info is not None and conn.mptcp_info["subflows"] == 1
    assert all(sf.bytes_sent > 0 for sf in conn.subflows), conn.subflows  # both links carried data
    last = conn.subflow_samples[-1]
    assert {sb.local.split(":")[0] for sb in last.subflows} == {"10.0.1.1", "10.0.2.1"}
    assert len(srv.connections[0].subflows) == 2


@pytest.mark.needs_root
def test_connect_with_a_joining_subflow(two_paths: tuple[str, str], procs: Procs) -> None:
    cli_ns, srv_ns = two_paths
    p, port = procs.server(srv_ns, ServerOptions(bind="0.0.0.0", port=0, once=True, timeout=30))
    opts = ClientOptions(connect="10.0.1.2", port=port, mode="connect", count=20, join=1, timeout=30)
    rc, res = run_client(cli_ns, opts)
    server_result(p)
    assert rc == 0 and res.ok, res.error
    c = res.connect
    assert c is not None and c.join is not None and c.join.count == 20
    assert c.join.p50_us > c.p50_us  # the join needs the first connection established first


@pytest.mark.needs_root
def test_iperf3_via_mptcpize_lands_in_the_same_schema(veth_pair: tuple[str, str], procs: Procs) -> None:
    cli_ns, srv_ns = veth_pair
    srv = subprocess.Popen(
        _ns(srv_ns, iperf3.server_argv("10.0.1.2", 5233, wrapper="mptcpize")),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    procs.procs.append(srv)  # type: ignore[arg-type]
    time.sleep(0.5)
    argv = iperf3.client_argv(
        iperf3.Iperf3Client(connect="10.0.1.2", port=5233, bytes=5 << 20), wrapper="mptcpize"
    )
    cp = subprocess.run(_ns(cli_ns, argv), capture_output=True, text=True, timeout=30)
    res = iperf3.parse(cp.stdout, mode="bulk-upload")
    # iperf3 -n stops when the sender has written N bytes; its receiver count may still be short of N
    assert res.ok and res.streams[0].bytes_sent == 5 << 20 and 0 < res.bytes_total <= 5 << 20
    assert res.streams[0].samples
    assert json.loads(res.to_json())["engine"] == "iperf3"


@pytest.mark.needs_root
def test_ipv6_loopback_session(make_netns: Callable[[str], str], procs: Procs) -> None:
    ns = make_netns("trv6")
    p, port = procs.server(ns, ServerOptions(bind="::1", port=0, once=True, timeout=30))
    rc, res = run_client(
        ns, ClientOptions(connect="::1", port=port, mode="bulk-both", bytes=300_000, timeout=30)
    )
    assert rc == 0 and res.ok, res.error
    assert res.connections[0].remote == f"[::1]:{port}"
    assert res.connections[0].subflows[0].local == "::1"
    assert server_result(p).ok


def test_usage_errors_are_json_with_exit_2() -> None:
    for argv in (["client", "--connect", "x", "--port", "1", "--mode", "warp"], ["client", "--port", "1"]):
        cp = subprocess.run([*PY, "-m", "mptcpkit.lab.traffic", *argv], capture_output=True, text=True)
        assert cp.returncode == 2 and "Traceback" not in cp.stderr
        err = engine.parse_result(cp.stdout).error
        assert err is not None and err.kind == "usage"
    cp = subprocess.run(
        [
            *PY,
            "-m",
            "mptcpkit.lab.traffic",
            "client",
            "--connect",
            "127.0.0.1",
            "--port",
            "1",
            "--mode",
            "bulk-upload",
        ],
        capture_output=True,
        text=True,
    )
    assert cp.returncode == 2 and "--bytes" in cp.stdout
