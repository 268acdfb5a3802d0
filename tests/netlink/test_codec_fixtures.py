"""Decode messages captured from the real kernel (tests/netlink/capture.py wrote the fixture)."""

from __future__ import annotations

import errno
import ipaddress
import json
import socket
from pathlib import Path

import pytest

from mptcpkit.netlink import mptcp_pm as pm
from mptcpkit.netlink import nlmsg
from mptcpkit.netlink.session import PendingRequest

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "kernel_messages.json").read_text())


def msgs(prefix: str) -> list[nlmsg.Nlmsg]:
    out = []
    for rec in FIXTURES:
        if rec["name"].startswith(prefix):
            (m,) = nlmsg.iter_nlmsgs(bytes.fromhex(rec["hex"]))
            out.append(m)
    assert out, prefix
    return out


def events(kind: type[pm.MptcpEvent]) -> list[pm.MptcpEvent]:
    decoded = [pm.decode_event(m.payload) for m in msgs("event_")]
    return [e for e in decoded if type(e) is kind]


def test_every_captured_event_decodes_to_a_known_type() -> None:
    decoded = [pm.decode_event(m.payload) for m in msgs("event_")]
    kinds = {e.type for e in decoded}
    assert kinds == set(pm.EventType), kinds
    assert not any(isinstance(e, pm.UnknownEvent) for e in decoded)


def test_listener_events_are_decoded() -> None:
    created = events(pm.ListenerCreated)
    assert (
        pm.ListenerCreated(family=socket.AF_INET, saddr=ipaddress.ip_address("10.9.0.2"), sport=10002)
        in created
    )
    assert any(e.saddr == ipaddress.ip_address("::") and e.sport == 8081 for e in created)  # type: ignore[attr-defined]
    closed = events(pm.ListenerClosed)
    assert len(closed) == 3


def test_connection_events_carry_ports_and_server_side() -> None:
    created = events(pm.ConnectionCreated)
    server = [e for e in created if e.server_side]  # type: ignore[attr-defined]
    client = [e for e in created if not e.server_side]  # type: ignore[attr-defined]
    assert len(server) == 2 and len(client) == 2
    s4 = next(e for e in server if e.family == socket.AF_INET)  # type: ignore[attr-defined]
    assert s4.sport == 8080 and s4.daddr == ipaddress.ip_address("127.0.0.1")  # type: ignore[attr-defined]
    assert s4.flags is not None and s4.flags & pm.EventFlags.SERVER_SIDE  # type: ignore[attr-defined]
    tokens = {e.token for e in created}  # type: ignore[attr-defined]
    assert tokens == {e.token for e in events(pm.ConnectionClosed)}  # type: ignore[attr-defined]


def test_announced_has_family_inferred_and_port() -> None:
    ann = events(pm.AddressAnnounced)
    assert {(e.rem_id, str(e.daddr), e.dport, e.family) for e in ann} == {  # type: ignore[attr-defined]
        (2, "10.9.0.2", 10002, socket.AF_INET)
    }
    assert {e.rem_id for e in events(pm.AddressRemoved)} == {2}  # type: ignore[attr-defined]


def test_subflow_events() -> None:
    est = events(pm.SubflowEstablished)
    assert len(est) >= 4
    extra = [e for e in est if str(e.saddr) == "127.0.0.2"]  # type: ignore[attr-defined]
    assert extra and extra[0].loc_id == 3 and extra[0].dport == 8080  # type: ignore[attr-defined]
    (prio,) = events(pm.SubflowPriority)
    assert prio.backup is True  # type: ignore[attr-defined]
    assert len(events(pm.SubflowClosed)) >= 2
    assert any(e.error == 111 for e in events(pm.SubflowClosed))  # type: ignore[attr-defined]  # ECONNREFUSED


def test_event_json_dict() -> None:
    (prio,) = events(pm.SubflowPriority)
    d = prio.to_dict()
    assert d["type"] == "sub_priority" and d["backup"] is True and d["saddr"] == "127.0.0.1"
    json.dumps([e.to_dict() for e in (pm.decode_event(m.payload) for m in msgs("event_"))])


def test_limits_and_endpoint_replies() -> None:
    (lim,) = msgs("reply_get_limits")
    assert pm.decode_limits(lim.payload) == pm.Limits(subflows=4, add_addr_accepted=4)
    (one,) = msgs("reply_get_addr")
    ep = pm.decode_endpoint(one.payload)
    assert ep == pm.KernelEndpoint(
        id=3, addr=ipaddress.ip_address("127.0.0.2"), flags=pm.EndpointFlags.SUBFLOW | pm.EndpointFlags.BACKUP
    )


def test_dump_session_collects_until_done() -> None:
    parts = msgs("reply_dump_addr")
    req = PendingRequest(seq=4242, dump=True, what="dump")
    for m in parts:
        req.feed(m)
    assert req.done and req.error is None
    eps = [pm.decode_endpoint(p.payload) for p in req.replies]
    assert [e.id for e in eps] == [3, 4]
    assert eps[1].flags == pm.EndpointFlags.IMPLICIT  # created by the kernel for the accepted subflow


def test_error_carries_errno_and_extack() -> None:
    (m,) = msgs("error_get_addr_missing")
    err = nlmsg.parse_error(m)
    assert err.errno == errno.EINVAL and err.extack == "address not found" and err.request_seq == 4242
    req = PendingRequest(seq=4242, dump=False, what="get endpoint 99")
    req.feed(m)
    assert req.done and req.error is not None
    assert req.error.errno == errno.EINVAL and "address not found" in str(req.error)


def test_other_sequence_numbers_are_ignored() -> None:
    (m,) = msgs("error_get_addr_missing")
    req = PendingRequest(seq=1, dump=False, what="x")
    req.feed(m)
    assert not req.done


@pytest.mark.parametrize("rec", FIXTURES, ids=[r["name"] for r in FIXTURES])
def test_reencode_is_byte_identical(rec: dict[str, str]) -> None:
    raw = bytes.fromhex(rec["hex"])
    (m,) = nlmsg.iter_nlmsgs(raw)
    assert nlmsg.pack_nlmsg(m.type, m.flags, m.seq, m.payload, m.pid) == raw


def test_rtnl_links_addresses_and_route_lookup() -> None:
    from mptcpkit.netlink import rtnetlink as rt

    def facts(name: str) -> list[object]:
        return [c.fact for m in msgs(name) if (c := rt.decode_message(m)) is not None]

    links = [f for f in facts("rtnl_links") if isinstance(f, rt.Interface)]
    assert {(lk.name, lk.type) for lk in links} >= {("lo", 772), ("a0", 1)}
    assert next(lk for lk in links if lk.name == "lo").loopback
    by_addr = {str(a.addr): a for a in facts("rtnl_addrs") if isinstance(a, rt.LocalAddress)}
    assert by_addr["127.0.0.1"].scope == 254 and by_addr["10.9.0.1"].prefixlen == 24
    assert by_addr["2001:db8:9::1"].scope == 0
    assert any(a.startswith("fe80") and by_addr[a].scope == 253 for a in by_addr)
    (route,) = facts("rtnl_route")
    assert isinstance(route, rt.KernelRoute) and route.dst is None and route.dst_len == 0
    assert route.oif == by_addr["10.9.0.1"].ifindex  # the default route leaves through a0
