"""A sans-IO HTTP/1.1 request parser (server side), in the style of h11: bytes in, events out, no sockets.

    parser = RequestParser()
    parser.feed(data)            # b"" means the peer closed its side
    event = parser.next_event()  # Request | NEED_DATA | CLOSED; raises RemoteProtocolError

It parses requests one after another on a keep-alive connection (pipelining included). Bodies are read by
Content-Length (capped); chunked request bodies are refused with 501 since no endpoint here takes a body.
Every malformed input raises RemoteProtocolError carrying the HTTP status to answer with.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_TARGET = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(rb"\r?\n")


class Sentinel(enum.Enum):
    """Results of next_event() that are not requests."""

    NEED_DATA = "need-data"
    CLOSED = "closed"


NEED_DATA = Sentinel.NEED_DATA
CLOSED = Sentinel.CLOSED


class RemoteProtocolError(Exception):
    """The client sent something that is not valid HTTP/1.x; answer with `status` and close."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Request:
    """One complete request. Header names are lower-cased; values are latin-1 decoded and stripped."""

    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of a header (several occurrences are joined with ', ' as RFC 9110 allows)."""
        name = name.lower()
        values = [v for n, v in self.headers if n == name]
        return ", ".join(values) if values else None

    def header_tokens(self, name: str) -> set[str]:
        """A comma-separated header as a set of lower-cased tokens (Connection, Accept...)."""
        value = self.header(name) or ""
        return {t.split(";", 1)[0].strip().lower() for t in value.split(",") if t.strip()}

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 persists unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`."""
        tokens = self.header_tokens("connection")
        if self.version >= (1, 1):
            return "close" not in tokens
        return "keep-alive" in tokens


class _State(enum.Enum):
    HEAD = "head"
    BODY = "body"
    DONE = "done"


class RequestParser:
    """Incremental parser of a stream of HTTP/1.x requests.

    Limits bound memory per connection: `max_head` bytes of request line + headers, `max_headers` fields,
    `max_body` bytes of body.
    """

    def __init__(self, *, max_head: int = 16384, max_headers: int = 100, max_body: int = 65536) -> None:
        self.max_head = max_head
        self.max_headers = max_headers
        self.max_body = max_body
        self._buf = bytearray()
        self._eof = False
        self._state = _State.HEAD
        self._pending: Request | None = None
        self._body_left = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed."""
        return len(self._buf)

    @property
    def in_request(self) -> bool:
        """True when part of a request has arrived (used to tell an idle keep-alive from a slow client)."""
        return self._state is _State.BODY or bool(self._buf.lstrip(b"\r\n"))

    def feed(self, data: bytes) -> None:
        """Add received bytes; b"" marks the end of the stream."""
        if self._state is _State.DONE:
            return
        if not data:
            self._eof = True
        else:
            self._buf += data

    def next_event(self) -> Request | Sentinel:
        """The next complete request, NEED_DATA, or CLOSED once the peer closed between requests."""
        if self._state is _State.DONE:
            return CLOSED
        if self._state is _State.HEAD:
            event = self._parse_head()
            if event is not None:
                return event
        if self._state is _State.BODY:
            return self._parse_body()
        return NEED_DATA  # pragma: no cover - unreachable

    def _fail(self, message: str, status: int = 400) -> RemoteProtocolError:
        self._state = _State.DONE
        self._buf.clear()
        return RemoteProtocolError(message, status)

    def _parse_head(self) -> Sentinel | None:
        # RFC 9112 2.2: ignore empty lines received before a request line.
        stripped = self._buf.lstrip(b"\r\n")
        if len(stripped) != len(self._buf):
            del self._buf[: len(self._buf) - len(stripped)]
        match = _HEAD_END.search(self._buf, 0, self.max_head + 4)
        if match is None:
            if len(self._buf) > self.max_head:
                raise self._fail("request head too large", 431)
            if self._eof:
                if self._buf:
                    raise self._fail("connection closed in the middle of a request head")
                self._state = _State.DONE
                return CLOSED
            return NEED_DATA
        head = bytes(self._buf[: match.start()])
        del self._buf[: match.end()]
        self._pending = self._parse_request_head(head)
        self._state = _State.BODY
        return None

    def _parse_request_head(self, head: bytes) -> Request:
        lines = _LINE_SPLIT.split(head)
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise self._fail("malformed request line")
        method, target, version = parts
        if not _TOKEN.fullmatch(method):
            raise self._fail("malformed method")
        if not _TARGET.fullmatch(target):
            raise self._fail("malformed request target")
        vmatch = _VERSION.fullmatch(version)
        if vmatch is None:
            raise self._fail("malformed HTTP version")
        ver = (int(vmatch.group(1)), int(vmatch.group(2)))
        if ver[0] != 1:
            raise self._fail("unsupported HTTP version", 505)
        if len(lines) - 1 > self.max_headers:
            raise self._fail("too many header fields", 431)
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                raise self._fail("obsolete line folding is not accepted")
            name, sep, value = line.partition(b":")
            if not sep or not _TOKEN.fullmatch(name):
                raise self._fail("malformed header field")
            value = value.strip(b" \t")
            if _BAD_VALUE.search(value):
                raise self._fail("control character in header value")
            headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
        request = Request(method.decode("ascii"), target.decode("latin-1"), ver, tuple(headers))
        self._check_framing(request)
        return request

    def _check_framing(self, request: Request) -> None:
        hosts = [v for n, v in request.headers if n == "host"]
        if request.version >= (1, 1) and len(hosts) != 1:
            raise self._fail("HTTP/1.1 request needs exactly one Host header")
        if request.header("transfer-encoding") is not None:
            if request.header("content-length") is not None:
                raise self._fail("both Transfer-Encoding and Content-Length")
            raise self._fail("chunked request bodies are not supported", 501)
        lengths = {v.strip() for n, v in request.headers if n == "content-length"}
        lengths = {p.strip() for v in lengths for p in v.split(",")}
        if not lengths:
            self._body_left = 0
            return
        if len(lengths) != 1:
            raise self._fail("conflicting Content-Length values")
        (text,) = lengths
        if not text.isdigit() or not text.isascii() or len(text) > 18:
            raise self._fail("malformed Content-Length")
        self._body_left = int(text)
        if self._body_left > self.max_body:
            raise self._fail("request body too large", 413)

    def _parse_body(self) -> Request | Sentinel:
        assert self._pending is not None
        if len(self._buf) < self._body_left:
            if self._eof:
                raise self._fail("connection closed in the middle of a request body")
            return NEED_DATA
        body = bytes(self._buf[: self._body_left])
        del self._buf[: self._body_left]
        request = self._pending
        if body:
            request = Request(request.method, request.target, request.version, request.headers, body)
        self._pending = None
        self._body_left = 0
        self._state = _State.HEAD
        return request
