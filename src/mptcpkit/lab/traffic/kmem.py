"""Kernel socket memory from /proc/net/sockstat and /proc/slabinfo (pure parsers + one reader)."""

from __future__ import annotations

import socket
import struct
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


SO_MEMINFO = 55
_MEMINFO = struct.Struct("9I")
_RMEM_ALLOC, _WMEM_QUEUED, _FWD_ALLOC, _OPTMEM = 0, 5, 4, 6


def socket_buffer_bytes(sock: socket.socket) -> int:
    """rmem_alloc + wmem_queued + fwd_alloc + optmem of one socket (SO_MEMINFO; works on MPTCP sockets)."""
    try:
        info = _MEMINFO.unpack(sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size))
    except (OSError, struct.error):
        return 0
    return int(info[_RMEM_ALLOC] + info[_WMEM_QUEUED] + info[_FWD_ALLOC] + info[_OPTMEM])


def socket_object_bytes(slabs: dict[str, tuple[int, int]], proto: str, subflows: int, v6: bool) -> int:
    """Slab object size of one connection's sockets: TCP, or MPTCP plus one TCP socket per subflow."""
    tcp = slabs.get("TCPv6" if v6 else "TCP", (0, 0))[1]
    if proto != "mptcp":
        return tcp
    return slabs.get("MPTCPv6" if v6 else "MPTCP", (0, 0))[1] + max(1, subflows) * tcp


def difference(
    before: MemSnapshot, during: MemSnapshot, connections: int, own_bytes: int | None = None
) -> KernelMemory:
    """What `connections` open connections cost the kernel: machine-wide during minus before; `own_bytes`
    (socket buffers + objects measured on the sockets) gives the per-connection figure when known."""
    sock_bytes = (during.tcp_mem_pages - before.tcp_mem_pages) * PAGE
    slab_objs = {}
    slab_bytes = 0
    for name, (active, size) in during.slabs.items():
        base = before.slabs.get(name, (0, size))[0]
        slab_objs[name] = active - base
        slab_bytes += (active - base) * size
    total = own_bytes if own_bytes is not None else sock_bytes + slab_bytes
    per = total / connections if connections else 0.0
    return KernelMemory(
        connections=connections,
        sockstat_mem_bytes=sock_bytes,
        slab_bytes=slab_bytes,
        per_connection_bytes=per,
        slabs=slab_objs,
    )
