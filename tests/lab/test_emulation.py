"""Link emulation on real namespaces: frames pass; delay, rate, loss, jitter as configured; nothing left."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mptcpkit.errors import LabError, UsageError
from mptcpkit.lab.emulation import LinkShape, Wire, build_wire, netem_available
from mptcpkit.lab.emulation.forwarder import Frame, LinkModel, carve, wire_size
from mptcpkit.lab.emulation.netem import PROBE_PREFIX
from mptcpkit.lab.emulation.shape import (
    choose_mode,
    direction_stage,
    netem_limit,
    tap_gso,
    tap_name,
    tbf_params,
)
from mptcpkit.lab.emulation.testbed import Testbed, create_testbed

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")
HEADER_BYTES = 14 + 20 + 20 + 12  # Ethernet + IPv4 + TCP + timestamps option


# --- pure planning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_bps": 0}, "positive number of bit/s"),
        ({"rate_bps": None, "delay_s": -1}, "delay must be between 0 and 60 s"),
        ({"rate_bps": None, "delay_s": 0.001, "jitter_s": 0.002}, "cannot exceed its delay"),
        ({"rate_bps": None, "loss": 1.5}, "loss is a fraction between 0 and 1"),
        ({"rate_bps": None, "queue_packets": 0}, "queue_packets must be a positive integer"),
    ],
)
def test_link_shape_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LinkShape(**kwargs)  # type: ignore[arg-type]


def test_mode_choice() -> None:
    plain, rate, delayed = LinkShape(None), LinkShape(10_000_000), LinkShape(None, 0.01)
    assert choose_mode(plain, plain, "auto", None) == "none"
    assert choose_mode(rate, plain, "auto", False) == "userspace"  # no bare tbf: it keeps skb->sk
    assert choose_mode(rate, plain, "auto", True) == "netem"
    assert choose_mode(delayed, plain, "auto", False) == "userspace"
    assert choose_mode(delayed, plain, "userspace", True) == "userspace"
    assert choose_mode(rate, plain, "tc", None) == "tc"
    assert direction_stage(plain, "userspace") == "none"
    assert direction_stage(rate, "userspace") == "userspace"
    with pytest.raises(UsageError, match="rate only"):
        choose_mode(delayed, plain, "tc", None)
    with pytest.raises(UsageError, match="netem"):
        choose_mode(LinkShape(None, reorder=0.1), plain, "auto", False)
    with pytest.raises(UsageError, match="netem"):
        choose_mode(delayed, plain, "netem", False)
    with pytest.raises(UsageError, match="no reorder probability"):
        choose_mode(LinkShape(None, reorder=0.1), plain, "userspace", True)


def test_gso_and_netem_limit_choices() -> None:
    assert tap_gso(LinkShape(None, 0.02)) is True
    assert tap_gso(LinkShape(1_000_000_000, 0.02)) is True
    assert tap_gso(LinkShape(50_000_000, 0.02)) is False  # low rate: per-packet serialization
    assert tap_gso(LinkShape(None, 0.02, loss=0.01)) is True  # loss is per packet all the same (carve)
    # 50 Mbit/s for 30 ms is ~124 full frames in flight, on top of the 100-packet queue.
    assert netem_limit(LinkShape(50_000_000, 0.03, queue_packets=100)) == 100 + 124 + 1


def test_link_model_serializes_queues_and_delays() -> None:
    model = LinkModel(1_000_000, queue_packets=2, delay_s=0.01, jitter_s=0, loss=0, seed=1)
    # 1250-byte frames take 10 ms each at 1 Mbit/s, then 10 ms of propagation.
    assert model.admit(0.0, 1, 1250) == [(0, 1, pytest.approx(0.02))]
    assert model.admit(0.0, 1, 1250) == [(0, 1, pytest.approx(0.03))]
    assert model.admit(0.0, 1, 1250) == []  # queue of 2 packets is full: drop-tail
    assert model.queue_drops == 1
    assert model.admit(0.015, 1, 1250) == [(0, 1, pytest.approx(0.04))]  # first one left: room again
    assert model.admit(1.0, 1, 1250) == [(0, 1, pytest.approx(1.02))]  # idle link: starts at once


def test_link_model_drop_tail_keeps_the_head_of_a_gso_frame() -> None:
    model = LinkModel(1_000_000, queue_packets=3, delay_s=0, jitter_s=0, loss=0, seed=1)
    # A 5-packet GSO frame into a 3-packet queue: the first 3 packets go (30 ms on the wire), 2 are dropped.
    assert model.admit(0.0, 5, 1250, 1000) == [(0, 3, pytest.approx(0.03))]
    assert model.queue_drops == 2
    model = LinkModel(1_000_000, queue_packets=10, delay_s=0, jitter_s=0, loss=0, seed=1)
    assert model.admit(0.0, 3, 1250, 1000) == [(0, 3, pytest.approx((2 * 1250 + 1000) * 8 / 1e6))]


def test_link_model_loss_is_per_packet_within_a_binomial_band() -> None:
    p, frames, segs = 0.01, 20_000, 44
    model = LinkModel(None, 1000, 0, 0, loss=p, seed=11)
    kept = sum(last - first for first, last, _ in (r for _ in range(frames) for r in model.admit(0, segs)))
    n = frames * segs
    band = 3.29 * math.sqrt(p * (1 - p) / n)  # 99.9 %
    assert abs(model.lost / n - p) <= band
    assert kept + model.lost == n
    # Whole frames mostly pass untouched: a frame loses packet i and only packet i.
    runs = LinkModel(None, 1000, 0, 0, loss=0.5, seed=2).admit(0, 8)
    assert all(0 <= a < b <= 8 for a, b, _ in runs) and len({a for a, _, _ in runs}) == len(runs)

    def pattern(seed: int) -> list[int]:
        lossy = LinkModel(None, 1000, 0, 0, loss=0.1, seed=seed)
        return [len(lossy.admit(0, 1)) for _ in range(5000)]

    assert pattern(5) == pattern(5) != pattern(6)


def test_link_model_jitter_reorders_within_bounds() -> None:
    model = LinkModel(None, 1000, delay_s=0.005, jitter_s=0.002, loss=0, seed=3)
    releases = [model.admit(i * 0.0001, 1)[0][2] for i in range(1000)]
    assert releases != sorted(releases)  # later packets may overtake earlier ones, as with netem
    assert all(0.003 <= t - i * 0.0001 <= 0.007 for i, t in enumerate(releases))


def _gso_frame(version: int, proto: str, segs: int, gso: int, last: int, flags: int = 0x18) -> bytes:
    """A NEEDS_CSUM GSO frame as a TAP hands it over: vnet header, Ethernet, IP, TCP/UDP, payload."""
    payload = bytes(range(256)) * ((gso * segs) // 256 + 1)
    payload = payload[: gso * (segs - 1) + last]
    l4 = bytes(4) + struct.pack("!I", 1000) + bytes(4) + bytes([8 << 4, flags]) + bytes(2) + b"\x12\x34"
    l4 += bytes(2) + bytes(12) if proto == "tcp" else b""
    if proto == "udp":
        l4 = struct.pack("!HHHH", 1, 2, 8 + len(payload), 0x1234)
    if version == 4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4) + len(payload), 7, 0x4000, 64, 6, 0, bytes(4), bytes(4)
        )
        eth = bytes(12) + b"\x08\x00"
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(l4) + len(payload), 6, 64, bytes(16), bytes(16))
        eth = bytes(12) + b"\x86\xdd"
    kind = {("tcp", 4): 1, ("tcp", 6): 4, ("udp", 4): 5, ("udp", 6): 5}[(proto, version)]
    vnet = struct.pack("<BBHHHH", 1, kind, 0, gso, 14 + len(ip), 16 if proto == "tcp" else 6)
    return vnet + eth + ip + l4 + payload


def _ones_sum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize(("version", "proto"), [(4, "tcp"), (6, "tcp"), (4, "udp"), (6, "udp")])
def test_carve_fixes_headers_as_segmentation_would(version: int, proto: str) -> None:
    frame = _gso_frame(version, proto, segs=5, gso=1000, last=300)
    f = Frame(frame, len(frame))
    assert (f.segs, f.gso_size) == (5, 1000)
    piece = carve(frame, f, 1, 3)  # segments 1 and 2: 2000 payload bytes
    hdr = 10 + f.hdr
    assert piece[:10] == frame[:10] and piece[hdr:] == frame[hdr + 1000 : hdr + 3000]
    ip, l4 = piece[24:], piece[10 + f.l4 :]
    l4_len = len(piece) - 10 - f.l4
    if version == 4:
        assert struct.unpack_from("!H", ip, 2)[0] == len(piece) - 24
        assert struct.unpack_from("!H", ip, 4)[0] == 8  # IP id of the first carried segment
        assert _ones_sum(ip[:20]) == 0xFFFF  # header checksum valid
    else:
        assert struct.unpack_from("!H", ip, 4)[0] == l4_len
    old_l4 = len(frame) - 10 - f.l4
    check_at = 16 if proto == "tcp" else 6
    # The pseudo-header checksum moved with the transport length: old - old_len + new_len (one's complement).
    assert (
        _ones_sum(
            struct.pack(
                "!HHH", struct.unpack_from("!H", frame, 10 + f.l4 + check_at)[0], ~old_l4 & 0xFFFF, l4_len
            )
        )
        == struct.unpack_from("!H", l4, check_at)[0]
    )
    if proto == "tcp":
        assert struct.unpack_from("!I", l4, 4)[0] == 1000 + 1000
        assert l4[13] & 0x08 == 0  # PSH only on the frame's last segment
        tail = carve(frame, f, 3, 5)
        assert tail[10 + f.l4 + 13] & 0x08 and len(tail) == hdr + 1300
    else:
        assert struct.unpack_from("!H", l4, 4)[0] == l4_len


def test_wire_size_counts_each_gso_segment() -> None:
    eth = bytes(12) + b"\x08\x00"
    ip = bytes([0x45]) + bytes(19)
    tcp = bytes(12) + bytes([8 << 4]) + bytes(19)  # data offset 8 words: 32-byte header with options
    payload = bytes(1448 * 3)
    vnet = struct.pack("<BBHHHH", 1, 1, 0, 1448, 14 + 20, 16)  # NEEDS_CSUM, GSO TCPv4
    frame = vnet + eth + ip + tcp + payload
    assert wire_size(frame, len(frame)) == (66 * 3 + 1448 * 3, 3)
    plain = struct.pack("<BBHHHH", 0, 0, 0, 0, 0, 0) + eth + ip + tcp + bytes(100)
    assert wire_size(plain, len(plain)) == (14 + 20 + 32 + 100, 1)


def test_tbf_parameters_and_tap_names() -> None:
    params = tbf_params(LinkShape(50_000_000, queue_packets=100))
    assert params is not None
    assert params.burst_bytes == 6250  # 1 ms of tokens at 50 Mbit/s
    assert params.limit_bytes == 100 * 1514
    small = tbf_params(LinkShape(1_000_000))
    assert small is not None and small.burst_bytes == 2 * 1514  # never below two full frames
    assert tbf_params(LinkShape(None)) is None
    names = {tap_name("a-very-long-interface", "another-long-one", d) for d in ("ab", "ba")}
    assert len(names) == 2 and all(len(n) <= 15 for n in names)


# --- real namespaces -------------------------------------------------------------------------------------


@pytest.fixture
def bed() -> Iterator[Testbed]:
    testbed = create_testbed("mkt-em-")
    try:
        yield testbed
    finally:
        testbed.close()


@pytest.fixture
def wires(tmp_path: Path) -> Iterator[list[Wire]]:
    """Every Wire a test builds is closed at teardown, even when the test fails."""
    built: list[Wire] = []
    yield built
    for wire in built:
        wire.close()


def build(bed: Testbed, wires: list[Wire], state: Path, ab: LinkShape, ba: LinkShape, **kw: object) -> Wire:
    wire = build_wire(bed.wire, bed.a_if, bed.b_if, ab, ba, state_dir=state, **kw)  # type: ignore[arg-type]
    wires.append(wire)
    return wire


def wire_links(bed: Testbed) -> str:
    return subprocess.run(["ip", "-n", bed.wire, "-o", "link"], capture_output=True, text=True).stdout


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@needs_root
def test_netem_detection_matches_the_kernel_and_cleans_up() -> None:
    has = netem_available()
    assert isinstance(has, bool)
    res = subprocess.run(
        ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
        capture_output=True,
    )
    assert has == (res.returncode == 0)
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PROBE_PREFIX not in out


@needs_root
def test_frames_pass_both_ways_unshaped(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(None), LinkShape(None))
    assert wire.mode == "none" and wire.pids == []
    probe = bed.udp_rtt(20, 0.01)  # UDP both ways through user processes
    assert probe["received"] == 20
    assert bed.ping(10, 0.01)["received"] == 10


@needs_root
def test_delay_is_accurate(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    shape = LinkShape(None, delay_s=0.005)
    wire = build(bed, wires, tmp_path, shape, shape, mode="userspace")
    assert wire.mode == "userspace" and len(wire.pids) == 1
    assert wire.description["a_to_b"]["stage"] == "userspace"
    probe = bed.ping(60, 0.01)
    assert probe["received"] == 60
    rtt = statistics.median(probe["rtt_s"])
    assert min(probe["rtt_s"]) >= 0.010  # never early
    assert abs(rtt / 0.010 - 1) <= 0.05, f"RTT median {rtt * 1e3:.2f} ms, configured 10 ms"


@needs_root
def test_rate_is_accurate_with_delay(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    shape = LinkShape(20_000_000, delay_s=0.005)
    build(bed, wires, tmp_path, shape, shape)
    data = bed.iperf3(3, omit_s=1)
    mss = int(data["start"].get("tcp_mss_default", 1448))
    expected = 20_000_000 * mss / (mss + HEADER_BYTES)
    goodput = data["end"]["sum_received"]["bits_per_second"]
    assert abs(goodput / expected - 1) <= 0.03, (
        f"goodput {goodput / 1e6:.2f} Mbit/s, expected {expected / 1e6:.2f}"
    )


@needs_root
def test_rate_queue_drops_an_overloading_udp_sender(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    """The bottleneck must behave as a router: drop the excess, not throttle the sender's socket."""
    wire = build(bed, wires, tmp_path, LinkShape(20_000_000, queue_packets=100), LinkShape(None))
    assert wire.mode == "userspace"
    data = bed.iperf3(2, extra=["-u", "-b", "30M", "-l", "1400"])
    received = data["end"]["sum_received"]
    assert received["lost_percent"] >= 20  # ~1/3 of 30 Mbit/s does not fit into 20 Mbit/s
    assert data["end"]["sum_sent"]["bits_per_second"] >= 27e6


