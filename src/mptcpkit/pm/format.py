"""Text rendering of mptcp_pm events for `pm monitor`, close to `ip mptcp monitor`'s layout."""

from __future__ import annotations

from mptcpkit.netlink.mptcp_events import MptcpEvent


def event_line(e: MptcpEvent) -> str:
    """`[      CREATED] token=2f3a1b0c saddr=10.0.0.1 ...`: the type, then every attribute present."""
    d = e.to_dict()
    kind = str(d.pop("type")).upper()
    parts = []
    for k, v in d.items():
        if k == "token" and isinstance(v, int):
            parts.append(f"token={v:08x}")
        elif isinstance(v, bool):
            parts.append(f"{k}={int(v)}")
        else:
            parts.append(f"{k}={v}")
    return f"[{kind:>16}] " + " ".join(parts)
