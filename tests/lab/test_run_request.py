"""`lab run` option resolution (lab/run_request.py): pure checks, --ssh mappings."""

from __future__ import annotations

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.lab.run_request import check_emulation_mode, check_engine, ssh_targets


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