@needs_root
def test_tc_mode_uses_tbf_without_a_process(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(20_000_000), LinkShape(None), mode="tc")
    assert wire.mode == "tc" and wire.pids == []
    qdiscs = subprocess.run(
        ["tc", "-n", bed.wire, "qdisc", "show", "dev", bed.b_if], capture_output=True, text=True
    ).stdout
    assert "tbf" in qdiscs
    data = bed.iperf3(2, omit_s=1)
    assert 0.9 * 20e6 <= data["end"]["sum_received"]["bits_per_second"] <= 20e6
    wire.close()
    qdiscs = subprocess.run(["tc", "-n", bed.wire, "qdisc", "show"], capture_output=True, text=True).stdout
    assert "tbf" not in qdiscs and "clsact" not in qdiscs


@needs_root
def test_loss_is_roughly_as_set(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(None, delay_s=0.001, loss=0.10), LinkShape(None), seed=7)
    assert wire.description["a_to_b"]["gso"] is True  # per-packet loss without segmenting (carve)
    probe = bed.ping(500, 0.001, wait_s=0.3)
    measured = 1 - probe["received"] / probe["sent"]
    assert 0.06 <= measured <= 0.14, f"measured loss {measured:.1%}"
    wire.close()
    stats = wire.emulator_stats()
    assert stats and stats[0]["directions"][0]["packets_lost"] >= 30


