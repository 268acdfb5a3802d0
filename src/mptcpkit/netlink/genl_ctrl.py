"""The generic-netlink controller (`nlctrl`): family name -> id and multicast groups. Pure codec."""

from __future__ import annotations

from dataclasses import dataclass, field

from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.errors import DecodeError

GENL_ID_CTRL = 0x10
CTRL_CMD_NEWFAMILY = 1
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_VERSION = 3
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2


@dataclass(frozen=True, slots=True)
class FamilyInfo:
    """What the controller says about one family: its dynamic id, version and multicast group ids by name."""

    name: str
    id: int
    version: int
    mcast_groups: dict[str, int] = field(default_factory=dict)


def encode_getfamily(name: str) -> bytes:
    """genl payload of CTRL_CMD_GETFAMILY for `name` (send it to GENL_ID_CTRL)."""
    return nlmsg.pack_genl(CTRL_CMD_GETFAMILY, 1, nlmsg.pack_attr(CTRL_ATTR_FAMILY_NAME, nlmsg.string(name)))


def decode_family(payload: bytes) -> FamilyInfo:
    """Decode CTRL_CMD_NEWFAMILY (the reply to GETFAMILY)."""
    genl = nlmsg.unpack_genl(payload)
    attrs = nlmsg.attr_map(genl.attrs)
    if CTRL_ATTR_FAMILY_ID not in attrs or CTRL_ATTR_FAMILY_NAME not in attrs:
        raise DecodeError("family reply lacks id or name")
    groups: dict[str, int] = {}
    for _, grp in nlmsg.parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, b"")):
        g = nlmsg.attr_map(grp)
        if CTRL_ATTR_MCAST_GRP_NAME in g and CTRL_ATTR_MCAST_GRP_ID in g:
            groups[nlmsg.get_string(g[CTRL_ATTR_MCAST_GRP_NAME])] = nlmsg.get_u32(g[CTRL_ATTR_MCAST_GRP_ID])
    version = nlmsg.get_u32(attrs[CTRL_ATTR_VERSION]) if CTRL_ATTR_VERSION in attrs else 0
    return FamilyInfo(
        name=nlmsg.get_string(attrs[CTRL_ATTR_FAMILY_NAME]),
        id=nlmsg.get_u16(attrs[CTRL_ATTR_FAMILY_ID]),
        version=version,
        mcast_groups=groups,
    )
