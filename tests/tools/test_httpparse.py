"""The sans-IO HTTP/1.1 request parser: valid streams, every malformed class, limits, fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mptcpkit.tools.httpparse import CLOSED, NEED_DATA, RemoteProtocolError, Request, RequestParser

GET = b"GET /path?q=1 HTTP/1.1\r\nHost: example\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n"


def events(data: bytes, *, eof: bool = False, **limits: int) -> list[object]:
    parser = RequestParser(**limits)
    parser.feed(data)
    if eof:
        parser.feed(b"")
    out: list[object] = []
    while True:
        ev = parser.next_event()
        out.append(ev)
        if ev is NEED_DATA or ev is CLOSED:
            return out


def test_simple_get() -> None:
    (req, need) = events(GET)
    assert isinstance(req, Request)
    assert (req.method, req.target, req.version) == ("GET", "/path?q=1", (1, 1))
    assert req.header("host") == "example"
    assert req.header("USER-AGENT") == "curl/8.0"
    assert req.keep_alive
    assert need is NEED_DATA


def test_byte_by_byte_feeding_gives_same_request() -> None:
    parser = RequestParser()
    got = []
    for i in range(len(GET)):
        parser.feed(GET[i : i + 1])
        ev = parser.next_event()
        if isinstance(ev, Request):
            got.append(ev)
        else:
            assert ev is NEED_DATA
    assert len(got) == 1 and got[0].target == "/path?q=1"


def test_pipelined_requests_and_clean_close() -> None:
    evs = events(GET + b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", eof=True)
    assert [type(e).__name__ for e in evs[:2]] == ["Request", "Request"]
    second = evs[1]
    assert isinstance(second, Request)
    assert second.method == "HEAD" and not second.keep_alive
    assert evs[2] is CLOSED


def test_body_by_content_length_is_consumed() -> None:
    data = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello" + GET
    req1, req2, _ = events(data)
    assert isinstance(req1, Request) and req1.body == b"hello"
    assert isinstance(req2, Request) and req2.method == "GET"


def test_http10_keepalive_rules_and_lf_only_lines() -> None:
    (req, _) = events(b"GET / HTTP/1.0\n\n")
    assert isinstance(req, Request) and not req.keep_alive
    (req, _) = events(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
    assert isinstance(req, Request) and req.keep_alive


def test_leading_empty_lines_are_ignored() -> None:
    (req, _) = events(b"\r\n\r\n" + GET)
    assert isinstance(req, Request)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),
        (b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505),
        (b"GET / HTTP/1.1\r\n\r\n", 400),  # no Host
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: h\r\nnocolon\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
        (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 999999999\r\n\r\n", 413),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),  # a TLS ClientHello
    ],
)
def test_malformed_requests_raise_with_status(data: bytes, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        events(data)
    assert info.value.status == status


def test_head_too_large_and_too_many_headers() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        events(b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 20000, max_head=16384)
    assert info.value.status == 431
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(200)) + b"\r\n"
    with pytest.raises(RemoteProtocolError) as info:
        events(many)
    assert info.value.status == 431


def test_eof_in_the_middle_is_an_error_and_after_error_parser_is_done() -> None:
    with pytest.raises(RemoteProtocolError):
        events(b"GET / HTTP/1.1\r\nHo", eof=True)
    parser = RequestParser()
    parser.feed(b"BAD\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.next_event()
    assert parser.next_event() is CLOSED


def test_in_request_tells_slow_client_from_idle() -> None:
    parser = RequestParser()
    assert not parser.in_request
    parser.feed(b"GET / HT")
    assert parser.next_event() is NEED_DATA and parser.in_request


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=50))
def test_fuzz_never_crashes_otherwise(data: bytes, chunk: int) -> None:
    parser = RequestParser(max_head=256)
    for i in range(0, len(data) + 1, chunk):
        parser.feed(data[i : i + chunk] or b"")
        try:
            while isinstance(parser.next_event(), Request):
                pass
        except RemoteProtocolError as exc:
            assert 400 <= exc.status < 600
            return
    assert parser.buffered <= len(data)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET", "HEAD", "OPTIONS"]),
            st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True),
            st.from_regex(r"[a-zA-Z0-9 ./;=*-]{0,30}", fullmatch=True),
        ),
        min_size=1,
        max_size=5,
    ),
    st.integers(min_value=1, max_value=64),
)
def test_fuzz_valid_pipelines_roundtrip(reqs: list[tuple[str, str, str]], chunk: int) -> None:
    wire = b"".join(f"{m} {t} HTTP/1.1\r\nHost: h\r\nX-V: {v}\r\n\r\n".encode() for m, t, v in reqs)
    parser = RequestParser()
    got = []
    for i in range(0, len(wire), chunk):
        parser.feed(wire[i : i + chunk])
        while isinstance(ev := parser.next_event(), Request):
            got.append((ev.method, ev.target, ev.header("x-v")))
    assert got == [(m, t, v.strip(" ")) for m, t, v in reqs]