@needs_root
def test_jitter_stays_in_bounds_and_reorders(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    build(
        bed, wires, tmp_path, LinkShape(None, delay_s=0.005, jitter_s=0.002), LinkShape(None, delay_s=0.005)
    )
    probe = bed.ping(300, 0.0005, wait_s=0.3)  # probes 0.5 ms apart, jitter range 4 ms
    rtts = probe["rtt_s"]
    assert probe["received"] == 300
    assert probe["reordered"] >= 10  # as with netem: a jittered packet overtakes or is overtaken
    assert min(rtts) >= 0.008
    assert statistics.median(rtts) <= 0.011
    assert sorted(rtts)[285] <= 0.0135  # the first probes also wait for neighbour discovery
    assert statistics.pstdev(rtts) >= 0.0004  # the jitter is really there


@needs_root
def test_close_removes_processes_and_taps(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(10_000_000, 0.002), LinkShape(None, 0.002))
    pids = list(wire.pids)
    assert pids and all(alive(p) for p in pids)
    assert "mkte" in wire_links(bed)
    assert wire.state_path is not None and wire.state_path.exists()
    wire.close()
    wire.close()  # idempotent
    assert not any(alive(p) for p in pids)
    assert "mkte" not in wire_links(bed)
    assert not wire.state_path.exists()
    qdiscs = subprocess.run(["tc", "-n", bed.wire, "qdisc", "show"], capture_output=True, text=True).stdout
    assert "clsact" not in qdiscs


@needs_root
def test_close_from_state_file(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(None, 0.002), LinkShape(None, 0.002))
    assert wire.state_path is not None
    again = Wire.from_state(wire.state_path)
    assert again.pids == wire.pids and again.mode == "userspace"
    again.close()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in wire.pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in wire.pids)
    assert "mkte" not in wire_links(bed)


