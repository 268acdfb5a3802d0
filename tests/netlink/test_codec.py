"""Encoders and decoders round-trip; the wire layer handles alignment, nesting and errors."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from mptcpkit.netlink import genl_ctrl, nlmsg
from mptcpkit.netlink import mptcp_pm as pm
from mptcpkit.netlink.errors import DecodeError


def nested(payload: bytes, attr: int) -> dict[int, bytes]:
    genl = nlmsg.unpack_genl(payload)
    return nlmsg.attr_map(nlmsg.attr_map(genl.attrs)[attr])


def test_attr_padding_and_nested_flag() -> None:
    raw = nlmsg.pack_attr(1, b"\x01", nested=True)
    assert raw == b"\x05\x00\x01\x80\x01\x00\x00\x00"
    assert nlmsg.parse_attrs(raw) == [(1, b"\x01")]


def test_add_addr_request_layout() -> None:
    payload = pm.req_add_addr(ipaddress.ip_address("10.0.0.1"), id=5, flags=3, ifindex=2, port=None)
    genl = nlmsg.unpack_genl(payload)
    assert genl.cmd == pm.Cmd.ADD_ADDR and genl.version == 1
    a = nested(payload, pm.Attr.ADDR)
    assert nlmsg.get_u16(a[pm.AddrAttr.FAMILY]) == socket.AF_INET
    assert a[pm.AddrAttr.ADDR4] == bytes([10, 0, 0, 1])
    assert nlmsg.get_u8(a[pm.AddrAttr.ID]) == 5
    assert nlmsg.get_u32(a[pm.AddrAttr.FLAGS]) == 3
    assert nlmsg.get_s32(a[pm.AddrAttr.IF_IDX]) == 2
    # the kernel's nested attribute must carry NLA_F_NESTED
    assert int.from_bytes(genl.attrs[2:4], "little") & nlmsg.NLA_F_NESTED


def test_id_only_requests_carry_no_family() -> None:
    # the kernel answers "missing address data" if FAMILY comes without an address
    for payload in (pm.req_del_addr(3), pm.req_get_addr(3), pm.req_set_flags(id=3, addr=None, flags=4)):
        assert pm.AddrAttr.FAMILY not in nested(payload, pm.Attr.ADDR)


def test_userspace_pm_requests() -> None:
    ip6 = ipaddress.ip_address("2001:db8::1")
    p = pm.req_subflow_create(
        7, ip6, ipaddress.ip_address("2001:db8::2"), 80, local_id=2, flags=None, ifindex=None
    )
    top = nlmsg.attr_map(nlmsg.unpack_genl(p).attrs)
    assert nlmsg.get_u32(top[pm.Attr.TOKEN]) == 7
    remote = nlmsg.attr_map(top[pm.Attr.ADDR_REMOTE])
    assert nlmsg.get_u16(remote[pm.AddrAttr.PORT]) == 80
    assert remote[pm.AddrAttr.ADDR6] == ipaddress.ip_address("2001:db8::2").packed
    r = nlmsg.attr_map(nlmsg.unpack_genl(pm.req_remove(7, 3)).attrs)
    assert nlmsg.get_u8(r[pm.Attr.LOC_ID]) == 3
    ann = nested(pm.req_announce(7, ip6, 4, port=None, flags=1, ifindex=None), pm.Attr.ADDR)
    assert nlmsg.get_u8(ann[pm.AddrAttr.ID]) == 4


def test_set_limits_omits_unset() -> None:
    top = nlmsg.attr_map(nlmsg.unpack_genl(pm.req_set_limits(3, None)).attrs)
    assert set(top) == {pm.Attr.SUBFLOWS}


def test_flags_parse() -> None:
    assert pm.EndpointFlags.parse("signal, subflow") == pm.EndpointFlags.SIGNAL | pm.EndpointFlags.SUBFLOW
    assert pm.EndpointFlags.parse(["backup"]).names() == ["backup"]
    with pytest.raises(ValueError):
        pm.EndpointFlags.parse("bogus")


def test_getfamily_roundtrip() -> None:
    grp = nlmsg.pack_attr(
        1, nlmsg.pack_attr(1, nlmsg.string("mptcp_pm_events")) + nlmsg.pack_attr(2, nlmsg.u32(9))
    )
    reply = nlmsg.pack_genl(
        genl_ctrl.CTRL_CMD_NEWFAMILY,
        2,
        nlmsg.pack_attr(genl_ctrl.CTRL_ATTR_FAMILY_ID, nlmsg.u16(28))
        + nlmsg.pack_attr(genl_ctrl.CTRL_ATTR_FAMILY_NAME, nlmsg.string("mptcp_pm"))
        + nlmsg.pack_attr(genl_ctrl.CTRL_ATTR_VERSION, nlmsg.u32(1))
        + nlmsg.pack_attr(genl_ctrl.CTRL_ATTR_MCAST_GROUPS, grp, nested=True),
    )
    info = genl_ctrl.decode_family(reply)
    assert (info.id, info.version, info.mcast_groups) == (28, 1, {"mptcp_pm_events": 9})


def test_unknown_event_is_kept() -> None:
    ev = pm.decode_event(nlmsg.pack_genl(99, 1, nlmsg.pack_attr(1, nlmsg.u32(5))))
    assert isinstance(ev, pm.UnknownEvent) and ev.cmd == 99 and ev.to_dict()["attrs"] == {"1": "05000000"}


def test_truncated_inputs_raise_decode_error() -> None:
    with pytest.raises(DecodeError):
        list(nlmsg.iter_nlmsgs(b"\x20\x00\x00\x00"))
    with pytest.raises(DecodeError):
        pm.decode_event(nlmsg.pack_genl(pm.EventType.CLOSED, 1))  # no token
    with pytest.raises(DecodeError):
        pm.decode_event(nlmsg.pack_genl(pm.EventType.CLOSED, 1, nlmsg.pack_attr(1, b"\x01")))  # short token
