"""Netlink wire format: nlmsghdr, genlmsghdr and NLA (TLV) packing and unpacking, with no I/O.

Everything here is a pure function over bytes. Decoders raise only `DecodeError`, whatever the input, so a
garbled message from the kernel (or a fuzzer) can never crash a caller with an IndexError or struct.error.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from mptcpkit.netlink.errors import DecodeError

# nlmsghdr types and flags (uapi/linux/netlink.h)
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ECHO = 0x08
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_CAPPED = 0x100  # on NLMSG_ERROR: the echoed request is only its header
NLM_F_ACK_TLVS = 0x200  # on NLMSG_ERROR: extended-ack TLVs follow

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# extended ack attributes (enum nlmsgerr_attrs)
NLMSGERR_ATTR_MSG = 1
NLMSGERR_ATTR_OFFS = 2

_NLMSGHDR = struct.Struct("=IHHII")
_GENLMSGHDR = struct.Struct("=BBH")
_NLA = struct.Struct("=HH")
NLMSGHDR_LEN = _NLMSGHDR.size
GENLMSGHDR_LEN = _GENLMSGHDR.size


def align4(n: int) -> int:
    """Netlink aligns every header and attribute to 4 bytes."""
    return (n + 3) & ~3


@dataclass(frozen=True, slots=True)
class Nlmsg:
    """One netlink message: its header fields and the payload after the 16-byte header."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class GenlMsg:
    """A generic-netlink payload: command, version and the raw attribute stream."""

    cmd: int
    version: int
    attrs: bytes


@dataclass(frozen=True, slots=True)
class NlError:
    """NLMSG_ERROR payload: errno 0 is an ACK; `extack` is the kernel's human-readable reason if sent."""

    errno: int
    extack: str | None
    bad_attr_offset: int | None
    request_seq: int


def pack_nlmsg(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    """Build one netlink message (header + payload, padded to 4 bytes)."""
    length = NLMSGHDR_LEN + len(payload)
    return _NLMSGHDR.pack(length, msg_type, flags, seq, pid) + payload + b"\0" * (align4(length) - length)


def iter_nlmsgs(data: bytes) -> Iterator[Nlmsg]:
    """Split a datagram read from a netlink socket into messages; raise DecodeError on a bad length."""
    offset = 0
    while offset < len(data):
        if len(data) - offset < NLMSGHDR_LEN:
            raise DecodeError(f"truncated nlmsghdr at offset {offset}")
        length, msg_type, flags, seq, pid = _NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR_LEN or offset + length > len(data):
            raise DecodeError(f"bad nlmsg length {length} at offset {offset}")
        yield Nlmsg(msg_type, flags, seq, pid, bytes(data[offset + NLMSGHDR_LEN : offset + length]))
        offset += align4(length)


def pack_genl(cmd: int, version: int, attrs: bytes = b"") -> bytes:
    """Build a generic-netlink payload (genlmsghdr + attributes)."""
    return _GENLMSGHDR.pack(cmd, version, 0) + attrs


def unpack_genl(payload: bytes) -> GenlMsg:
    if len(payload) < GENLMSGHDR_LEN:
        raise DecodeError("truncated genlmsghdr")
    cmd, version, _ = _GENLMSGHDR.unpack_from(payload)
    return GenlMsg(cmd, version, payload[GENLMSGHDR_LEN:])


def pack_attr(attr_type: int, value: bytes, *, nested: bool = False) -> bytes:
    """Build one NLA; `nested` sets NLA_F_NESTED, which strict kernel policies require for nests."""
    length = _NLA.size + len(value)
    flag = NLA_F_NESTED if nested else 0
    return _NLA.pack(length, attr_type | flag) + value + b"\0" * (align4(length) - length)


def parse_attrs(data: bytes) -> list[tuple[int, bytes]]:
    """Split an attribute stream into (type without flag bits, value) pairs, in wire order."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    while offset + _NLA.size <= len(data):
        length, attr_type = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > len(data):
            raise DecodeError(f"bad attribute length {length} at offset {offset}")
        out.append((attr_type & NLA_TYPE_MASK, bytes(data[offset + _NLA.size : offset + length])))
        offset += align4(length)
    return out


def attr_map(data: bytes) -> dict[int, bytes]:
    """Attributes as a dict (the last one wins, as in the kernel's nla_parse)."""
    return dict(parse_attrs(data))


# --- scalar codecs: all raise DecodeError on a wrong length ------------------------------------------------


def _unpack(fmt: str, value: bytes, what: str) -> int:
    s = struct.Struct(fmt)
    if len(value) != s.size:
        raise DecodeError(f"{what}: expected {s.size} bytes, got {len(value)}")
    result: int = s.unpack(value)[0]
    return result


def get_u8(value: bytes) -> int:
    return _unpack("=B", value, "u8")


def get_u16(value: bytes) -> int:
    return _unpack("=H", value, "u16")


def get_be16(value: bytes) -> int:
    return _unpack(">H", value, "be16")


def get_u32(value: bytes) -> int:
    return _unpack("=I", value, "u32")


def get_s32(value: bytes) -> int:
    return _unpack("=i", value, "s32")


def get_string(value: bytes) -> str:
    """NLA_NUL_STRING/NLA_STRING: stop at the first NUL; undecodable bytes are a DecodeError."""
    try:
        return value.split(b"\0", 1)[0].decode()
    except UnicodeDecodeError as exc:
        raise DecodeError(f"bad string attribute: {exc}") from None


def u8(v: int) -> bytes:
    return struct.pack("=B", v)


def u16(v: int) -> bytes:
    return struct.pack("=H", v)


def be16(v: int) -> bytes:
    return struct.pack(">H", v)


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def s32(v: int) -> bytes:
    return struct.pack("=i", v)


def string(v: str) -> bytes:
    return v.encode() + b"\0"


# --- NLMSG_ERROR -----------------------------------------------------------------------------------------


def parse_error(msg: Nlmsg) -> NlError:
    """Decode NLMSG_ERROR: errno, the echoed request's seq and the extended-ack text if any."""
    p = msg.payload
    if len(p) < 4 + NLMSGHDR_LEN:
        raise DecodeError("truncated NLMSG_ERROR")
    err = -_unpack("=i", p[:4], "errno")
    orig_len, _, _, orig_seq, _ = _NLMSGHDR.unpack_from(p, 4)
    extack: str | None = None
    offs: int | None = None
    if msg.flags & NLM_F_ACK_TLVS:
        skip = NLMSGHDR_LEN if msg.flags & NLM_F_CAPPED else orig_len
        if skip < NLMSGHDR_LEN or 4 + align4(skip) > len(p):
            raise DecodeError("bad echoed request length in NLMSG_ERROR")
        for attr_type, value in parse_attrs(p[4 + align4(skip) :]):
            if attr_type == NLMSGERR_ATTR_MSG:
                extack = get_string(value) or None
            elif attr_type == NLMSGERR_ATTR_OFFS:
                offs = get_u32(value)
    return NlError(err, extack, offs, orig_seq)
