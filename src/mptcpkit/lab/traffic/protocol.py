"""Control framing between engine client and server (pure): u32 big-endian length + JSON object.

A session starts with the client's hello frame and the server's reply frame; bulk streams end with an end
record (see stream.py) and the receiver's summary frame.
"""

from __future__ import annotations

import json
import struct
from typing import Any

_LEN = struct.Struct("!I")
HEADER = _LEN.size
MAX_FRAME = 16 * 1024 * 1024
VERSION = 1


class ProtocolError(Exception):
    """The peer sent something that is not an engine frame (wrong port? different version?)."""


def encode_frame(obj: dict[str, Any]) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return _LEN.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    length = int(_LEN.unpack(header)[0])
    if length > MAX_FRAME:
        raise ProtocolError(f"control frame of {length} bytes: peer is not an mptcpkit traffic engine")
    return length


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"bad control frame: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad control frame: not a JSON object")
    return obj


PROBE_MAGIC = b"\xffPRB"
"""First bytes of a connect-mode probe connection (not a valid frame header: the length would be > MAX_FRAME)"""
_U32 = struct.Struct("!I")


def encode_probe(response_bytes: int) -> bytes:
    """A probe asks the accepting server to answer with `response_bytes` bytes and close."""
    return PROBE_MAGIC + _U32.pack(response_bytes)


def decode_probe_size(data: bytes) -> int:
    size = int(_U32.unpack(data)[0])
    if size > MAX_FRAME * 64:
        raise ProtocolError(f"probe asks for {size} bytes")
    return size
