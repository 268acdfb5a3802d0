"""Thin pyroute2 layer: the few tc objects the wire uses (clsact, match-all redirect, tbf, netem)."""

from __future__ import annotations

import errno
import subprocess
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from mptcpkit.errors import EnvironmentProblem, LabError
from mptcpkit.lab.emulation.shape import LinkShape, TbfParams, netem_args, netem_limit

ETH_P_ALL = 0x0003
TC_H_ROOT = 0xFFFFFFFF
CLSACT_HANDLE = 0xFFFF0000
CLSACT_INGRESS = 0xFFFFFFF2
ROOT_HANDLE = 0x10000  # 1:
CHILD_PARENT = 0x10001  # 1:1
CHILD_HANDLE = 0x100000  # 10:


def open_netns(netns: str) -> IPRoute:
    """An rtnetlink socket inside an existing namespace (flags=0: never create it by accident)."""
    try:
        return IPRoute(netns=netns, flags=0)
    except OSError as e:
        raise LabError(f"cannot open network namespace {netns!r}: {e}") from e


def ifindex(ipr: IPRoute, name: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise LabError(f"interface {name!r} not found in the wire namespace")
    return int(found[0])


def add_clsact(ipr: IPRoute, index: int) -> None:
    try:
        ipr.tc("add", "clsact", index=index)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def redirect_ingress(ipr: IPRoute, index: int, to_index: int) -> None:
    """Every frame arriving on ``index`` leaves by the egress of ``to_index`` (u32 match-all + mirred)."""
    ipr.tc(
        "add-filter",
        "u32",
        index=index,
        parent=CLSACT_INGRESS,
        prio=1,
        protocol=ETH_P_ALL,
        keys=["0x0/0x0+0"],
        target=CHILD_PARENT,  # u32 wants a class id; the redirect (stolen) decides the frame's fate
        action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": to_index},
    )


def add_tbf(
    ipr: IPRoute, index: int, params: TbfParams, *, parent: int | None = None, handle: int = ROOT_HANDLE
) -> None:
    kwargs: dict[str, Any] = {
        "index": index,
        "handle": handle,
        "rate": f"{params.rate_bps}bit",
        "burst": params.burst_bytes,
        "limit": params.limit_bytes,
    }
    if parent is not None:
        kwargs["parent"] = parent
    ipr.tc("replace", "tbf", **kwargs)


def add_netem(netns: str, ifname: str, shape: LinkShape, mtu: int, verb: str = "replace") -> None:
    """netem for rate/delay/jitter/loss/reorder; its limit is the queue (packets). It orphans the skb.

    Done with iproute2's ``tc`` (present wherever netem is): pyroute2 0.9.7 encodes TCA_NETEM_RATE wrongly
    (a float, a too-short attribute; the kernel answers ERANGE), and the rate is what matters here.
    ``verb`` "change" alters a running netem in place (set-link actions) and keeps the packets it holds.
    """
    argv = netem_argv(netns, ifname, shape, mtu, verb)
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except FileNotFoundError as e:
        raise EnvironmentProblem(
            "the 'tc' program (iproute2) is needed for netem", hint="apt-get install iproute2"
        ) from e
    if res.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {res.stderr.strip()}")


def netem_argv(netns: str, ifname: str, shape: LinkShape, mtu: int, verb: str = "replace") -> list[str]:
    """`tc -n NETNS qdisc VERB dev IFNAME root handle 1: netem ...` with the plan's numbers."""
    argv = ["tc", "-n", netns, "qdisc", verb, "dev", ifname, "root", "handle", "1:", "netem"]
    return argv + netem_args(shape, netem_limit(shape, mtu))


def delete_clsact(ipr: IPRoute, index: int) -> None:
    _ignore_missing(lambda: ipr.tc("del", "clsact", index=index))


def delete_root(ipr: IPRoute, index: int) -> None:
    _ignore_missing(lambda: ipr.tc("del", index=index, handle=ROOT_HANDLE, parent=TC_H_ROOT))


def _ignore_missing(call: Any) -> None:
    try:
        call()
    except NetlinkError as e:
        if e.code not in (errno.ENOENT, errno.EINVAL, errno.ENODEV):
            raise
