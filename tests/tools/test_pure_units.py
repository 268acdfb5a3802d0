"""Pure parts of the user tools: answers of check serve, redaction, report rendering, systemd drop-ins,
environment building for `run`, system diagnosis rules and target parsing."""

from __future__ import annotations

import json

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.tools import checkpage, debuginfo, syscheck, systemd
from mptcpkit.tools.checkclient import Target, parse_target
from mptcpkit.tools.httpparse import Request
from mptcpkit.tools.preload import build_env
from mptcpkit.tools.redact import Redactor
from mptcpkit.tools.sysfacts import AddressFact, EndpointFact, SystemFacts

YES = checkpage.ConnInfo(mptcp=True, fallback=False, subflows=2)
NO = checkpage.ConnInfo(mptcp=False, fallback=False, subflows=0)


def req(*headers: tuple[str, str], method: str = "GET", target: str = "/") -> Request:
    return Request(method, target, (1, 1), (("host", "h:8080"), *headers))


# ---- check serve answers


def test_curl_gets_one_plain_line() -> None:
    r = checkpage.respond(req(("user-agent", "curl/8.5.0"), ("accept", "*/*")), YES)
    assert r.body == b"You are using MPTCP.\n" and r.content_type.startswith("text/plain")
    r = checkpage.respond(req(("user-agent", "curl/8.5.0")), NO)
    assert r.body == b"You are not using MPTCP.\n"


def test_json_when_accepted() -> None:
    r = checkpage.respond(req(("accept", "application/json")), YES)
    assert json.loads(r.body) == {"mptcp": True, "subflows": 2, "fallback": False, "state": "yes"}
    assert r.content_type == "application/json"


MAYBE = checkpage.ConnInfo(mptcp=False, fallback=False, subflows=0, error="cannot read the socket: EBADF")


def test_maybe_state_in_every_flavor() -> None:
    plain = checkpage.respond(req(("user-agent", "Wget/1.21.3")), MAYBE)
    assert plain.status == 200 and plain.body.startswith(b"Maybe you are using MPTCP")
    doc = json.loads(checkpage.respond(req(("accept", "application/json")), MAYBE).body)
    assert doc["mptcp"] is None and doc["state"] == "maybe" and "EBADF" in doc["error"]
    page = checkpage.respond(req(("user-agent", "Mozilla/5.0")), MAYBE).body.decode()
    assert 'class="verdict maybe"' in page and "Internal error" in page


def test_unknown_paths_404_and_files() -> None:
    for target in ("/nope", "/files/0M", "/files/1001M", "/files/abc", "/../etc/passwd", "/index.php"):
        assert checkpage.respond(req(target=target), YES).status == 404, target
    for target in ("/", "/?x=1", "/index.html", "http://h:8080/"):
        assert checkpage.respond(req(target=target), YES).status == 200, target
    listing = checkpage.respond(req(target="/files/"), YES)
    assert listing.body.decode().split() == ["/files/1M", "/files/10M", "/files/100M", "/files/1000M"]
    big = checkpage.respond(req(target="/files/1000M"), YES)
    assert big.stream_bytes == 1000 * 2**20 and big.body == b""
    assert checkpage.respond(req(target="/files/5MB"), YES).stream_bytes == 5 * 2**20
    head = checkpage.render(big, head_only=False, keep_alive=True)
    assert b"Content-Length: 1048576000\r\n" in head and head.endswith(b"\r\n\r\n")


def test_browser_gets_html_with_howto() -> None:
    ua = ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) Chrome/120")
    r = checkpage.respond(req(ua, ("accept", "text/html,application/xhtml+xml,*/*;q=0.8")), NO)
    page = r.body.decode()
    assert r.content_type.startswith("text/html")
    assert "do not create MPTCP sockets" in page.replace("\n", " ")
    assert "mptcpkit run -- curl http://h:8080/" in page
    assert "<script" not in page


def test_other_methods_and_favicon() -> None:
    assert checkpage.respond(req(method="POST"), YES).status == 405
    assert checkpage.respond(req(target="/favicon.ico"), YES).status == 204


def test_render_head_and_connection_header() -> None:
    resp = checkpage.respond(req(("user-agent", "curl/8")), YES)
    full = checkpage.render(resp, head_only=False, keep_alive=True)
    head = checkpage.render(resp, head_only=True, keep_alive=False)
    assert full.endswith(b"\r\n\r\nYou are using MPTCP.\n")
    assert b"Content-Length: 21\r\n" in full and b"Connection: keep-alive" in full
    assert head.endswith(b"\r\n\r\n") and b"Connection: close" in head


# ---- redaction


