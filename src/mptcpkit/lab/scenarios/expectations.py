"""Analytic expectations for lab scenarios: what the links allow, before anything is measured. Pure functions.

The goodput limit of a rate-shaped path is the link-layer rate times the share of each frame that is payload.
tbf/htb on a veth count the Ethernet header (14 bytes) but not preamble/FCS, so a full frame is MTU + 14 bytes.
A TCP segment carries MSS bytes (1448 with timestamps at MTU 1500). An MPTCP data segment also carries the DSS
option: the lab measured 1424 payload bytes in a 1514-byte frame while the subflow still reports MSS 1448, so
MPTCP payload = MSS - 24.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

ETHERNET_HEADER = 14
MPTCP_DSS_OVERHEAD = 24


def payload_per_segment(mss: int, mptcp: bool) -> int:
    """Payload bytes in one full-sized segment."""
    return mss - MPTCP_DSS_OVERHEAD if mptcp else mss


def goodput_limit(rate_bps: float, mss: int, mtu: int = 1500, mptcp: bool = True) -> float:
    """Highest application goodput (bit/s) one path shaped to `rate_bps` can carry."""
    return rate_bps * payload_per_segment(mss, mptcp) / (mtu + ETHERNET_HEADER)


def aggregate_goodput_limit(
    rates_bps: Sequence[float], mss: int, mtu: int = 1500, mptcp: bool = True
) -> float:
    """Sum of the per-path goodput limits."""
    return sum(goodput_limit(rate, mss, mtu, mptcp) for rate in rates_bps)


def simult_flows_time_bound(size_bytes: int, rates_bps: Sequence[float], slack_s: float = 0.05) -> float:
    """The kernel selftest simult_flows.sh bound for a transfer of `size_bytes` over paths of `rates_bps`.

    The selftest allows 10 % header overhead on the aggregate rate, 400 ms for the MP_JOIN handshakes, and a
    small slack: size*8*10/9 / (r1+r2) + 0.4 s + slack.
    """
    return size_bytes * 8 * 10 / 9 / sum(rates_bps) + 0.4 + slack_s


def jain_index(values: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when every flow gets the same, 1/n when one gets everything."""
    if not values:
        return math.nan
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else math.nan
