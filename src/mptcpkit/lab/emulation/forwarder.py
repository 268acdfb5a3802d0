"""Userspace link emulator for kernels without netem: a link model between TAP devices.

Runs as its own process (``python -I forwarder.py CONFIG_JSON``), stdlib only so it starts fast. It enters
the wire namespace first (so the taps are created there and teardown finds it by namespace), creates one TAP
per emulated direction, tells its parent it is ready through a pipe, then loops:

- read a frame (with its virtio-net header, so GSO frames up to 64 KiB pass whole); reading it frees the
  sender's skb, so the sender's TCP Small Queues / socket buffer no longer see it (as with a real router);
- run it through ``LinkModel``: drop-tail rate queue and exact serialization at the link rate, loss
  (seeded PRNG), then delay + uniform jitter, never reordering;
- write it back into the same TAP when due; tc on the TAP's ingress redirects it to the far wire end.

The process exits on SIGTERM/SIGINT, when the wire namespace is deleted, or when one of the watched
interfaces or its taps disappear, and then writes its counters to ``stats_path``.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import fcntl
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_USO4, TUN_F_USO6 = 0x01, 0x02, 0x04, 0x08, 0x20, 0x40
SIOCGIFFLAGS, SIOCSIFFLAGS, SIOCSIFTXQLEN = 0x8913, 0x8914, 0x8943
IFF_UP = 0x1
CLONE_NEWNET = 0x40000000
PR_SET_TIMERSLACK = 29
SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(os.uname().machine)
FAIR_SLICE_NS = 100_000
VNET_HDR_LEN = 10
READ_BUF = 256 * 1024
WATCH_INTERVAL_S = 0.25
MAX_BATCH = 64
# Bytes held per direction before frames are dropped (10 Gbit/s x 200 ms): bounds memory only.
MAX_QUEUE_BYTES = 256 * 1024 * 1024


def enter_netns(name: str) -> None:
    """setns(2) into /run/netns/NAME (os.setns only exists from Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def precise_timers() -> None:
    """1 ns timer slack: select() timeouts fire within a few us instead of the default 50 us."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def set_priority(priority: str) -> None:
    """Scheduling class, so frames leave on time on a busy machine.

    "rr" = SCHED_RR 1: wake-ups preempt ordinary tasks at once (tightest timing), but a saturated
    emulator would then starve every ordinary task on its CPU (up to the kernel's RT throttling).
    "fair" = nice -20 with a 0.1 ms EEVDF slice: quick wake-ups, still sharing the CPU fairly.
    "normal" = nice 0. ("adaptive" switches between rr and fair, see Priority.)
    """
    if priority == "rr":
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
        return
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    if priority == "fair":
        os.setpriority(os.PRIO_PROCESS, 0, -20)
        if SYS_SCHED_SETATTR is not None:
            # struct sched_attr VER0 (48 bytes): size, policy, flags, nice, priority, runtime, deadline, period
            attr = struct.pack("IIQiIQQQ", 48, os.SCHED_OTHER, 0, -20, 0, FAIR_SLICE_NS, 0, 0)
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall(SYS_SCHED_SETATTR, 0, attr, 0)  # before 6.12 slices are ignored: nice still helps
    else:
        os.setpriority(os.PRIO_PROCESS, 0, 0)


class Priority:
    """The "adaptive" policy: SCHED_RR while the emulator is lightly loaded (probes, Mbit/s links), where
    timing matters; fair nice -20 once it uses more than half a CPU (Gbit/s bulk), so it never
    monopolises a core. Re-evaluated every watch interval from the process's own CPU time.
    """

    BUSY, IDLE = 0.5, 0.25

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.current = ""
        self.switches = 0
        self.last_cpu = self._cpu()
        self.last_wall = time.monotonic()
        self.apply("rr" if policy == "adaptive" else policy)

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system

    def apply(self, priority: str) -> None:
        if priority == self.current:
            return
        try:
            set_priority(priority)
        except OSError as e:  # no CAP_SYS_NICE: keep running at normal priority
            print(f"forwarder: cannot set priority {priority}: {e}", file=sys.stderr)
            self.policy = "normal"
            return
        self.current = priority
        self.switches += 1

    def tick(self, now: float) -> None:
        if self.policy != "adaptive":
            return
        cpu = self._cpu()
        busy = (cpu - self.last_cpu) / max(now - self.last_wall, 1e-3)
        self.last_cpu, self.last_wall = cpu, now
        if self.current == "rr" and busy > self.BUSY:
            self.apply("fair")
        elif self.current == "fair" and busy < self.IDLE:
            self.apply("rr")


def open_tap(name: str, gso: bool, txqueuelen: int) -> int:
    """Create a non-persistent TAP (it vanishes with this process), UP, without IPv6 chatter."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    if gso:
        base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6)
        except OSError:  # kernels before 6.2 have no UDP segmentation offload on tun
            fcntl.ioctl(fd, TUNSETOFFLOAD, base)
    else:
        # Checksum offload only: the kernel segments GSO frames before they reach us, so loss is per packet.
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:
        pass  # no IPv6 in this kernel: nothing to silence
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16si20x", name.encode(), txqueuelen)
        fcntl.ioctl(sock, SIOCSIFTXQLEN, ifr)
        flags = struct.unpack(
            "16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, struct.pack("16sH22x", name.encode(), 0))
        )
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags[1] | IFF_UP))
    finally:
        sock.close()
    return fd