def test_redaction_is_consistent_and_complete() -> None:
    r = Redactor(["box1"])
    text = (
        "Linux box1 6.18 inet 10.1.2.3/24 brd 10.1.2.255 link/ether 02:42:ac:11:00:02\n"
        "ESTAB [::ffff:10.1.2.3]:443 [2001:db8::7]:5000 fe80::1%eth0 10.1.2.3:80 127.0.0.1:1 [::1]:2"
    )
    out = r(text)
    for leaked in ("box1", "10.1.2.3", "10.1.2.255", "02:42:ac:11:00:02", "2001:db8::7", "fe80::1"):
        assert leaked not in out
    assert out.count("ipv4-1") == 3  # the same address, three spellings, one placeholder
    assert "127.0.0.1:1" in out and "[::1]:2" in out
    assert "6.18" in out


# ---- debug report


def test_nstat_split_mptcp_and_other_nonzero() -> None:
    text = "#kernel\nIpInReceives 10 0.0\nIpForwDatagrams 0 0.0\nMPTcpExtMPJoinSynRx 0 0.0\nTcpExtTCPLossProbes 2 0.0\n"
    mptcp, other = debuginfo.split_counters(text)
    assert mptcp == "MPTcpExtMPJoinSynRx 0 0.0\n"  # MPTcp* with zeros
    assert other == "IpInReceives 10 0.0\nTcpExtTCPLossProbes 2 0.0\n"  # the rest only when non-zero
    assert debuginfo.split_counters("#kernel\n") == (
        "(no MPTcp counter: is MPTCP in this kernel?)\n",
        "(every other counter is 0)\n",
    )


def test_nstat_parse_and_diff() -> None:
    text = "#kernel\nMPTcpExtMPCapableSYNRX          3                  0.0\nMPTcpExtMPJoinSynRx   0  0.0\n"
    before = debuginfo.parse_nstat(text)
    assert before == {"MPTcpExtMPCapableSYNRX": 3, "MPTcpExtMPJoinSynRx": 0}
    after = {**before, "MPTcpExtMPCapableSYNRX": 5, "MPTcpExtNew": 1}
    assert debuginfo.counter_diff(before, after) == [
        ("MPTcpExtMPCapableSYNRX", 3, 5, 2),
        ("MPTcpExtNew", 0, 1, 1),
    ]


def test_markdown_sections_always_in_fixed_order() -> None:
    c = debuginfo.Collected()
    c.sections["Kernel log"] = [debuginfo.Output("01-k.txt", "dmesg", 0, "x ``` y")]
    c.sections["System"] = [debuginfo.Output("02-u.txt", "uname -a", 0, "Linux")]
    md = debuginfo.render_markdown(c)
    heads = [line[3:] for line in md.splitlines() if line.startswith("## ")]
    assert heads == list(debuginfo.SECTIONS)
    assert "````\nx ``` y\n````" in md  # fences survive backticks


# ---- systemd drop-ins


UNIT = """[Unit]
Description=demo
[Service]
Environment=FOO=1 "BAR=two words"
Environment="LD_PRELOAD=/usr/lib/libjemalloc.so"
Environment=GODEBUG=http2client=0
ExecStart=/usr/bin/demo
"""


def test_parse_environment_like_systemd() -> None:
    env = systemd.parse_environment(UNIT)
    assert env == {
        "FOO": "1",
        "BAR": "two words",
        "LD_PRELOAD": "/usr/lib/libjemalloc.so",
        "GODEBUG": "http2client=0",
    }
    assert systemd.parse_environment(UNIT + "Environment=\nEnvironment=X=1\n") == {"X": "1"}


def test_dropin_composes_with_existing_values() -> None:
    text = systemd.dropin_text(systemd.parse_environment(UNIT), "/opt/shim.so", created_dir=True)
    env = systemd.parse_environment(UNIT + "\n" + text)
    assert env["LD_PRELOAD"] == "/usr/lib/libjemalloc.so:/opt/shim.so"
    assert env["GODEBUG"] == "http2client=0,multipathtcp=1"
    assert env["FOO"] == "1" and env["BAR"] == "two words"
    assert systemd.MARKER in text and systemd.CREATED_DIR in text


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "two words"])
def test_unit_name_rejects_paths(bad: str) -> None:
    with pytest.raises(UsageError):
        systemd.unit_name(bad)


# ---- run environment


