"""Userspace link emulator for kernels without netem: a link model between TAP devices.

Runs as its own process (``python -I forwarder.py CONFIG_JSON``), stdlib only so it starts fast. It enters
the wire namespace first (so the taps are created there and teardown finds it by namespace), creates one TAP
per emulated direction, tells its parent it is ready through a pipe, then loops:

- read a frame (with its virtio-net header, so GSO frames up to 64 KiB pass whole); reading it frees the
  sender's skb, so the sender's TCP Small Queues / socket buffer no longer see it (as with a real router);
- run it through ``LinkModel`` per packet: loss (seeded PRNG), drop-tail rate queue with exact
  serialization at the link rate, then delay + uniform jitter (which reorders, as netem's does). A GSO
  frame stays whole unless one of its packets is lost or finds the queue full: then it is carved into
  smaller GSO frames around that packet (``carve``), so loss is per packet without per-packet work;
- write it back into the same TAP when due; tc on the TAP's ingress redirects it to the far wire end.

The process exits on SIGTERM/SIGINT, when the wire namespace is deleted, or when one of the watched
interfaces or its taps disappear, and then writes its counters to ``stats_path``.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import heapq
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

if __package__:
    from mptcpkit.lab.emulation.forwarder_control import (
        CONTROL_MAX,
        handle_control,
        open_control,
        parse_command,
    )
    from mptcpkit.lab.emulation.forwarder_priority import Priority
else:  # run as a script (python -I forwarder.py): the sibling files, without importing the package
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))
    from forwarder_control import (  # type: ignore[import-not-found,no-redef]
        CONTROL_MAX,
        handle_control,
        open_control,
        parse_command,
    )
    from forwarder_priority import Priority  # type: ignore[import-not-found,no-redef]

__all__ = ["CONTROL_MAX", "Priority", "parse_command"]

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
VNET_HDR_LEN = 10
READ_BUF = 256 * 1024
WATCH_INTERVAL_S = 0.25
MAX_BATCH = 64
MAX_LEAD_S = 0.0003
"""cap of the timer lead: how much earlier than a release the loop asks to be woken (see `WakeLead`)"""
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


def open_tap(name: str, gso: bool, txqueuelen: int) -> int:
    """Create a non-persistent TAP (it vanishes with this process), UP, without IPv6 chatter."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
    set_offload(fd, gso)
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


def set_offload(fd: int, gso: bool) -> None:
    """Take whole GSO frames, or checksum offload only (the kernel segments first: per-packet timing).

    Also used at run time when a control command moves the rate across the GSO threshold.
    """
    if gso:
        base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, base | TUN_F_USO4 | TUN_F_USO6)
        except OSError:  # kernels before 6.2 have no UDP segmentation offload on tun
            fcntl.ioctl(fd, TUNSETOFFLOAD, base)
    else:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)


VNET_GSO_NONE = 0
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_UDP_L4 = 1, 3, 4, 5
ETH_LEN = 14
TCP_CWR, TCP_PSH, TCP_FIN = 0x80, 0x08, 0x01