@needs_root
def test_emulator_exits_when_the_wire_namespace_is_deleted(
    bed: Testbed, wires: list[Wire], tmp_path: Path
) -> None:
    wire = build(bed, wires, tmp_path, LinkShape(None, 0.002), LinkShape(None, 0.002))
    pids = list(wire.pids)
    subprocess.run(["ip", "netns", "del", bed.wire], check=True)
    deadline = time.monotonic() + 3
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)
    wire.close()  # the namespace is gone: close() must still succeed


@needs_root
def test_missing_interface_is_a_lab_error_and_leaves_nothing(bed: Testbed, tmp_path: Path) -> None:
    before = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.count(
        "forwarder.py"
    )
    with pytest.raises(LabError, match="not found"):
        build_wire(bed.wire, bed.a_if, "nosuchif", LinkShape(None, 0.01), LinkShape(None), state_dir=tmp_path)
    after = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.count("forwarder.py")
    assert after == before
    assert "mkte" not in wire_links(bed)


@needs_root
def test_reorder_without_netem_is_a_usage_error(bed: Testbed, tmp_path: Path) -> None:
    if netem_available():
        pytest.skip("this kernel has netem")
    with pytest.raises(UsageError, match="netem"):
        build_wire(
            bed.wire,
            bed.a_if,
            bed.b_if,
            LinkShape(None, 0.01, reorder=0.05),
            LinkShape(None),
            state_dir=tmp_path,
        )
    with pytest.raises(UsageError, match="netem"):
        build_wire(
            bed.wire,
            bed.a_if,
            bed.b_if,
            LinkShape(None, 0.01),
            LinkShape(None),
            mode="netem",
            state_dir=tmp_path,
        )


