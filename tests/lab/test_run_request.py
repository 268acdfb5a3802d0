"""`lab run` option resolution (lab/run_request.py): pure checks, --ssh mappings, the VM guest's arguments."""

from __future__ import annotations

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.lab.run_request import check_emulation_mode, check_engine, guest_args, ssh_targets


def test_guest_args_carry_every_option_in_a_fixed_order() -> None:
    args = guest_args(
        ["-s", "bulk-*"],
        reps=5,
        emulation="userspace",
        max_reps=9,
        scale=0.5,
        engine="iperf3",
        label="v6.18",
        until_ci=2.5,
        seed=7,
        self_check=False,
        profile=True,
        profile_freq=99,
        profile_symbols="/boot/System.map",
    )
    assert args == [
        *("-s", "bulk-*", "--reps", "5", "--emulation", "userspace", "--max-reps", "9"),
        *("--scale", "0.5", "--engine", "iperf3", "--label", "v6.18", "--until-ci", "2.5"),
        *("--seed", "7", "--no-self-check", "--profile", "--profile-freq", "99"),
        *("--profile-symbols", "/boot/System.map"),
    ]


def test_guest_args_leave_out_defaults() -> None:
    args = guest_args(
        [],
        reps=3,
        emulation="auto",
        max_reps=10,
        scale=1.0,
        engine="mptcpkit",
        label=None,
        until_ci=None,
        seed=None,
        self_check=True,
        profile=False,
        profile_freq=None,
        profile_symbols=None,
    )
    expected = ["--reps", "3", "--emulation", "auto", "--max-reps", "10", "--scale", "1.0"]
    assert args == [*expected, "--engine", "mptcpkit"]


def test_ssh_targets_map_hosts_and_refuse_malformed_items() -> None:
    assert ssh_targets(["client=root@a", "server=me@b:2222"]) == {"client": "root@a", "server": "me@b:2222"}
    for bad in ("client", "=root@a", "client=a"):
        with pytest.raises(UsageError, match="HOST=USER@MACHINE"):
            ssh_targets([bad])


def test_mode_and_engine_checks() -> None:
    for mode in ("auto", "netem", "userspace"):
        check_emulation_mode(mode)
    with pytest.raises(UsageError, match="--emulation must be"):
        check_emulation_mode("tc")
    check_engine("iperf3")
    with pytest.raises(UsageError, match="--engine must be"):
        check_engine("netperf")
