"""Does this kernel have netem? Found out by trying, once per process."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import uuid

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from mptcpkit.errors import EnvironmentProblem

PROBE_PREFIX = "mkt-em-probe-"


@functools.cache
def netem_available() -> bool:
    """Create a netem qdisc on ``lo`` of a throwaway namespace (the kernel loads sch_netem if it can).

    Trying is the only reliable test: /proc/config.gz and modules.builtin may be absent or lie (containers).
    """
    name = f"{PROBE_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        netns.create(name)
    except OSError as e:
        raise EnvironmentProblem(
            f"cannot create a network namespace to probe for netem: {e}", hint="run as root"
        ) from e
    try:
        with IPRoute(netns=name, flags=0) as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            try:
                ipr.tc("add", "netem", index=lo, handle=0x10000, delay=1000)
            except NetlinkError as e:
                if e.code in (errno.ENOENT, errno.EOPNOTSUPP, errno.EINVAL):
                    return False
                raise
            return True
    finally:
        with contextlib.suppress(OSError):
            netns.remove(name)