GUEST_CHECK = """
import json, statistics
from pathlib import Path
from mptcpkit.lab.emulation import LinkShape, build_wire, netem_available
from mptcpkit.lab.emulation.testbed import testbed
out = {"netem_available": netem_available()}
with testbed() as bed:
    plain = build_wire(bed.wire, bed.a_if, bed.b_if, LinkShape(None), LinkShape(None), state_dir=Path(STATE))
    out["base_rtt_s"] = statistics.median(bed.ping(40, 0.02)["rtt_s"])
    plain.close()
    shape = LinkShape(20_000_000, 0.010)
    wire = build_wire(bed.wire, bed.a_if, bed.b_if, shape, shape, state_dir=Path(STATE))
    out["mode"] = wire.mode
    out["rtt_s"] = statistics.median(bed.ping(40, 0.02)["rtt_s"])
    out["goodput_bps"] = bed.iperf3(3, omit_s=1)["end"]["sum_received"]["bits_per_second"]
    wire.close()
print("RESULT " + json.dumps(out))
"""


@needs_root
@pytest.mark.slow
@pytest.mark.vm
def test_netem_mode_in_a_guest_kernel_with_netem(tmp_path: Path) -> None:
    """Where a kernel has netem (the distribution kernel in a virtme-ng guest), auto mode uses it, accurately."""
    from mptcpkit.lab.backends.vm.guest import run_in_vm

    script = tmp_path / "guest_check.py"
    script.write_text(GUEST_CHECK.replace("STATE", repr(str(tmp_path / "state"))))
    result = run_in_vm(None, None, [sys.executable, str(script)], timeout=900, boot_timeout=400)
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(x for x in result.stdout.splitlines() if x.startswith("RESULT "))
    out = json.loads(line.removeprefix("RESULT "))
    assert out["netem_available"] is True and out["mode"] == "netem"
    # A TCG guest is slow: judge the delay netem adds on top of the guest's own RTT on a plain link.
    assert abs((out["rtt_s"] - out["base_rtt_s"]) / 0.020 - 1) <= 0.05, out
    expected = 20_000_000 * 1448 / (1448 + HEADER_BYTES)
    assert abs(out["goodput_bps"] / expected - 1) <= 0.05


