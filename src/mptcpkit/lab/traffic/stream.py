"""The deterministic bulk stream and its receiver-side checker (pure: no sockets).

Stream layout: blocks of BLOCK bytes; block i = u64le(i) followed by the seed's random template bytes. The
counter makes every block unique (a misplaced, dropped or duplicated block is caught), the template makes the
stream incompressible and costs nothing to produce: the sender patches one counter per 64 KiB into a
pre-made 1 MiB buffer and sends it as is.

The stream ends with an end record at a block boundary (or at the announced size): u64 END, u32 length, JSON
(the sender's summary). Because the receive buffer is a multiple of BLOCK and filled in stream order, buffer
position p always holds stream offset = p (mod BLOCK), so `verify` mode compares received data with the
64 KiB template by one memcmp per block, with no copy (much cheaper than hashing; see docs/traffic.md).
"""

from __future__ import annotations

import ctypes
import hashlib
import random
import struct
import sys
from array import array

BLOCK = 64 * 1024
BLOCKS_PER_BUFFER = 16
BUFFER = BLOCK * BLOCKS_PER_BUFFER
END = 0xFFFF_FFFF_FFFF_FFFF
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
COUNTER = _U64.size
_STRIDE = BLOCK // COUNTER
"""distance between two block counters in a u64 view of a buffer"""
_NATIVE_LE = sys.byteorder == "little"
"""counters are little-endian: a native u64 view reads them directly only on little-endian machines"""

_memcmp = ctypes.PyDLL(None).memcmp  # holds the GIL: calls are short (<= 64 KiB)
_memcmp.restype = ctypes.c_int
_memcmp.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)


def template(seed: int) -> bytes:
    """The seed's BLOCK-sized random template (the first COUNTER bytes are overwritten per block)."""
    return random.Random(seed).randbytes(BLOCK)


def expected_bytes(seed: int, offset: int, length: int) -> bytes:
    """The stream bytes [offset, offset + length) — slow reference, for tests and small checks."""
    tpl = template(seed)
    out = bytearray()
    pos = offset
    while pos < offset + length:
        block, inner = divmod(pos, BLOCK)
        blk = _U64.pack(block) + tpl[COUNTER:]
        take = min(BLOCK - inner, offset + length - pos)
        out += blk[inner : inner + take]
        pos += take
    return bytes(out)


def end_record(summary_json: bytes) -> bytes:
    """The end-of-stream record that carries the sender's summary."""
    return _U64.pack(END) + _U32.pack(len(summary_json)) + summary_json


class StreamSource:
    """Produces the stream in BUFFER-sized pieces, hashing what it hands out when asked to."""

    def __init__(self, seed: int, *, sha256: bool) -> None:
        tpl = template(seed)
        self.buffer = bytearray(tpl * BLOCKS_PER_BUFFER)
        self.view = memoryview(self.buffer)
        self._counters = self.view.cast("Q")
        self.offset = 0
        self._hash = hashlib.sha256() if sha256 else None

    def next_chunk(self, limit: int | None = None) -> memoryview:
        """The next piece of the stream (BUFFER bytes, or fewer when `limit` bytes remain)."""
        first = self.offset // BLOCK
        if _NATIVE_LE:  # one strided store of the 16 counters instead of 16 calls (the sender's hot loop)
            self._counters[::_STRIDE] = array("Q", range(first, first + BLOCKS_PER_BUFFER))
        else:
            for i in range(BLOCKS_PER_BUFFER):
                _U64.pack_into(self.buffer, i * BLOCK, first + i)
        size = BUFFER if limit is None else min(BUFFER, limit)
        chunk = self.view[:size]
        if self._hash is not None:
            self._hash.update(chunk)
        self.offset += size
        return chunk

    def hexdigest(self) -> str | None:
        return None if self._hash is None else self._hash.hexdigest()


