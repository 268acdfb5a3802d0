"""What `mptcpkit check serve` answers, as pure functions: (request, connection facts) -> response bytes.

The connection facts come from the server's own socket (MPTCP_INFO), never from the request.
"""

from __future__ import annotations

import enum
import functools
import html
import json
from dataclasses import dataclass
from http import HTTPStatus

from mptcpkit.tools.httpparse import Request

PLAIN_YES = "You are using MPTCP."
PLAIN_NO = "You are not using MPTCP."


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What the server knows about one accepted connection.

    mptcp: MPTCP end to end (MPTCP socket, MPTCP_INFO available, no fallback flag).
    fallback: the connection was MPTCP-capable but runs as TCP now (the client or the path dropped MPTCP).
    subflows: MPTCP subflows in use (0 when the connection is not MPTCP).
    """

    mptcp: bool
    fallback: bool
    subflows: int


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
    return (PLAIN_YES if info.mptcp else PLAIN_NO) + "\n"


def json_body(info: ConnInfo) -> str:
    return json.dumps({"mptcp": info.mptcp, "subflows": info.subflows, "fallback": info.fallback}) + "\n"


def html_body(info: ConnInfo, host: str) -> str:
    """A self-contained page (no scripts, no external resources) for browsers."""
    url = html.escape(f"http://{host}/" if host else "http://THIS-SERVER/")
    if info.mptcp:
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
</body>
</html>
"""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    content_type: str
    body: bytes
    extra_headers: tuple[tuple[str, str], ...] = ()


def respond(request: Request, info: ConnInfo) -> Response:
    """The answer to one request on a connection described by `info`."""
    if request.method not in ("GET", "HEAD"):
        return Response(
            405, "text/plain; charset=utf-8", b"Only GET and HEAD are supported.\n", (("Allow", "GET, HEAD"),)
        )
    if request.target.split("?", 1)[0] == "/favicon.ico":
        return Response(204, "image/x-icon", b"")
    flavor = choose_flavor(request)
    if flavor is Flavor.JSON:
        return Response(200, "application/json", json_body(info).encode())
    if flavor is Flavor.HTML:
        host = request.header("host") or ""
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
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Vary: Accept, User-Agent",
        "X-Content-Type-Options: nosniff",
        "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; img-src data:",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    lines.extend(f"{name}: {value}" for name, value in response.extra_headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or response.status == 204 else head + response.body
