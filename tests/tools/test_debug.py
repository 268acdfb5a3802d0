"""`mptcpkit debug` on this machine: every section with real content, reproduce mode with the events of a
real MPTCP connection, redaction that leaves no address of the machine, and non-root operation."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tl_helpers import MPTCPKIT

from mptcpkit.tools.debuginfo import SECTIONS

pytestmark = pytest.mark.needs_root
Start = Callable[..., tuple[subprocess.Popen[bytes], int]]


def debug(*args: str, netns: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [MPTCPKIT, "debug", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    assert res.returncode == 0, res.stderr
    return res


def sections(md: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", md, flags=re.M)
    return {parts[i]: parts[i + 1].strip() for i in range(1, len(parts), 2)}


def archive_texts(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_every_section_has_real_content(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    debug("-o", str(out))
    md = out.read_text()
    got = sections(md)
    assert list(got) == list(SECTIONS)  # fixed order, none missing
    for title, body in got.items():
        assert body, f"section {title} is empty"
        if title not in ("Summary", "Warnings", "Reproduction"):
            blocks = re.findall(r"```\n(.*?)\n```", body, flags=re.S)
            assert blocks and all(b.strip() and b.strip() != "(empty output)" for b in blocks), title
    assert "Linux" in got["System"] and "ID=" in got["System"]
    assert "net.mptcp.enabled = " in got["MPTCP sysctls"]
    assert "kernel" in got["Path managers and schedulers"]
    assert "subflows" in got["Limits"]
    assert "MPTcp" in got["MPTCP counters"]
    assert "mptcp" in got["Kernel log"].lower()
    assert "lo" in got["Addresses"]
    files = archive_texts(out.with_name("report.tar.gz"))
    assert "mptcpkit-debug/report.md" in files
    assert any(n.endswith("-ss.txt") for n in files) and any(n.endswith("-nstat.txt") for n in files)
    # every counter, as mptcp-get-debug's `nstat`: the archive has them all, zeros included
    full = next(t for n, t in files.items() if n.endswith("-nstat.txt"))
    names = {line.split()[0] for line in full.splitlines()[1:] if line.strip()}
    assert {"IpInReceives", "TcpActiveOpens", "TcpExtTCPTimeouts", "MPTcpExtMPCapableSYNRX"} <= names
    assert "IpInReceives" in got["Other counters"] and "MPTcp" not in got["Other counters"]


def test_mptcp_get_debug_options(tmp_path: Path) -> None:
    res = debug("--version")
    assert res.stdout.startswith("mptcpkit debug: version ")
    assert debug("-v").stdout == res.stdout
    out = tmp_path / "c.md"
    debug("-c", "-o", str(out))  # mptcp-get-debug -c: collect and exit
    assert "mode: snapshot" in out.read_text()
    both = subprocess.run([MPTCPKIT, "debug", "-c", "-r"], capture_output=True, text=True, timeout=30)
    assert both.returncode == 2 and "exclude each other" in both.stderr
    helptext = subprocess.run([MPTCPKIT, "debug", "-h"], capture_output=True, text=True, timeout=30).stdout
    for flag in ("--collect", "--reproduce", "--version", "--help"):
        assert flag in helptext


def test_reproduce_captures_events_of_a_real_connection(
    veth_pair: tuple[str, str], start_serve: Start, tmp_path: Path
) -> None:
    client_ns, server_ns = veth_pair
    subprocess.run(
        ["ip", "-n", client_ns, "mptcp", "endpoint", "add", "10.0.1.1", "dev", "eth0", "signal"], check=True
    )
    _, port = start_serve(netns=server_ns, host="0.0.0.0")
    out = tmp_path / "repro.md"
    res = debug(
        "-o",
        str(out),
        "--reproduce",
        "--",
        MPTCPKIT,
        "run",
        "--",
        "curl",
        "-s",
        f"http://10.0.1.2:{port}/",
        netns=client_ns,
    )
    assert "recording MPTCP events while running" in res.stderr
    got = sections(out.read_text())
    repro = got["Reproduction"]
    assert "exit status 0" in repro and "You are using MPTCP." in repro
    events = [
        json.loads(line)
        for line in archive_texts(out.with_name("repro.tar.gz"))["mptcpkit-debug/events.jsonl"].splitlines()
    ]
    mine = [e for e in events if e.get("dport") == port and e.get("daddr") == "10.0.1.2"]
    assert {"created", "established"} <= {e["type"] for e in mine}
    token = mine[0]["token"]
    assert any(e["type"] == "closed" and e["token"] == token for e in events)
    assert "MPTcpExtMPCapableSYNACKRX" in repro  # counter differences of the handshake
    assert "10.0.1.1" in got["Endpoints"]  # the namespace's endpoint is reported


def test_reproduce_for_a_duration(veth_pair: tuple[str, str], start_serve: Start, tmp_path: Path) -> None:
    client_ns, server_ns = veth_pair
    _, port = start_serve(netns=server_ns, host="0.0.0.0")
    out = tmp_path / "d.md"
    argv = [
        "ip",
        "netns",
        "exec",
        client_ns,
        MPTCPKIT,
        "debug",
        "-o",
        str(out),
        "--reproduce",
        "--duration",
        "2",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "recording MPTCP events for 2 s" in proc.stderr.readline()
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                client_ns,
                MPTCPKIT,
                "run",
                "--",
                "curl",
                "-s",
                f"http://10.0.1.2:{port}/",
            ],
            check=True,
            capture_output=True,
            timeout=20,
        )
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    repro = sections(out.read_text())["Reproduction"]
    assert "Recorded for 2 s" in repro and '"type": "established"' in repro and f'"dport": {port}' in repro


def machine_addresses() -> set[str]:
    links = json.loads(
        subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    )
    found = set()
    for link in links:
        mac = link.get("address", "")
        if mac and mac not in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff"):
            found.add(mac)
        for a in link.get("addr_info", []):
            if a["local"] not in ("127.0.0.1", "::1"):
                found.add(a["local"])
            if a.get("broadcast"):
                found.add(a["broadcast"])
    return found


def test_redact_leaves_no_address_of_the_machine(tmp_path: Path) -> None:
    # Make sure an MPTCP socket with the machine's address shows up in `ss` too.
    addrs = machine_addresses()
    ipv4 = next((a for a in addrs if re.fullmatch(r"[\d.]+", a)), None)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
    listener.bind((ipv4 or "0.0.0.0", 0))
    listener.listen()
    try:
        out = tmp_path / "red.md"
        debug("-o", str(out), "--redact")
    finally:
        listener.close()
    texts = {"report": out.read_text(), **archive_texts(out.with_name("red.tar.gz"))}
    names = {socket.gethostname(), os.uname().nodename} - {"localhost"}
    assert addrs, "this machine has no address to redact?"
    for name, text in texts.items():
        for secret in addrs | names:
            assert secret not in text, f"{secret} leaked in {name}"
            assert secret.lower() not in text.lower(), f"{secret} leaked in {name}"
    assert "ipv4-1" in texts["report"] and "addresses redacted" in texts["report"]


def test_non_root_works_with_warning() -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    where = Path(tempfile.mkdtemp(prefix="mkt-tl-nonroot-"))  # pytest's tmp_path is root-only
    try:
        where.chmod(0o777)
        out = where / "user.md"
        argv = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            MPTCPKIT,
            "debug",
            "-o",
            str(out),
        ]
        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=where,
            env={**os.environ, "HOME": str(where)},
        )
        assert res.returncode == 0, res.stderr
        assert "warning: not running as root" in res.stderr
        got = sections(out.read_text())
    finally:
        shutil.rmtree(where)
    assert list(got) == list(SECTIONS)
    assert "not running as root" in got["Warnings"]
    assert "uid 65534 (not root)" in got["Summary"]
    assert "net.mptcp.enabled" in got["MPTCP sysctls"]


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    res = subprocess.run(
        [MPTCPKIT, "debug", "-o", str(tmp_path / "missing-dir" / "r.md")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "cannot write the report" in res.stderr and "Traceback" not in res.stderr
