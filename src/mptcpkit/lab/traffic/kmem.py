"""Kernel socket memory from /proc/net/sockstat and /proc/slabinfo (pure parsers + one reader)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mptcpkit.lab.traffic.model import KernelMemory

PAGE = 4096
SOCKET_SLABS = (
    "TCP",
    "TCPv6",
    "MPTCP",
    "MPTCPv6",
    "request_sock_TCP",
    "request_sock_TCPv6",
    "tw_sock_TCP",
    "tw_sock_TCPv6",
    "request_sock_subflow_v4",
    "request_sock_subflow_v6",
)


@dataclass(slots=True)
class MemSnapshot:
    tcp_mem_pages: int
    slabs: dict[str, tuple[int, int]] = field(default_factory=dict)
    """name -> (active objects, object size)"""


def parse_sockstat_tcp_mem(text: str) -> int:
    """The `mem` field (pages) of the `TCP:` line of /proc/net/sockstat (0 when absent)."""
    for line in text.splitlines():
        if line.startswith("TCP:"):
            parts = line.split()
            for key, value in zip(parts[1::2], parts[2::2], strict=False):
                if key == "mem":
                    return int(value)
    return 0


def parse_slabinfo(text: str, names: tuple[str, ...] = SOCKET_SLABS) -> dict[str, tuple[int, int]]:
    """name -> (active_objs, objsize) for the named slabs of /proc/slabinfo (version 2.x)."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in names:
            out[parts[0]] = (int(parts[1]), int(parts[3]))
    return out


def snapshot() -> MemSnapshot:
    """Read both files now; unreadable ones count as empty (slabinfo needs root)."""
    try:
        mem = parse_sockstat_tcp_mem(Path("/proc/net/sockstat").read_text())
    except OSError:
        mem = 0
    try:
        slabs = parse_slabinfo(Path("/proc/slabinfo").read_text())
    except OSError:
        slabs = {}
    return MemSnapshot(mem, slabs)


def difference(before: MemSnapshot, during: MemSnapshot, connections: int) -> KernelMemory:
    """What `connections` open connections cost the kernel (during minus before)."""
    sock_bytes = (during.tcp_mem_pages - before.tcp_mem_pages) * PAGE
    slab_objs = {}
    slab_bytes = 0
    for name, (active, size) in during.slabs.items():
        base = before.slabs.get(name, (0, size))[0]
        slab_objs[name] = active - base
        slab_bytes += (active - base) * size
    per = (sock_bytes + slab_bytes) / connections if connections else 0.0
    return KernelMemory(
        connections=connections,
        sockstat_mem_bytes=sock_bytes,
        slab_bytes=slab_bytes,
        per_connection_bytes=per,
        slabs=slab_objs,
    )
