"""Link emulation on real namespaces: frames pass; delay, rate, loss, jitter as configured; nothing left."""

from __future__ import annotations

import json
import os
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
from mptcpkit.lab.emulation.forwarder import LinkModel, wire_size
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
    with pytest.raises(UsageError, match="cannot reorder"):
        choose_mode(LinkShape(None, reorder=0.1), plain, "userspace", True)


def test_gso_and_netem_limit_choices() -> None:
    assert tap_gso(LinkShape(None, 0.02)) is True
    assert tap_gso(LinkShape(1_000_000_000, 0.02)) is True
    assert tap_gso(LinkShape(50_000_000, 0.02)) is False  # low rate: per-packet serialization
    assert tap_gso(LinkShape(None, 0.02, loss=0.01)) is False  # per-packet loss
    # 50 Mbit/s for 30 ms is ~124 full frames in flight, on top of the 100-packet queue.
    assert netem_limit(LinkShape(50_000_000, 0.03, queue_packets=100)) == 100 + 124 + 1


def test_link_model_serializes_queues_and_delays() -> None:
    model = LinkModel(1_000_000, queue_packets=2, delay_s=0.01, jitter_s=0, loss=0, seed=1)
    # 1250-byte frames take 10 ms each at 1 Mbit/s, then 10 ms of propagation.
    assert model.admit(0.0, 1250, 1) == pytest.approx(0.02)
    assert model.admit(0.0, 1250, 1) == pytest.approx(0.03)
    assert model.admit(0.0, 1250, 1) is None  # queue of 2 packets is full: drop-tail
    assert model.queue_drops == 1
    assert model.admit(0.015, 1250, 1) == pytest.approx(0.04)  # first one left: room again
    assert model.admit(1.0, 1250, 1) == pytest.approx(1.02)  # idle link: starts at once


def test_link_model_jitter_never_reorders_and_loss_is_seeded() -> None:
    model = LinkModel(None, 1000, delay_s=0.005, jitter_s=0.002, loss=0, seed=3)
    releases = [model.admit(i * 0.0001, 100, 1) for i in range(1000)]
    times = [r for r in releases if r is not None]
    assert times == sorted(times)
    assert all(0.003 <= t - i * 0.0001 <= 0.007 + 0.0001 * 40 for i, t in enumerate(times))

    def pattern(seed: int) -> list[bool]:
        lossy = LinkModel(None, 1000, 0, 0, loss=0.1, seed=seed)
        return [lossy.admit(0, 100, 1) is None for _ in range(5000)]

    assert pattern(5) == pattern(5) != pattern(6)
    assert 0.08 <= sum(pattern(5)) / 5000 <= 0.12


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
    assert wire.description["a_to_b"]["gso"] is False  # per-packet loss: frames are segmented
    probe = bed.ping(500, 0.001, wait_s=0.3)
    measured = 1 - probe["received"] / probe["sent"]
    assert 0.06 <= measured <= 0.14, f"measured loss {measured:.1%}"
    wire.close()
    stats = wire.emulator_stats()
    assert stats and stats[0]["directions"][0]["packets_lost"] >= 30


@needs_root
def test_jitter_stays_in_bounds_without_reordering(bed: Testbed, wires: list[Wire], tmp_path: Path) -> None:
    build(
        bed, wires, tmp_path, LinkShape(None, delay_s=0.005, jitter_s=0.002), LinkShape(None, delay_s=0.005)
    )
    probe = bed.ping(300, 0.0005, wait_s=0.3)  # probes 0.5 ms apart, jitter range 4 ms
    rtts = probe["rtt_s"]
    assert probe["received"] == 300
    assert probe["reordered"] == 0
    assert min(rtts) >= 0.008
    assert statistics.median(rtts) <= 0.0125
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