class StreamSink:
    """Checks received stream data in place and finds the end record.

    The caller receives into `buffer` at `fill` (never past its end), then calls `consume(n)`. When
    `fill` reaches the end of the buffer everything has been checked and both restart at 0.
    """

    def __init__(self, seed: int, *, integrity: str, size: int | None) -> None:
        self.integrity = integrity
        self.size = size
        self.buffer = bytearray(BUFFER)
        self.view = memoryview(self.buffer)
        self.fill = 0
        self.checked = 0
        self.offset = 0
        """stream offset of buffer[0]"""
        self.data_bytes = 0
        self.first_bad: int | None = None
        self.trailer: bytearray | None = None
        self._hash = hashlib.sha256() if integrity == "sha256" else None
        # verify compares against the 64 KiB template (stays in cache), not a buffer-sized copy of the stream
        self._ref = bytearray(template(seed)) if integrity == "verify" else bytearray()
        self._buf_addr = ctypes.addressof((ctypes.c_char * BUFFER).from_buffer(self.buffer))
        self._ref_addr = (
            ctypes.addressof((ctypes.c_char * BLOCK).from_buffer(self._ref)) if integrity == "verify" else 0
        )
        # `none` on a duration run checks only counters: all those in a received piece at once (see _consume_fast)
        self._counters = self.view.cast("Q") if integrity == "none" and size is None and _NATIVE_LE else None

    @property
    def ended(self) -> bool:
        return self.trailer is not None

    def consume(self, n: int) -> None:
        """Account for n bytes received at `fill`; check them; detect the end record."""
        self.fill += n
        if self._counters is not None and self._consume_fast():
            return
        buf = self.buffer
        pos = self.checked
        while pos < self.fill and self.trailer is None:
            abs_pos = self.offset + pos
            if self.size is not None and abs_pos >= self.size:
                self._start_trailer(pos)
                break
            inner = abs_pos % BLOCK
            if inner < COUNTER:
                avail = self.fill - pos
                want = COUNTER - inner
                if self.size is not None:
                    want = min(want, self.size - abs_pos)
                elif inner == 0:
                    if avail < COUNTER:
                        break  # wait for the whole counter before deciding whether it is END
                    if _U64.unpack_from(buf, pos)[0] == END:
                        self._start_trailer(pos)
                        break
                take = min(want, avail)
                got = bytes(buf[pos : pos + take])
                expect = _U64.pack(abs_pos // BLOCK)[inner : inner + take]
                if self.first_bad is None and got != expect:
                    self.first_bad = abs_pos + _first_diff(got, expect)
                if self._hash is not None:
                    self._hash.update(got)
                pos += take
                continue
            seg_end = min(self.fill, pos + BLOCK - inner)
            if self.size is not None:
                seg_end = min(seg_end, pos + self.size - abs_pos)
            if self._hash is not None:
                self._hash.update(self.view[pos:seg_end])
            elif self._ref_addr and self.first_bad is None:
                length = seg_end - pos
                if _memcmp(self._buf_addr + pos, self._ref_addr + inner, length) != 0:
                    ref = self._ref[inner : inner + length]
                    self.first_bad = abs_pos + _first_diff(bytes(buf[pos:seg_end]), bytes(ref))
            pos = seg_end
        if self.trailer is None:
            self.data_bytes = self.offset + pos if self.size is None else min(self.offset + pos, self.size)
        self.checked = pos
        if self.fill == BUFFER and self.trailer is None:
            self.offset += BUFFER
            self.fill = self.checked = 0

    def _consume_fast(self) -> bool:
        """Check every whole counter in [checked, fill) with one strided read; False leaves it to `consume`.

        The per-block loop of `consume` costs about 1 us per 64 KiB: several % of the receiver's core at tens
        of Gbit/s, on the CPU-bound runs that compare MPTCP with TCP. When every counter is the expected one
        (no end record, nothing misplaced) this accounts for the piece in one step; any surprise falls back to
        the exact loop, which finds the end record or the first bad offset.
        """
        assert self._counters is not None
        first = -(-self.checked // BLOCK)  # first block boundary at or after `checked`
        last = (
            (self.fill - COUNTER) // BLOCK + 1 if self.fill >= COUNTER else 0
        )  # boundaries with whole counters
        if last > first:
            base = self.offset // BLOCK
            got = self._counters[first * _STRIDE : last * _STRIDE : _STRIDE].tolist()
            if got != list(range(base + first, base + last)):
                return False
        boundary = self.fill - self.fill % BLOCK
        # a counter cut by the end of what was received waits for its remaining bytes
        self.checked = boundary if self.fill - boundary < COUNTER and boundary >= self.checked else self.fill
        self.data_bytes = self.offset + self.checked
        if self.fill == BUFFER:
            self.offset += BUFFER
            self.fill = self.checked = 0
        return True

    def _start_trailer(self, pos: int) -> None:
        self.data_bytes = self.offset + pos
        self.trailer = bytearray(self.buffer[pos : self.fill])

    def hexdigest(self) -> str | None:
        return None if self._hash is None else self._hash.hexdigest()


def parse_trailer(data: bytes) -> tuple[bytes, bytes] | None:
    """Split an end record (+ what follows it) into (summary JSON, rest); None while incomplete."""
    head = COUNTER + _U32.size
    if len(data) < head:
        return None
    (length,) = _U32.unpack_from(data, COUNTER)
    if len(data) < head + length:
        return None
    return bytes(data[head : head + length]), bytes(data[head + length :])


def _first_diff(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))
