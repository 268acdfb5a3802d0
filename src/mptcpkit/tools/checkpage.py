"""What `mptcpkit check serve` answers, as pure functions: (request, connection facts) -> response bytes.

The connection facts come from the server's own socket (MPTCP_INFO), never from the request. Paths: `/`
(the check), `/files/` (test downloads generated on the fly, like check.mptcp.dev's), `/favicon.ico`;
anything else is a 404.
"""

from __future__ import annotations

import enum
import functools
import html
import json
import re
from dataclasses import dataclass
from http import HTTPStatus

from mptcpkit.tools.httpparse import Request

PLAIN_YES = "You are using MPTCP."
PLAIN_NO = "You are not using MPTCP."
PLAIN_MAYBE = "Maybe you are using MPTCP: the server could not tell (internal error)."
MIB = 1 << 20
FILE_SIZES_MIB = (1, 10, 100, 1000)  # listed on /files/; any size from 1 to MAX_FILE_MIB is served
MAX_FILE_MIB = 1000
_FILE_NAME = re.compile(r"([0-9]{1,4})M(?:B|iB)?")


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What the server knows about one accepted connection.

    mptcp: MPTCP end to end (MPTCP socket, MPTCP_INFO available, no fallback flag).
    fallback: the connection was MPTCP-capable but runs as TCP now (the client or the path dropped MPTCP).
    subflows: MPTCP subflows in use (0 when the connection is not MPTCP).
    error: set when the server could not read the connection's state: the answer is "maybe".
    """

    mptcp: bool
    fallback: bool
    subflows: int
    error: str | None = None

    @property
    def state(self) -> str:
        """ "yes", "no" or "maybe" (internal error), as check.mptcp.dev answers."""
        if self.error is not None:
            return "maybe"
        return "yes" if self.mptcp else "no"


class Flavor(enum.Enum):
    PLAIN = "plain"
    HTML = "html"
    JSON = "json"


def choose_flavor(request: Request) -> Flavor:
    """JSON when asked for; HTML for browsers (Mozilla-style User-Agent or Accept: text/html); else plain."""
    accept = request.header_tokens("accept")
    if "application/json" in accept:
        return Flavor.JSON
    agent = request.header("user-agent") or ""
    if agent.startswith("Mozilla/") or "text/html" in accept:
        return Flavor.HTML
    return Flavor.PLAIN


def plain_body(info: ConnInfo) -> str:
    return {"yes": PLAIN_YES, "no": PLAIN_NO, "maybe": PLAIN_MAYBE}[info.state] + "\n"


def json_body(info: ConnInfo) -> str:
    """`mptcp` is null in the "maybe" state: unknown, not false."""
    doc: dict[str, object] = {
        "mptcp": None if info.error is not None else info.mptcp,
        "subflows": info.subflows,
        "fallback": info.fallback,
        "state": info.state,
    }
    if info.error is not None:
        doc["error"] = info.error
    return json.dumps(doc) + "\n"


def html_body(info: ConnInfo, host: str) -> str:
    """A self-contained page (no scripts, no external resources) for browsers."""
    url = html.escape(f"http://{host}/" if host else "http://THIS-SERVER/")
    if info.error is not None:
        verdict = "<strong>Maybe</strong>: the server could not tell whether this connection uses MPTCP."
        cls = "maybe"
        extra = f"<p>Internal error: {html.escape(info.error)}. Try again, or use the command below.</p>"
    elif info.mptcp:
        verdict = "Your browser connected with <strong>MPTCP</strong>."
        cls = "yes"
        extra = f"<p>The connection uses {info.subflows} subflow(s).</p>"
    else:
        verdict = "This connection from your browser does <strong>not</strong> use MPTCP."
        cls = "no"
        extra = (
            "<p>That does not mean your system lacks MPTCP: most browsers do not create MPTCP sockets yet, "
            "even on systems where the kernel supports Multipath TCP.</p>"
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>MPTCP check</title>
<style>
body {{ font-family: sans-serif; max-width: 42em; margin: 2em auto; padding: 0 1em; line-height: 1.5; }}
.verdict {{ font-size: 1.4em; padding: .6em 1em; border-radius: .4em; }}
.yes {{ background: #d8f5d8; }}
.no {{ background: #fde6c8; }}
.maybe {{ background: #e8e8f8; }}
pre {{ background: #f2f2f2; padding: .6em 1em; overflow-x: auto; }}
</style>
</head>
<body>
<h1>Are you using Multipath TCP?</h1>
<p class="verdict {cls}" id="verdict">{verdict}</p>
{extra}
<h2>Check your system instead of your browser</h2>
<p>Your browser may not support MPTCP while your system may. To check from the command line, run curl through
<code>mptcpkit run</code>, which makes its TCP sockets MPTCP sockets:</p>
<pre id="howto">mptcpkit run -- curl {url}</pre>
<p>It answers <code>{PLAIN_YES}</code> when the whole path supports MPTCP. To diagnose the local system, run
<code>mptcpkit check</code>. Add <code>-H 'Accept: application/json'</code> to curl for a JSON answer.</p>
<p>Test downloads (generated on the fly): <a href="/files/">/files/</a>.</p>
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    extra_headers: tuple[tuple[str, str], ...] = ()
    stream_bytes: int = 0  # generated bytes sent after `body` (downloads), never held in memory


def request_path(target: str) -> str:
    """The path of a request target: origin form (`/a?b`) or absolute form (`http://host/a?b`)."""
    if "://" in target:
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    return target.split("?", 1)[0].split("#", 1)[0]


def file_size(path: str) -> int | None:
    """`/files/10M` (also `10MB`, `10MiB`) -> 10 MiB in bytes; None if not a valid download name."""
    m = _FILE_NAME.fullmatch(path.removeprefix("/files/"))
    if not path.startswith("/files/") or m is None:
        return None
    mib = int(m.group(1))
    return mib * MIB if 1 <= mib <= MAX_FILE_MIB else None


def files_index(flavor: Flavor) -> Response:
    names = [f"{n}M" for n in FILE_SIZES_MIB]
    if flavor is Flavor.HTML:
        items = "".join(f'<li><a href="/files/{n}">{n}</a></li>' for n in names)
        page = (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f"<title>Test downloads</title></head><body><h1>Test downloads</h1><ul>{items}</ul>"
            f"<p>Any size from 1M to {MAX_FILE_MIB}M (MiB), generated on the fly.</p></body></html>\n"
        )
        return Response(200, "text/html; charset=utf-8", page.encode())
    text = "".join(f"/files/{n}\n" for n in names)
    return Response(200, "text/plain; charset=utf-8", text.encode())


def respond(request: Request, info: ConnInfo) -> Response:
    """The answer to one request on a connection described by `info`."""
    if request.method not in ("GET", "HEAD"):
        return Response(
            405, "text/plain; charset=utf-8", b"Only GET and HEAD are supported.\n", (("Allow", "GET, HEAD"),)
        )
    target = request.target
    path = "/" if target == "/" else request_path(target)  # the hot path: `GET /`
    flavor = choose_flavor(request)
    if path != "/" and path != "/index.html":
        if path == "/favicon.ico":
            return Response(204, "image/x-icon", b"")
        if path in ("/files", "/files/"):
            return files_index(flavor)
        size = file_size(path)
        if size is not None:
            return Response(200, "application/octet-stream", b"", (), size)
        return error_response(404, f"not found: this server answers / and /files/ (1M to {MAX_FILE_MIB}M)")
    host = (request.header("host") or "") if flavor is Flavor.HTML else ""
    return check_response(flavor, info, host)


@functools.lru_cache(maxsize=512)
def check_response(flavor: Flavor, info: ConnInfo, host: str) -> Response:
    """The check's answer (cached: a few distinct (flavor, state, host) combinations repeat all the time)."""
    if flavor is Flavor.JSON:
        return Response(200, "application/json", json_body(info).encode())
    if flavor is Flavor.HTML:
        return Response(200, "text/html; charset=utf-8", html_body(info, host).encode())
    return Response(200, "text/plain; charset=utf-8", plain_body(info).encode())


def error_response(status: int, message: str) -> Response:
    return Response(status, "text/plain; charset=utf-8", f"{status} {message}\n".encode())


@functools.lru_cache(maxsize=512)
def render(response: Response, *, head_only: bool, keep_alive: bool) -> bytes:
    """Serialize a response as HTTP/1.1 bytes (cached: a few distinct answers repeat all the time)."""
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body) + response.stream_bytes}",
        "Cache-Control: no-store",
        "Vary: Accept, User-Agent",
        "X-Content-Type-Options: nosniff",
        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.extra_headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or response.status == 204 else head + response.body