class Frame:
    """Where the parts of one frame read with its virtio-net header lie, and how many packets it stands for.

    A GSO frame holds ``segs`` packets that each repeat the headers (Ethernet .. transport, ``hdr`` bytes
    from the Ethernet header): segment i carries payload bytes [i*gso_size, (i+1)*gso_size).
    """

    __slots__ = ("gso_size", "hdr", "l4", "last_wire", "n", "proto", "seg_wire", "segs", "wire")

    def __init__(self, buf: bytes | bytearray | memoryview, n: int) -> None:
        length = n - VNET_HDR_LEN
        self.n = n
        _flags, gso_type, _hdr_len, gso_size, csum_start, _off = VNET_HDR.unpack_from(buf, 0)
        self.segs, self.gso_size, self.hdr, self.l4, self.proto = 1, 0, length, 0, 0
        self.wire = self.seg_wire = self.last_wire = length
        kind = gso_type & 0x7F
        if kind == VNET_GSO_NONE or gso_size == 0 or csum_start <= ETH_LEN:
            return
        if kind in (GSO_TCPV4, GSO_TCPV6):
            hdr = csum_start + (buf[VNET_HDR_LEN + csum_start + 12] >> 4) * 4
        elif kind == GSO_UDP_L4:
            hdr = csum_start + 8
        else:  # UFO (GSO_UDP) fragments one datagram: not offered by our TAPs, and not per-packet
            return
        payload = length - hdr
        if payload <= 0:
            return
        segs = -(-payload // gso_size)
        self.segs, self.gso_size, self.hdr, self.l4, self.proto = segs, gso_size, hdr, csum_start, kind
        self.seg_wire = hdr + gso_size
        self.last_wire = hdr + payload - (segs - 1) * gso_size
        self.wire = length + (segs - 1) * hdr


def wire_size(frame: bytes | bytearray | memoryview, n: int) -> tuple[int, int]:
    """(bytes on the wire, packets) of one frame: Ethernet header + packet for each segment, as tbf counts."""
    parsed = Frame(frame, n)
    return parsed.wire, parsed.segs


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _ip_checksum(header: bytes | bytearray) -> int:
    return ~_fold(sum(struct.unpack(f"!{len(header) // 2}H", header))) & 0xFFFF


def carve(buf: bytes | bytearray | memoryview, f: Frame, first: int, last: int) -> bytes:
    """Segments [first, last) of a GSO frame as a frame of their own, headers fixed up as GSO would.

    IP length (and IPv4 id + header checksum), TCP sequence number and the flags TSO gives only the first
    (CWR) or last (FIN, PSH) segment, UDP length, and the pseudo-header checksum that NEEDS_CSUM frames
    carry in the transport checksum field (it includes the transport length, so it moves with it).
    """
    v, l4 = VNET_HDR_LEN, VNET_HDR_LEN + f.l4
    body_start = v + f.hdr + first * f.gso_size
    body_end = min(v + f.hdr + last * f.gso_size, f.n)
    head = bytearray(buf[: v + f.hdr])
    old_l4_len = f.n - l4
    new_l4_len = (f.hdr - f.l4) + body_end - body_start
    ip = v + ETH_LEN
    if head[ip] >> 4 == 4:
        ihl = (head[ip] & 0x0F) * 4
        struct.pack_into("!H", head, ip + 2, f.l4 - ETH_LEN + new_l4_len)
        ident = struct.unpack_from("!H", head, ip + 4)[0]
        struct.pack_into("!H", head, ip + 4, (ident + first) & 0xFFFF)
        struct.pack_into("!H", head, ip + 10, 0)
        struct.pack_into("!H", head, ip + 10, _ip_checksum(head[ip : ip + ihl]))
    else:  # IPv6: payload length excludes the fixed 40-byte header
        struct.pack_into("!H", head, ip + 4, f.l4 - ETH_LEN - 40 + new_l4_len)
    if f.proto in (GSO_TCPV4, GSO_TCPV6):
        seq = struct.unpack_from("!I", head, l4 + 4)[0]
        struct.pack_into("!I", head, l4 + 4, (seq + first * f.gso_size) & 0xFFFFFFFF)
        if first:
            head[l4 + 13] &= ~TCP_CWR & 0xFF
        if last < f.segs:
            head[l4 + 13] &= ~(TCP_FIN | TCP_PSH) & 0xFF
        check_at = l4 + 16
    else:
        struct.pack_into("!H", head, l4 + 4, new_l4_len)
        check_at = l4 + 6
    check = struct.unpack_from("!H", head, check_at)[0]
    check = _fold(check + (~old_l4_len & 0xFFFF) + new_l4_len)
    struct.pack_into("!H", head, check_at, check)
    return bytes(head) + bytes(buf[body_start:body_end])


class LinkModel:
    """One link direction as netem models it, per packet: loss, drop-tail rate queue, delay + jitter.

    Pure timing, no I/O. ``admit`` takes a frame of ``segs`` packets (a GSO frame) and returns the runs of
    packets that survive, each with its release time, so a GSO frame is split only where a packet is lost
    or the queue overflows. Loss is decided before the queue, as netem does, so a lossy link still
    delivers its full rate when overloaded. Loss is a Bernoulli trial per packet, drawn as geometric gaps:
    a frame that loses nothing costs one comparison. Serialization is exact from the previous departure
    (a late wake-up never loses capacity). Jitter is drawn per run and may reorder, as netem's does.
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
        self.lost = 0
        self.queue_drops = 0
        self.log_keep = math.log1p(-loss) if 0 < loss < 1 else 0.0
        self.until_loss = self._gap()

    def reconfigure(
        self, rate_bps: float | None, queue_packets: int, delay_s: float, jitter_s: float, loss: float
    ) -> None:
        """New settings from now on; frames already scheduled keep their times (as `tc qdisc change`)."""
        self.rate_bps = rate_bps
        self.queue_packets = queue_packets
        self.delay = delay_s
        self.jitter = jitter_s
        if loss != self.loss:
            self.loss = loss
            self.log_keep = math.log1p(-loss) if 0 < loss < 1 else 0.0
            self.until_loss = self._gap()

    def settings(self) -> dict[str, Any]:
        return {
            "rate_bps": self.rate_bps,
            "queue_packets": self.queue_packets,
            "delay_s": self.delay,
            "jitter_s": self.jitter,
            "loss": self.loss,
        }

    def _gap(self) -> int:
        """Packets that pass before the next lost one (geometric: a Bernoulli trial per packet)."""
        if not self.loss:
            return 1 << 62
        if self.loss >= 1:
            return 0
        return int(math.log(1.0 - self.rng.random()) / self.log_keep)

    def admit(
        self, now: float, segs: int = 1, seg_wire: int = 1500, last_wire: int | None = None
    ) -> list[tuple[int, int, float]]:
        """Runs ``(first, last, release)`` of the frame's packets [first, last) that leave the far end."""
        last_wire = seg_wire if last_wire is None else last_wire
        kept: list[tuple[int, int]] = []
        if self.until_loss >= segs:
            self.until_loss -= segs
            kept.append((0, segs))
        else:
            start = 0
            while self.until_loss < segs - start:
                lost = start + self.until_loss
                if lost > start:
                    kept.append((start, lost))
                self.lost += 1
                start = lost + 1
                self.until_loss = self._gap()
            if start < segs:
                self.until_loss -= segs - start
                kept.append((start, segs))
        runs: list[tuple[int, int, float]] = []
        rate = self.rate_bps
        if rate:
            backlog = self.backlog
            while backlog and backlog[0][0] <= now:
                self.backlog_packets -= backlog.popleft()[1]
            room = self.queue_packets - self.backlog_packets
        for first, last in kept:
            departure = now
            if rate:
                if room <= 0:
                    self.queue_drops += last - first
                    continue
                if last - first > room:  # drop-tail: the packets beyond the queue's room
                    self.queue_drops += last - first - room
                    last = first + room
                room -= last - first
                size = (last - first) * seg_wire + (last_wire - seg_wire if last == segs else 0)
                begin = self.link_free_at if self.link_free_at > now else now
                departure = begin + size * 8 / rate
                self.link_free_at = departure
                self.backlog.append((departure, last - first))
                self.backlog_packets += last - first
            release = departure + self.delay
            if self.jitter:
                release += self.rng.uniform(-self.jitter, self.jitter)
            runs.append((first, last, release))
        return runs


class ShapedDirection:
    """One emulated direction: a TAP, its link model, the frames in flight (a heap by release time)."""

    def __init__(self, spec: dict[str, Any], fd: int) -> None:
        self.tap: str = spec["tap"]
        self.fd = fd
        self.gso = bool(spec.get("gso", False))
        self.changes = 0
        rate = spec.get("rate_bps")
        self.model = LinkModel(
            float(rate) if rate else None,
            int(spec.get("queue_packets", 1000)),
            float(spec["delay_s"]),
            float(spec["jitter_s"]),
            float(spec["loss"]),
            int(spec["seed"]),
        )
        self.line: list[tuple[float, int, bytes]] = []  # heap of (release, arrival number, frame)
        self.frames_in = 0
        self.packets_in = 0
        self.frames_out = 0
        self.frames_split = 0
        self.write_errors = 0
        self.bytes_out = 0
        self.queued_bytes = 0
        self.frames_overflow = 0

    def settings(self) -> dict[str, Any]:
        return {"tap": self.tap, "gso": self.gso, "changes": self.changes, **self.model.settings()}

    def reconfigure(self, change: dict[str, Any]) -> None:
        """Apply one parsed ``set`` command (see ``parse_command``)."""
        if change["gso"] != self.gso:
            set_offload(self.fd, change["gso"])
            self.gso = change["gso"]
        self.model.reconfigure(
            change["rate_bps"], change["queue_packets"], change["delay_s"], change["jitter_s"], change["loss"]
        )
        self.changes += 1

    def stats(self) -> dict[str, Any]:
        return {
            "tap": self.tap,
            "changes": self.changes,
            "frames_in": self.frames_in,
            "packets_in": self.packets_in,
            "frames_out": self.frames_out,
            "frames_split": self.frames_split,
            "bytes_out": self.bytes_out,
            "packets_lost": self.model.lost,
            "packets_queue_dropped": self.model.queue_drops,
            "write_errors": self.write_errors,
            "frames_overflow": self.frames_overflow,
            "queued": len(self.line),
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


def _send(d: ShapedDirection, frame: bytes) -> None:
    try:
        os.write(d.fd, frame)
        d.frames_out += 1
        d.bytes_out += len(frame) - VNET_HDR_LEN
    except OSError:
        d.write_errors += 1


def _take(d: ShapedDirection, buf: bytearray, n: int, now: float, max_queue: int, arrivals: int) -> None:
    """Run one frame read from ``d``'s TAP through its link model into the delay line (or out at once)."""
    frame = Frame(buf, n)
    d.frames_in += 1
    d.packets_in += frame.segs
    runs = d.model.admit(now, frame.segs, frame.seg_wire, frame.last_wire)
    if len(runs) > 1 or (runs and runs[0][1] - runs[0][0] < frame.segs):
        d.frames_split += 1
    for first, last, release in runs:
        whole = first == 0 and last == frame.segs
        data = bytes(buf[:n]) if whole else carve(buf, frame, first, last)
        if d.queued_bytes + len(data) > max_queue:
            d.frames_overflow += 1  # the delay line is full: drop, like a full router buffer
            continue
        if release <= now and not d.line:
            _send(d, data)
        else:
            heapq.heappush(d.line, (release, arrivals, data))
            d.queued_bytes += len(data)


class WakeLead:
    """How late this machine wakes a sleeping loop, learnt from the loop's own timed waits.

    A release is due at an exact instant, but select() returns some tens of microseconds after its timeout
    (about 70 us at the median on an idle 2-core VM, even with 1 ns timer slack): every delayed packet was
    late by that much in each direction. The loop asks to be woken `lead` early and releases what is due
    within `lead`, so on average packets leave on time instead of one wake-up late.
    """

    def __init__(self) -> None:
        self.lead = 0.0

    def calibrate(self, samples: int = 16, wait_s: float = 0.0005) -> None:
        """Start from the median lateness of a few short waits (8 ms), so the first packets are on time too."""
        late = []
        for _ in range(samples):
            start = time.monotonic()
            select.select([], [], [], wait_s)
            late.append(time.monotonic() - start - wait_s)
        self.lead = min(max(sorted(late)[samples // 2], 0.0), MAX_LEAD_S)

    def observe(self, overshoot: float) -> None:
        """One timed wait ended `overshoot` seconds after its timeout (EWMA, 1/16 per sample, capped)."""
        self.lead += (min(max(overshoot, 0.0), MAX_LEAD_S) - self.lead) / 16


def run(config: dict[str, Any]) -> dict[str, Any]:
    """The delay-line loop; returns final counters."""
    netns_path = f"/run/netns/{config['netns']}"
    own_ino = os.stat("/proc/self/ns/net").st_ino
    watch: list[str] = list(config["watch"])
    dirs: list[ShapedDirection] = config["_dirs"]
    by_fd = {d.fd: d for d in dirs}
    fds = list(by_fd)
    control: socket.socket | None = config.get("_control")
    if control is not None:
        fds.append(control.fileno())
    buf = bytearray(READ_BUF)
    readv, monotonic, sel, heappop = os.readv, time.monotonic, select.select, heapq.heappop
    max_queue = int(config.get("max_queue_bytes", MAX_QUEUE_BYTES))
    next_watch = monotonic() + WATCH_INTERVAL_S
    priority: Priority = config["_priority"]
    arrivals = 0
    wake = WakeLead()
    wake.calibrate()
    while True:
        now = monotonic()
        # Send what is due (within the wake-up lead); compute how long we may sleep.
        due = now + wake.lead
        timeout = WATCH_INTERVAL_S
        for d in dirs:
            line = d.line
            while line and line[0][0] <= due:
                frame = heappop(line)[2]
                d.queued_bytes -= len(frame)
                _send(d, frame)
            if line:
                wait = line[0][0] - due
                if wait < timeout:
                    timeout = wait
        timed = timeout < WATCH_INTERVAL_S
        if now >= next_watch:
            if not netns_alive(netns_path, own_ino) or not interfaces_alive(watch):
                return {"exit": "wire gone", "directions": [d.stats() for d in dirs]}
            next_watch = now + WATCH_INTERVAL_S
            priority.tick(now)
        slept_at = monotonic()
        readable = sel(fds, [], [], timeout)[0]
        woke_at = monotonic()
        if timed and not readable:  # woken by the timeout of a release: learn how late that was
            wake.observe(woke_at - slept_at - timeout)
        # A frame that woke us arrived about one wake-up latency ago (never before we slept): date it so.
        first_arrival = max(slept_at, woke_at - wake.lead)
        for fd in readable:
            if fd not in by_fd:
                assert control is not None
                handle_control(control, dirs)
                continue
            d = by_fd[fd]
            for i in range(MAX_BATCH):
                try:
                    n = readv(fd, [buf])
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno == errno.EINTR:
                        continue
                    return {"exit": f"tap {d.tap}: {e}", "directions": [d.stats() for d in dirs]}
                arrivals += 1
                _take(d, buf, n, first_arrival if i == 0 else monotonic(), max_queue, arrivals)


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
            dirs.append(ShapedDirection(spec, fd))
        config["_dirs"] = dirs
        if config.get("control_path"):
            config["_control"] = open_control(str(config["control_path"]))
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
    if config.get("_control") is not None:
        config["_control"].close()
        with contextlib.suppress(OSError):
            os.unlink(str(config["control_path"]))
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