VNET_GSO_NONE = 0
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset


def wire_size(frame: bytes | bytearray | memoryview, n: int) -> tuple[int, int]:
    """(bytes on the wire, packets) of one frame read with its virtio-net header.

    A GSO frame stands for ``segs`` packets that each repeat the headers; wire bytes count Ethernet
    header + packet, as tbf does (no FCS/preamble). Headers end after the transport header, found from
    csum_start (the transport header's offset) plus the TCP data offset, or 8 for UDP.
    """
    length = n - VNET_HDR_LEN
    _flags, gso_type, _hdr_len, gso_size, csum_start, _off = VNET_HDR.unpack_from(frame, 0)
    if gso_type == VNET_GSO_NONE or gso_size == 0:
        return length, 1
    if gso_type & 0x7F in (1, 4):  # TCPv4, TCPv6
        doff = frame[VNET_HDR_LEN + csum_start + 12] >> 4
        hdr = csum_start + doff * 4
    else:  # UDP (UFO/USO)
        hdr = csum_start + 8
    payload = length - hdr
    if payload <= 0 or hdr <= 0:
        return length, 1
    segs = -(-payload // gso_size)
    return length + (segs - 1) * hdr, segs


class LinkModel:
    """Bottleneck queue + serialization at ``rate_bps`` (FIFO, drop-tail), then delay with uniform jitter.

    Pure timing, no I/O. Serialization times are computed exactly from the previous departure, so a
    late wake-up never loses capacity (a token bucket whose timer fires late does). Release times are
    kept non-decreasing: jitter never reorders.
    """

    def __init__(
        self,
        rate_bps: float | None,
        queue_packets: int,
        delay_s: float,
        jitter_s: float,
        loss: float,
        seed: int,
    ) -> None:
        self.rate_bps = rate_bps
        self.queue_packets = queue_packets
        self.delay = delay_s
        self.jitter = jitter_s
        self.loss = loss
        self.rng = random.Random(seed)
        self.link_free_at = 0.0
        self.backlog: collections.deque[tuple[float, int]] = collections.deque()  # (departure, packets)
        self.backlog_packets = 0
        self.last_release = 0.0
        self.lost = 0
        self.queue_drops = 0

    def admit(self, now: float, wire_bytes: int, packets: int) -> float | None:
        """When the frame leaves the far end, or None if the queue is full or the frame is lost."""
        departure = now
        if self.rate_bps:
            backlog = self.backlog
            while backlog and backlog[0][0] <= now:
                self.backlog_packets -= backlog.popleft()[1]
            if self.backlog_packets + packets > self.queue_packets and self.backlog_packets:
                self.queue_drops += packets
                return None
            start = self.link_free_at if self.link_free_at > now else now
            departure = start + wire_bytes * 8 / self.rate_bps
            self.link_free_at = departure
            backlog.append((departure, packets))
            self.backlog_packets += packets
        if self.loss and self.rng.random() < self.loss:  # lost on the wire: it used the link's time
            self.lost += packets
            return None
        release = departure + self.delay
        if self.jitter:
            release += self.rng.uniform(-self.jitter, self.jitter)
        if release < self.last_release:
            release = self.last_release
        self.last_release = release
        return release


class Direction:
    """One emulated direction: a TAP, its link model, the frames in flight and counters."""

    def __init__(self, spec: dict[str, Any], fd: int) -> None:
        self.tap: str = spec["tap"]
        self.fd = fd
        rate = spec.get("rate_bps")
        self.model = LinkModel(
            float(rate) if rate else None,
            int(spec.get("queue_packets", 1000)),
            float(spec["delay_s"]),
            float(spec["jitter_s"]),
            float(spec["loss"]),
            int(spec["seed"]),
        )
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.frames_in = 0
        self.frames_out = 0
        self.write_errors = 0
        self.bytes_out = 0
        self.queued_bytes = 0
        self.frames_overflow = 0

    def stats(self) -> dict[str, Any]:
        return {
            "tap": self.tap,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "packets_lost": self.model.lost,
            "packets_queue_dropped": self.model.queue_drops,
            "write_errors": self.write_errors,
            "frames_overflow": self.frames_overflow,
            "queued": len(self.queue),
        }


class Stop(Exception):
    """Raised by the signal handler to leave the loop cleanly."""


def _stop(signum: int, frame: object) -> None:
    raise Stop


def netns_alive(path: str, own_ino: int) -> bool:
    try:
        return os.stat(path).st_ino == own_ino
    except OSError:
        return False


def interfaces_alive(names: list[str]) -> bool:
    try:
        for name in names:
            socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def run(config: dict[str, Any]) -> dict[str, Any]:
    """The delay-line loop; returns final counters."""
    netns_path = f"/run/netns/{config['netns']}"
    own_ino = os.stat("/proc/self/ns/net").st_ino
    watch: list[str] = list(config["watch"])
    dirs: list[Direction] = config["_dirs"]
    by_fd = {d.fd: d for d in dirs}
    fds = list(by_fd)
    buf = bytearray(READ_BUF)
    view = memoryview(buf)
    readv, write, monotonic, sel = os.readv, os.write, time.monotonic, select.select
    max_queue = int(config.get("max_queue_bytes", MAX_QUEUE_BYTES))
    next_watch = monotonic() + WATCH_INTERVAL_S
    priority: Priority = config["_priority"]
    while True:
        now = monotonic()
        # Send what is due; compute how long we may sleep.
        timeout = WATCH_INTERVAL_S
        for d in dirs:
            q = d.queue
            while q and q[0][0] <= now:
                frame = q.popleft()[1]
                d.queued_bytes -= len(frame)
                try:
                    write(d.fd, frame)
                    d.frames_out += 1
                    d.bytes_out += len(frame) - VNET_HDR_LEN
                except OSError:
                    d.write_errors += 1
            if q:
                wait = q[0][0] - now
                if wait < timeout:
                    timeout = wait
        if now >= next_watch:
            if not netns_alive(netns_path, own_ino) or not interfaces_alive(watch):
                return {"exit": "wire gone", "directions": [d.stats() for d in dirs]}
            next_watch = now + WATCH_INTERVAL_S
            priority.tick(now)
        readable = sel(fds, [], [], timeout)[0]
        if not readable:
            continue
        now = monotonic()
        for fd in readable:
            d = by_fd[fd]
            for _ in range(MAX_BATCH):
                try:
                    n = readv(fd, [buf])
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    return {"exit": f"tap {d.tap}: {e}", "directions": [d.stats() for d in dirs]}
                d.frames_in += 1
                now = monotonic()
                size, packets = wire_size(buf, n)
                t = d.model.admit(now, size, packets)
                if t is None:
                    continue
                if d.queued_bytes + n > max_queue:
                    d.frames_overflow += 1  # the delay line is full: drop, like a full router buffer
                    continue
                frame = bytes(view[:n])
                if t <= now and not d.queue:
                    try:
                        write(fd, frame)
                        d.frames_out += 1
                        d.bytes_out += n - VNET_HDR_LEN
                    except OSError:
                        d.write_errors += 1
                else:
                    d.queue.append((t, frame))
                    d.queued_bytes += n


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[1])
    ready_fd = int(config["ready_fd"])
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # outlive the terminal/process that built the lab
    try:
        enter_netns(config["netns"])
        precise_timers()
        config["_priority"] = Priority(str(config.get("priority", "adaptive")))
        dirs = []
        for spec in config["directions"]:
            fd = open_tap(spec["tap"], bool(spec["gso"]), int(config.get("txqueuelen", 10000)))
            dirs.append(Direction(spec, fd))
        config["_dirs"] = dirs
    except (OSError, KeyError, ValueError) as e:
        os.write(ready_fd, f"error: {e}\n".encode())
        os.close(ready_fd)
        return 1
    os.write(ready_fd, b"ok\n")
    os.close(ready_fd)
    try:
        result = run(config)
    except Stop:
        result = {"exit": "signal", "directions": [d.stats() for d in config["_dirs"]]}
    result["priority"] = {"policy": config["_priority"].policy, "switches": config["_priority"].switches}
    stats_path = config.get("stats_path")
    if stats_path:
        try:
            with open(stats_path, "w") as f:
                json.dump(result, f)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
