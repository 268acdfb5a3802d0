"""Property tests: on any bytes the decoders return a value or raise DecodeError, nothing else."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mptcpkit.netlink import genl_ctrl, nlmsg, rtnetlink, sock_diag
from mptcpkit.netlink import mptcp_pm as pm
from mptcpkit.netlink.errors import DecodeError

SEEDS = [
    bytes.fromhex(r["hex"])
    for r in json.loads((Path(__file__).parent / "fixtures" / "kernel_messages.json").read_text())
]


def decode_all(data: bytes) -> None:
    for m in nlmsg.iter_nlmsgs(data):
        with contextlib.suppress(DecodeError):
            rtnetlink.decode_message(m)
        with contextlib.suppress(DecodeError):
            sock_diag.decode_connection(m.payload)
        if m.type == nlmsg.NLMSG_ERROR:
            nlmsg.parse_error(m)
            continue
        for fn in (pm.decode_event, pm.decode_endpoint, pm.decode_limits, genl_ctrl.decode_family):
            with contextlib.suppress(DecodeError):
                fn(m.payload)


def check(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode_all(data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300))
def test_garbage_only_raises_decode_error(data: bytes) -> None:
    check(data)


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_kernel_messages_only_raise_decode_error(seed: bytes, data: st.DataObject) -> None:
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    check(bytes(buf[:cut]))
    check(bytes(buf))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 0x3FFF), st.binary(max_size=40)), max_size=8))
def test_attr_roundtrip(attrs: list[tuple[int, bytes]]) -> None:
    raw = b"".join(nlmsg.pack_attr(t, v) for t, v in attrs)
    assert nlmsg.parse_attrs(raw) == attrs
