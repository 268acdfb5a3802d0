"""The self-check's verdicts from the lab probe's JSON (pure: no namespaces)."""

from __future__ import annotations

import json
import math

from mptcpkit.lab.model import Direction, Link
from mptcpkit.lab.selfcheck import _ping_argv, loss_check, rate_check, rtt_check
from mptcpkit.lab.topology_file import load_topology

FAST = Direction(rate_bps=500_000_000, delay_s=0.1, loss=0.01)


def _link() -> Link:
    return load_topology("two-paths").with_link("path1", a_to_b=FAST, b_to_a=FAST).links[0]


def test_rtt_from_kernel_timestamped_echoes() -> None:
    link = _link()
    ok = rtt_check(link, json.dumps({"sent": 3, "received": 3, "rtt_s": [0.2002, 0.2003, 0.2101]}))
    assert ok.ok and ok.configured == 200.0 and math.isclose(ok.measured, 200.3)
    late = rtt_check(link, json.dumps({"sent": 3, "received": 3, "rtt_s": [0.25, 0.25, 0.25]}))
    assert not late.ok
    none = rtt_check(link, "ping: connect: Network is unreachable")
    assert not none.ok and math.isnan(none.measured) and "no ping reply" in none.note


def test_loss_within_a_binomial_band() -> None:
    link = _link()
    expected = 1 - 0.99 * 0.99
    inside = loss_check(link, json.dumps({"sent": 400, "received": round(400 * (1 - expected))}))
    assert inside.ok and math.isclose(inside.configured, 100 * expected)
    assert not loss_check(link, json.dumps({"sent": 400, "received": 360})).ok
    assert not loss_check(link, json.dumps({"error": "Operation not permitted"})).ok


def test_rate_from_the_paced_udp_sink() -> None:
    link = _link()
    sink = {"rate_bps": 501e6, "datagrams": 41000, "bin_s": 0.1, "bins_bps": [499e6, 503e6]}
    check = rate_check(link, True, '{"ready": true}\n' + json.dumps(sink))
    assert check.ok and check.direction == "a->b" and math.isclose(check.measured, 501.0)
    assert "499.0..503.0" in check.note
    slow = rate_check(link, False, json.dumps({**sink, "rate_bps": 90e6}))
    assert not slow.ok and round(slow.error_pct) == -82
    failed = rate_check(link, True, json.dumps({"error": "nothing arrived within 10 s"}))
    assert not failed.ok and failed.note == "nothing arrived within 10 s"


def test_ping_argv_uses_the_lab_probe_from_end_a() -> None:
    argv = _ping_argv(_link(), 20, 0.05)
    assert argv == [
        "-m",
        "mptcpkit.lab.probe",
        "ping",
        "10.0.1.2",
        "--count",
        "20",
        "--interval",
        "0.05",
        "--bind",
        "10.0.1.1",
    ]
