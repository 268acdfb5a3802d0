"""set-link actions on a real namespace lab: the userspace emulator's rate drops mid-transfer (the subflow
on that link slows down after t), and the restore after the repetition puts the
link back as the topology has it (the forwarder's own report of its settings)."""

from __future__ import annotations

import statistics
import subprocess

import pytest

from mptcpkit.errors import LabError
from mptcpkit.lab.backends.netns import NetnsBackend
from mptcpkit.lab.emulation import control
from mptcpkit.lab.model import Direction
from mptcpkit.lab.scenarios import build, parse_scenarios

pytestmark = pytest.mark.needs_root

SET_LINK = """
name = "set-link"
topology = "two-paths"
[links.path1]
rate = "20mbit"
delay = "2ms"
[links.path2]
rate = "20mbit"
delay = "2ms"
[[flows]]
duration = "3s"
[[actions]]
at = "1s"
do = "set-link"
link = "path2"
rate = "2mbit"
delay = "10ms"
[[metrics]]
kind = "integrity"
expect = 1
pass = ">="
"""


def _rates(series: list[tuple[str, float, list[float]]], prefix: str) -> tuple[float, list[float]]:
    """The per-subflow rate series whose label starts with `prefix` (subflow:<client address>:<port>)."""
    for label, step, values in series:
        if label.startswith(prefix):
            return step, values
    raise AssertionError(f"no series {prefix} in {[s[0] for s in series]}")


def _mean(step: float, values: list[float], lo: float, hi: float) -> float:
    picked = [v for i, v in enumerate(values) if lo <= (i + 1) * step <= hi]
    assert picked, (step, values, lo, hi)
    return statistics.fmean(picked)


def test_set_link_drops_the_rate_mid_transfer_and_restore_puts_it_back() -> None:
    (spec,) = parse_scenarios(SET_LINK, source="set-link.toml")
    scenario = build(spec)
    with NetnsBackend().up(scenario.topology(), emulation="userspace") as lab:
        configured = lab.link_settings("path2")
        assert [d["rate_bps"] for d in configured] == [20e6, 20e6]
        outcome = scenario.run_once(lab)
        assert outcome.failure is None, outcome.failure
        assert next(iter(outcome.details["actions"].values())) == pytest.approx(1.0, abs=0.5)
        step, path2 = _rates(outcome.series, "subflow:10.0.2.1:")
        before, after = _mean(step, path2, 0.3, 0.9), _mean(step, path2, 1.6, 2.9)
        assert before > 10, path2
        assert 1.0 < after < 2.5, path2  # 2 Mbit/s on the wire after the action, ~1.85 of it goodput
        # restored: the forwarder applies the topology's shape again, and the state says so
        restored = lab.link_settings("path2")
        assert [(d["rate_bps"], d["delay_s"], d["changes"]) for d in restored] == [
            (20e6, 0.002, 2),
            (20e6, 0.002, 2),
        ]
        assert lab.info.emulation["links"]["path2"]["a_to_b"]["shape"]["rate_bps"] == 20_000_000
        # a bad command through the real socket is refused with its reason, and changes nothing
        wire = next(w for w in lab.wires if w.a_if == "l1a")
        with pytest.raises(LabError, match="unknown tap"):
            control.request(wire.control_path, {"op": "set", "tap": "eth0"})
        assert lab.link_settings("path2") == restored


def test_set_link_on_an_unshaped_direction_rebuilds_the_wire_and_restore_removes_it() -> None:
    """A stage change (plain cable <-> emulator) rebuilds the wire; the link keeps carrying traffic."""
    (spec,) = parse_scenarios(SET_LINK, source="set-link.toml")
    plain = Direction(rate_bps=None)
    topology = build(spec).topology().with_link("path1", a_to_b=plain, b_to_a=plain)
    with NetnsBackend().up(topology, emulation="userspace") as lab:
        assert lab.info.emulation["links"]["path1"]["mode"] == "none"
        lab.set_link_shape("path1", Direction(rate_bps=5_000_000), Direction(rate_bps=5_000_000))
        assert lab.info.emulation["links"]["path1"]["mode"] == "userspace"
        assert [d["rate_bps"] for d in lab.link_settings("path1")] == [5e6, 5e6]
        ping = lab.host("client").run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.1.2"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        lab.set_link_shape("path1", plain, plain)
        assert lab.info.emulation["links"]["path1"]["mode"] == "none"
        assert lab.link_settings("path1") == []
        ping = lab.host("client").run(["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.1.2"], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr


def test_set_link_on_a_tbf_wire_replaces_the_rate_in_place() -> None:
    """mode "tc" (bare tbf, no process): the rate changes in place on the wire end, with the plan's bucket."""
    (spec,) = parse_scenarios(SET_LINK.replace('delay = "2ms"', 'delay = "0ms"'), source="set-link.toml")
    with NetnsBackend().up(build(spec).topology(), emulation="tc") as lab:
        wire_ns = lab.record.wire_netns
        assert wire_ns is not None and lab.info.emulation["links"]["path2"]["mode"] == "tc"
        assert (
            "rate 20Mbit"
            in subprocess.run(
                ["tc", "-n", wire_ns, "qdisc", "show", "dev", "l1b"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        slow = Direction(rate_bps=3_000_000)
        lab.set_link_shape("path2", slow, slow)
        for end in ("l1a", "l1b"):
            shown = subprocess.run(
                ["tc", "-n", wire_ns, "qdisc", "show", "dev", end], capture_output=True, text=True, check=True
            ).stdout
            assert "tbf" in shown and "rate 3Mbit" in shown, shown
        assert lab.info.emulation["links"]["path2"]["mode"] == "tc"  # changed in place, not rebuilt
        assert lab.link_settings("path2") == []  # no forwarder on this link
        with pytest.raises(LabError, match="rate only"):  # a tbf wire has no delay line: a clear error
            lab.set_link_shape("path2", Direction(rate_bps=3_000_000, delay_s=0.01), slow)
