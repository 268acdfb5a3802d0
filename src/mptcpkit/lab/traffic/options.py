"""Options of one engine server or client process (shared by the process CLI, the runner API and core)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ClientOptions:
    connect: str
    port: int
    mode: str
    proto: str = "mptcp"
    bytes: int | None = None
    duration: float | None = None
    interval: float = 0.1
    parallel: int = 1
    rr_size: tuple[int, int] = (1, 1)
    count: int | None = None
    timeout: float | None = None
    seed: int = 1
    integrity: str = "sha256"
    bind: str | None = None
    sndbuf: int | None = None
    rcvbuf: int | None = None
    corrupt_offset: int | None = None
    """test-only: the sender flips the byte at this stream offset after hashing it"""
    message_size: int = 1024
    """stream: bytes per message"""
    rate: float | None = None
    """stream: application rate in bit/s"""
    join: int = 0
    """connect: also wait until this many additional subflows joined (MPTCP)"""
    concurrency: int = 1
    """connect: connections in flight at once"""
    memory: bool = False
    """bulk: sample kernel socket memory (sockstat, slab) once every connection is up"""


@dataclass(slots=True)
class ServerOptions:
    bind: str
    port: int
    proto: str = "mptcp"
    once: bool = False
    timeout: float | None = None
    interval: float = 0.1
    sndbuf: int | None = None
    rcvbuf: int | None = None
    corrupt_offset: int | None = None