# --- the emulator at high rate: GSO frames, per-packet loss, reordering, exact rate ------------------------

RECEIVER = """
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 7781)); s.listen()
print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while chunk := c.recv(1 << 20):
    h.update(chunk); n += len(chunk)
print(n, h.hexdigest(), flush=True)
"""
SENDER = """
import random, socket, sys
data = random.Random(7).randbytes(int(sys.argv[2]))
s = socket.create_connection((sys.argv[1], 7781)); s.sendall(data); s.close()
"""


@needs_root
def test_carved_gso_frames_keep_a_tcp_stream_intact(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    """Loss on whole GSO frames: the carved pieces must be valid TCP, or the stream would stall or corrupt."""
    lossy = LinkShape(None, delay_s=0.001, loss=0.01)
    wire = build(bed, wires, tmp_path, lossy, LinkShape(None, delay_s=0.001), seed=3, mode="userspace")
    assert wire.description["a_to_b"]["gso"] is True
    size = 8_000_000
    receiver = bed.spawn(bed.b, [sys.executable, "-c", RECEIVER])
    assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
    res = bed.run(bed.a, [sys.executable, "-c", SENDER, "10.77.0.2", str(size)], timeout=60)
    assert res.returncode == 0, res.stderr
    got = receiver.stdout.readline().split()
    expected = hashlib.sha256(random.Random(7).randbytes(size)).hexdigest()
    assert got == [str(size), expected]
    wire.close()
    ab = wire.emulator_stats()[0]["directions"][0]
    assert ab["frames_split"] > 0 and ab["packets_lost"] > 0
    assert ab["packets_in"] > 2 * ab["frames_in"]  # GSO frames really came through whole


@needs_root
def test_loss_on_gso_frames_is_per_packet(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    """UDP GSO bursts (44 datagrams per frame) through 5 % loss: received/sent in a 99.9 % binomial band."""
    p = 0.05
    wire = build(
        bed, wires, tmp_path, LinkShape(None, 0.002, loss=p), LinkShape(None), seed=9, mode="userspace"
    )
    result = bed.udp_rate(100e6, window_s=1.5, warmup_s=0, duration_s=0.8)
    sent, received = result["sent"], result["datagrams"]
    band = 3.29 * math.sqrt(p * (1 - p) / sent)
    assert abs((1 - received / sent) - p) <= band, (sent, received)
    wire.close()
    ab = wire.emulator_stats()[0]["directions"][0]
    assert ab["packets_in"] >= 20 * ab["frames_in"]  # the loss hit packets inside whole GSO frames
    assert ab["packets_lost"] == sent - received


@needs_root
def test_rate_is_exact_at_500mbit_through_100ms_jitter_and_loss(
    bed: Testbed, wires: list[Wire], tmp_path: Path
) -> None:
    """The emulator is not the limit: 500 Mbit/s, 100 ms one-way, +/-10 ms jitter, 1 % loss, delivered exactly."""
    shape = LinkShape(500_000_000, 0.1, jitter_s=0.01, loss=0.01, queue_packets=2000)
    build(bed, wires, tmp_path, shape, LinkShape(None, 0.1), mode="userspace")
    result = bed.udp_rate(600e6, window_s=0.8, prefill=2000)
    assert abs(result["rate_bps"] / 500e6 - 1) <= 0.02, result["rate_bps"]


@needs_root
def test_self_check_passes_at_500mbit_100ms_with_loss_and_jitter() -> None:
    """`lab up` of two-paths at 500 Mbit/s and 100 ms with 1 % loss: every rate, RTT and loss check is ok."""
    from mptcpkit.lab.backends.netns import NetnsBackend
    from mptcpkit.lab.model import Direction
    from mptcpkit.lab.selfcheck import self_check
    from mptcpkit.lab.topology_file import load_topology

    fast = Direction(rate_bps=500_000_000, delay_s=0.1, jitter_s=0.01, loss=0.01, queue_packets=2000)
    topo = load_topology("two-paths").with_link("path1", a_to_b=fast, b_to_a=fast)
    with NetnsBackend().up(topo, emulation="userspace") as lab:
        checks = self_check(lab, rate_duration=0.8)
    rates = [c for c in checks if c.quantity == "rate" and c.link == "path1"]
    assert len(rates) == 2 and all(c.configured == pytest.approx(500.0) for c in rates)
    assert {c.quantity for c in checks} == {"rtt", "rate", "loss"}
    bad = [c.to_dict() for c in checks if not c.ok]
    assert not bad, bad


def test_queue_in_bdp_units() -> None:
    from mptcpkit.errors import TopologyError
    from mptcpkit.lab.topology_file import parse_topology

    text = """
[hosts.a]
[hosts.b]
[[links]]
a = { host = "a", addresses = ["10.0.1.1/24"] }
b = { host = "b", addresses = ["10.0.1.2/24"] }
rate = "500mbit"
delay = "100ms"
queue = "1bdp"
b_to_a = { queue = "0.5 bdp" }
"""
    link = parse_topology(text).links[0]
    assert link.a_to_b.queue_packets == math.ceil(500e6 * 0.2 / 8 / 1514)  # 8257 full frames
    assert link.b_to_a.queue_packets == math.ceil(500e6 * 0.2 / 8 / 1514 / 2)
    with pytest.raises(TopologyError, match="needs a rate"):
        parse_topology(text.replace('rate = "500mbit"', ""))
    with pytest.raises(TopologyError, match="queue length"):
        parse_topology(text.replace('"1bdp"', '"1 bpd"'))
