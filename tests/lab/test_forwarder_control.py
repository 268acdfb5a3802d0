"""The forwarder's control commands (pure parsing, no root) and the live reconfiguration of its link model."""

from __future__ import annotations

import json

import pytest

from mptcpkit.lab.emulation import forwarder
from mptcpkit.lab.emulation.control import set_command
from mptcpkit.lab.emulation.forwarder import LinkModel, parse_command
from mptcpkit.lab.emulation.shape import LinkShape
from mptcpkit.lab.emulation.tc import netem_argv

TAPS = ["mkteabcdef01ab", "mkteabcdef01ba"]


def cmd(**fields: object) -> bytes:
    base: dict[str, object] = {
        "op": "set",
        "tap": TAPS[0],
        "rate_bps": 2_000_000,
        "queue_packets": 100,
        "delay_s": 0.01,
        "jitter_s": 0.002,
        "loss": 0.01,
        "gso": False,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


def test_a_valid_set_command_is_normalised() -> None:
    parsed = parse_command(cmd(), TAPS)
    assert parsed == {
        "op": "set",
        "tap": TAPS[0],
        "rate_bps": 2e6,
        "queue_packets": 100,
        "delay_s": 0.01,
        "jitter_s": 0.002,
        "loss": 0.01,
        "gso": False,
    }
    assert parse_command(cmd(rate_bps=None), TAPS)["rate_bps"] is None
    assert parse_command(b'{"op": "get"}', TAPS) == {"op": "get"}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[1]", "JSON object"),
        (b'{"op": "reboot"}', "JSON object"),
        (cmd(tap="eth0"), "unknown tap"),
        (cmd(loss=...), "missing ['loss']"),
        (cmd(colour="red"), "unknown ['colour']"),
        (cmd(rate_bps=0), "rate_bps"),
        (cmd(rate_bps=True), "rate_bps"),
        (cmd(rate_bps="1mbit"), "rate_bps"),
        (cmd(queue_packets=0), "queue_packets"),
        (cmd(queue_packets=1.5), "queue_packets"),
        (cmd(delay_s=-1), "delay_s"),
        (cmd(delay_s=61), "delay_s"),
        (cmd(jitter_s=0.5), "jitter_s cannot exceed"),
        (cmd(loss=1.5), "loss"),
        (
            b'{"op": "set", "tap": "mkteabcdef01ab", "rate_bps": NaN, "queue_packets": 1, "delay_s": 0,'
            b' "jitter_s": 0, "loss": 0, "gso": false}',
            "rate_bps",
        ),
        (cmd(gso="yes"), "gso"),
    ],
)
def test_bad_commands_are_refused_with_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_command(data, TAPS)
    assert reason in str(info.value)


def test_reconfigure_changes_rate_delay_and_loss_from_now_on() -> None:
    model = LinkModel(10e6, 1000, 0.010, 0.0, 0.0, seed=1)
    (run,) = model.admit(0.0, 1, 1250)
    assert run[2] == pytest.approx(0.001 + 0.010)  # 1250 B at 10 Mbit/s + 10 ms
    model.reconfigure(1e6, 1000, 0.050, 0.0, 0.0)
    (run,) = model.admit(1.0, 1, 1250)
    assert run[2] == pytest.approx(1.0 + 0.010 + 0.050)  # 1250 B at 1 Mbit/s + 50 ms
    model.reconfigure(1e6, 1000, 0.050, 0.0, 1.0)
    assert model.admit(2.0, 5, 1250) == [] and model.lost == 5
    model.reconfigure(None, 1000, 0.0, 0.0, 0.0)
    assert model.admit(3.0, 1, 1250) == [(0, 1, 3.0)]
    assert model.settings() == {
        "rate_bps": None,
        "queue_packets": 1000,
        "delay_s": 0.0,
        "jitter_s": 0.0,
        "loss": 0.0,
    }


def test_reconfigure_shrinks_the_queue_for_new_packets() -> None:
    model = LinkModel(1e6, 1000, 0.0, 0.0, 0.0, seed=1)
    assert sum(b - a for a, b, _ in model.admit(0.0, 10, 1250)) == 10
    model.reconfigure(1e6, 12, 0.0, 0.0, 0.0)
    assert sum(b - a for a, b, _ in model.admit(0.0, 10, 1250)) == 2  # 10 queued, room for 2 more
    assert model.queue_drops == 8


def test_the_client_command_is_what_the_forwarder_accepts() -> None:
    shape = LinkShape(rate_bps=500_000_000, delay_s=0.02, jitter_s=0.001, loss=0.001, queue_packets=50)
    parsed = parse_command(json.dumps(set_command(TAPS[1], shape)).encode(), TAPS)
    assert parsed["gso"] is True and parsed["rate_bps"] == 5e8 and parsed["queue_packets"] == 50
    assert (
        parse_command(json.dumps(set_command(TAPS[0], LinkShape(2_000_000))).encode(), TAPS)["gso"] is False
    )


def test_netem_change_command_uses_the_plan_numbers() -> None:
    shape = LinkShape(rate_bps=10_000_000, delay_s=0.01, loss=0.01, queue_packets=100)
    argv = netem_argv("mk-wire", "l0b", shape, 1500, "change")
    assert argv[:11] == [
        "tc",
        "-n",
        "mk-wire",
        "qdisc",
        "change",
        "dev",
        "l0b",
        "root",
        "handle",
        "1:",
        "netem",
    ]
    assert argv[argv.index("rate") + 1] == "10000000bit" and argv[argv.index("loss") + 1] == "1.000000%"
    assert argv[argv.index("delay") + 1] == "10000us"
    assert int(argv[argv.index("limit") + 1]) > 100  # queue plus the delay line


def test_control_limit_fits_a_command() -> None:
    assert len(json.dumps(set_command(TAPS[0], LinkShape(1)))) < forwarder.CONTROL_MAX


def test_ssh_reshape_commands_use_the_plan_numbers() -> None:
    from mptcpkit.lab.backends.ssh_plan import reshape_argv, reshaped
    from mptcpkit.lab.plan import plan_lab
    from mptcpkit.lab.topology_file import load_topology

    planned = plan_lab(load_topology("two-paths")).shaping[0]
    rate_only = reshaped(planned, LinkShape(rate_bps=5_000_000))
    argv = reshape_argv(rate_only, has_netem=False)
    assert argv[:9] == ["tc", "qdisc", "replace", "dev", planned.dev, "root", "handle", "1:", "tbf"]
    assert argv[argv.index("rate") + 1] == "5000000bit" and rate_only.tbf is not None
    assert argv[argv.index("burst") + 1] == str(rate_only.tbf.burst_bytes)
    delayed = reshape_argv(reshaped(planned, LinkShape(rate_bps=5_000_000, delay_s=0.02)), has_netem=True)
    assert delayed[2] == "replace" and "netem" in delayed and "20000us" in delayed
    assert reshape_argv(reshaped(planned, LinkShape(rate_bps=None)), has_netem=False) == [
        "tc", "qdisc", "del", "dev", planned.dev, "root",
    ]  # fmt: skip