def test_build_env_appends_preload_and_godebug() -> None:
    env = build_env({"LD_PRELOAD": "/a.so", "GODEBUG": "x=1", "PATH": "/bin"}, "/s.so", debug=True)
    assert env["LD_PRELOAD"] == "/a.so:/s.so" and env["GODEBUG"] == "x=1,multipathtcp=1"
    assert env["MPTCPKIT_RUN_DEBUG"] == "1" and env["PATH"] == "/bin"
    env = build_env({"LD_PRELOAD": "/a.so /b.so", "GODEBUG": "multipathtcp=0"}, "/s.so", debug=False)
    assert env["LD_PRELOAD"] == "/a.so /b.so /s.so" and env["GODEBUG"] == "multipathtcp=0"
    assert "MPTCPKIT_RUN_DEBUG" not in env
    assert build_env({}, "/s.so", debug=False)["LD_PRELOAD"] == "/s.so"


# ---- system diagnosis rules


def facts(**over: object) -> SystemFacts:
    base: dict[str, object] = dict(
        kernel="6.18",
        mptcp_sysctls=True,
        enabled=1,
        path_manager="kernel",
        available_path_managers=["kernel", "userspace"],
        available_schedulers=["default"],
        scheduler="default",
        endpoints=[],
        limits=(2, 2),
        addresses=[
            AddressFact("eth0", "192.0.2.1", 24, "global", True),
            AddressFact("wlan0", "198.51.100.7", 24, "global", True),
        ],
        socket_error=None,
        networkmanager=None,
        networkmanager_running=False,
    )
    base.update(over)
    return SystemFacts(**base)  # type: ignore[arg-type]


def fixes(f: SystemFacts) -> list[str]:
    return [p.fix or "" for p in syscheck.evaluate(f).problems]


def test_healthy_multihomed_client_with_endpoints() -> None:
    f = facts(endpoints=[EndpointFact("198.51.100.7", 1, ("subflow",), "wlan0")])
    assert syscheck.evaluate(f).problems == []


def test_each_problem_has_its_fix() -> None:
    assert fixes(facts(enabled=0))[0] == (
        "sysctl -w net.mptcp.enabled=1  # persist: echo net.mptcp.enabled=1 > /etc/sysctl.d/90-mptcp.conf"
    )
    assert fixes(facts()) == ["ip mptcp endpoint add 198.51.100.7 dev wlan0 subflow"]
    assert "sysctl -w net.mptcp.path_manager=kernel" in fixes(facts(path_manager="userspace"))[0]
    assert fixes(facts(path_manager="userspace", pm_daemons=["mptcpd"])) == []
    many = [EndpointFact(f"198.51.100.{i}", i, ("subflow",), "wlan0") for i in range(1, 5)]
    addrs = [AddressFact("wlan0", f"198.51.100.{i}", 24, "global", True) for i in range(1, 5)]
    assert fixes(facts(endpoints=many, addresses=addrs, limits=(2, 0))) == [
        "ip mptcp limits set subflows 4 add_addr_accepted 4"
    ]
    stale = [EndpointFact("203.0.113.9", 7, ("subflow",), None)]
    assert "ip mptcp endpoint delete id 7" in fixes(facts(endpoints=stale))
    r = syscheck.evaluate(facts(mptcp_sysctls=False))
    assert len(r.problems) == 1 and "CONFIG_MPTCP" in (r.problems[0].fix or "")


def test_networkmanager_manages_endpoints() -> None:
    r = syscheck.evaluate(facts(networkmanager="1.42.4", networkmanager_running=True))
    assert r.problems == []
    assert "NetworkManager" in syscheck.format_report(r)


# ---- check target parsing


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("example.com:443", Target("example.com", 443)),
        ("10.0.0.1:80", Target("10.0.0.1", 80)),
        ("[2001:db8::1]:8080", Target("2001:db8::1", 8080)),
        ("https://check.mptcp.dev", Target("check.mptcp.dev", 443, "https", "/")),
        ("http://[::1]:8080/x?y=1", Target("::1", 8080, "http", "/x?y=1")),
    ],
)
def test_parse_target(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("bad", ["example.com", "ftp://x/", "h:0", "h:70000", "[::1]", "::1:80", "h:x"])
def test_parse_target_rejects(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_target(bad)


def test_pm_daemon_recognition() -> None:
    from mptcpkit.tools.sysfacts import pm_daemons

    lines = [
        "/usr/libexec/mptcpd --addr-flags subflow",
        "/work/.venv/bin/python /work/.venv/bin/mptcpkit pm --addr-flags subflow",
        "python -m mptcpkit pm run",
        "/usr/bin/mptcpkit pm --netns other",
        "/usr/bin/mptcpkit pm status",
        "/usr/bin/mptcpkit lab run",
    ]
    assert pm_daemons(lines) == ["mptcpd", "mptcpkit pm"]
    assert pm_daemons(lines[3:]) == []
