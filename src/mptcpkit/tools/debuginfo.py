"""`mptcpkit debug`: collect what MPTCP developers ask for in a bug report.

The report is Markdown with sections in a fixed order (SECTIONS), ready to paste into an issue form; a
tar.gz next to it keeps every raw output. Reproduce mode snapshots, records every mptcp_pm event while the
user reproduces the problem (until Enter, a duration, or a command ends), snapshots again and lists the
MPTcp counters that changed. Rendering, counter parsing/diffing and redaction are pure; collection is a thin
layer running commands and reading /proc.
"""

from __future__ import annotations

import io
import json
import os
import re
import select
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mptcpkit import __version__
from mptcpkit.errors import UsageError
from mptcpkit.tools.redact import Redactor
from mptcpkit.tools.sysfacts import SYSCTL_DIR, pm_daemons, run_text, running_programs

Log = Callable[[str], None]

SECTIONS = (
    "Summary",
    "Warnings",
    "System",
    "MPTCP sysctls",
    "Path managers and schedulers",
    "Endpoints",
    "Limits",
    "Path-manager daemons",
    "Addresses",
    "Routes",
    "Routing rules",
    "MPTCP sockets",
    "MPTCP counters",
    "Other counters",
    "Kernel log",
    "Reproduction",
)


@dataclass(frozen=True, slots=True)
class Output:
    """One raw output: what ran, its exit status and text."""

    name: str  # file name in the archive
    command: str
    code: int
    text: str


@dataclass
class Collected:
    """Everything gathered; `sections` maps a section title to its outputs."""

    sections: dict[str, list[Output]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    reproduction: list[str] = field(default_factory=list)  # Markdown lines
    events: list[str] = field(default_factory=list)  # one JSON object per line


@dataclass(frozen=True, slots=True)
class DebugResult:
    markdown: str
    report_path: Path
    archive_path: Path


# ---- pure parts ---------------------------------------------------------------------------------------

_NSTAT_LINE = re.compile(r"^(\S+)\s+(\d+)\s")


def parse_nstat(text: str) -> dict[str, int]:
    """`nstat -asz` output -> {counter: value}."""
    out = {}
    for line in text.splitlines():
        m = _NSTAT_LINE.match(line + " ")
        if m and not line.startswith("#"):
            out[m.group(1)] = int(m.group(2))
    return out


def split_counters(text: str) -> tuple[str, str]:
    """`nstat -asz` output -> (the MPTcp* lines, the other non-zero counters' lines), for the report.

    The full output (every counter, zeros included) stays in the archive.
    """
    mptcp: list[str] = []
    other: list[str] = []
    for line in text.splitlines():
        m = _NSTAT_LINE.match(line + " ")
        if line.startswith("#") or m is None:
            continue
        if m.group(1).startswith("MPTcp"):
            mptcp.append(line)
        elif int(m.group(2)):
            other.append(line)
    return (
        "\n".join(mptcp) + "\n" if mptcp else "(no MPTcp counter: is MPTCP in this kernel?)\n",
        "\n".join(other) + "\n" if other else "(every other counter is 0)\n",
    )


def counter_diff(before: dict[str, int], after: dict[str, int]) -> list[tuple[str, int, int, int]]:
    """(name, before, after, delta) of every counter that changed, in name order."""
    names = sorted(set(before) | set(after))
    rows = []
    for n in names:
        a, b = before.get(n, 0), after.get(n, 0)
        if a != b:
            rows.append((n, a, b, b - a))
    return rows


def fence(text: str) -> str:
    """A code block that survives backticks inside the text."""
    ticks = "```"
    while ticks in text:
        ticks += "`"
    body = text.rstrip("\n") or "(empty output)"
    return f"{ticks}\n{body}\n{ticks}"


def render_markdown(c: Collected) -> str:
    """The report, every section in SECTIONS order, each present even when empty."""
    parts = ["# MPTCP debug report (mptcpkit debug)", ""]
    for title in SECTIONS:
        parts.append(f"## {title}")
        parts.append("")
        if title == "Summary":
            parts.extend(f"- {line}" for line in c.summary)
        elif title == "Warnings":
            parts.extend([f"- {w}" for w in c.warnings] or ["- none: every source could be read"])
        elif title == "Reproduction":
            parts.extend(c.reproduction or ["Not run (use `mptcpkit debug --reproduce`)."])
        else:
            for out in c.sections.get(title, []):
                status = "" if out.code == 0 else f" (exit status {out.code})"
                parts.append(f"`{out.command}`{status}")
                parts.append("")
                parts.append(fence(out.text))
                parts.append("")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def redact_collected(c: Collected, redact: Callable[[str], str]) -> Collected:
    return Collected(
        sections={
            k: [Output(o.name, redact(o.command), o.code, redact(o.text)) for o in v]
            for k, v in c.sections.items()
        },
        warnings=[redact(w) for w in c.warnings],
        summary=[redact(s) for s in c.summary],
        reproduction=[redact(r) for r in c.reproduction],
        events=[redact(e) for e in c.events],
    )


# ---- collection ---------------------------------------------------------------------------------------


class Collector:
    """Runs the commands of each section and remembers warnings for what could not be read."""

    def __init__(self) -> None:
        self.c = Collected()
        self._n = 0

    def add(self, section: str, name: str, command: str, code: int, text: str) -> Output:
        self._n += 1
        out = Output(f"{self._n:02d}-{name}.txt", command, code, text)
        self.c.sections.setdefault(section, []).append(out)
        if code != 0:
            first = text.strip().splitlines()[0] if text.strip() else "no output"
            self.c.warnings.append(f"`{command}` failed (exit status {code}): {first}")
        return out

    def cmd(self, section: str, name: str, argv: list[str]) -> Output:
        code, text = run_text(argv)
        return self.add(section, name, " ".join(argv), code, text)

    def file(self, section: str, name: str, path: str) -> Output:
        try:
            text = Path(path).read_text(errors="replace")
            code = 0
        except OSError as exc:
            text, code = f"{path}: {exc.strerror}\n", 1
        return self.add(section, name, f"cat {path}", code, text)


def _sysctls() -> tuple[int, str]:
    if not SYSCTL_DIR.is_dir():
        return 1, "/proc/sys/net/mptcp is missing: this kernel has no MPTCP support\n"
    lines = []
    for p in sorted(SYSCTL_DIR.iterdir()):
        try:
            lines.append(f"net.mptcp.{p.name} = {p.read_text().strip()}")
        except OSError as exc:
            lines.append(f"net.mptcp.{p.name}: {exc.strerror}")
    return 0, "\n".join(lines) + "\n"


def _kernel_log() -> tuple[str, int, str]:
    code, text = run_text(["dmesg"])
    command = "dmesg | grep -i mptcp"
    if code != 0:
        code2, text2 = run_text(["journalctl", "-k", "-b", "--no-pager", "-o", "short-monotonic"])
        if code2 == 0 and "No journal files" not in text2:
            code, text, command = 0, text2, "journalctl -k -b | grep -i mptcp"
    if code != 0:
        return command, code, text
    lines = [ln for ln in text.splitlines() if "mptcp" in ln.lower()]
    body = "\n".join(lines[-200:]) if lines else "(no kernel log line mentions MPTCP)"
    return command, 0, body + "\n"


def _daemons() -> str:
    progs = running_programs()
    found = pm_daemons(progs)
    lines = [f"running path-manager daemons: {', '.join(found) or 'none'}"]
    nm = [p for p in progs if os.path.basename(p.split()[0]) == "NetworkManager"]
    lines.append(f"NetworkManager: {'running' if nm else 'not running'}")
    for p in progs:
        if "mptcpd" in p or re.search(r"mptcpkit\S*\s+pm\b", p):
            lines.append(f"  process: {p}")
    # `mptcpkit pm status` reads the daemon's state file: it knows even when the process scan does not.
    code, text = run_text([sys.executable, "-m", "mptcpkit", "pm", "status"], timeout=15)
    if code == 0:
        lines += ["mptcpkit pm status:", text.rstrip()]
    else:
        lines.append("mptcpkit pm status: " + (text.strip().splitlines() or ["not running"])[-1])
    return "\n".join(lines) + "\n"


def snapshot_counters(col: Collector | None = None) -> dict[str, int]:
    """Every kernel counter (`nstat -asz`: absolute, zeros too, without touching nstat's history).

    mptcp-get-debug shows all of `nstat`, not only MPTcp*: TCP retransmissions, drops and IP errors often
    explain an MPTCP problem. The report shows the MPTcp* lines and the non-zero others; the archive all.
    """
    code, text = run_text(["nstat", "-asz"])
    if col is not None and code != 0:
        col.add("MPTCP counters", "nstat", "nstat -asz", code, text)
    elif col is not None:
        col.add("Raw counters", "nstat", "nstat -asz", code, text)  # archived, not in the Markdown
        if code == 0:
            mptcp, other = split_counters(text)
            col.add("MPTCP counters", "nstat-mptcp", "nstat -asz (MPTcp* counters)", 0, mptcp)
            col.add("Other counters", "nstat-other", "nstat -asz (other non-zero counters)", 0, other)
    return parse_nstat(text) if code == 0 else {}


def collect_static(col: Collector) -> None:
    """Every section except Summary/Warnings/Reproduction, in SECTIONS order."""
    col.cmd("System", "uname", ["uname", "-a"])
    col.file("System", "os-release", "/etc/os-release")
    code, text = _sysctls()
    col.add("MPTCP sysctls", "sysctl-net-mptcp", "sysctl net.mptcp", code, text)
    for name in ("available_path_managers", "path_manager", "available_schedulers", "scheduler"):
        col.file("Path managers and schedulers", name, str(SYSCTL_DIR / name))
    eps = col.cmd("Endpoints", "endpoints", ["ip", "mptcp", "endpoint", "show"])
    if eps.code == 0 and not eps.text.strip():
        col.c.sections["Endpoints"][-1] = Output(eps.name, eps.command, 0, "(no MPTCP endpoint configured)\n")
    col.cmd("Limits", "limits", ["ip", "mptcp", "limits", "show"])
    col.add("Path-manager daemons", "daemons", "ps (path-manager daemons)", 0, _daemons())
    col.cmd("Addresses", "addr", ["ip", "addr", "show"])
    col.cmd("Routes", "route4", ["ip", "-4", "route", "show", "table", "main"])
    col.cmd("Routes", "route6", ["ip", "-6", "route", "show", "table", "main"])
    col.cmd("Routing rules", "rule4", ["ip", "-4", "rule", "show"])
    col.cmd("Routing rules", "rule6", ["ip", "-6", "rule", "show"])
    ss = col.cmd("MPTCP sockets", "ss", ["ss", "-ManiH"])
    if ss.code == 0 and not ss.text.strip():
        col.c.sections["MPTCP sockets"][-1] = Output(ss.name, ss.command, 0, "(no MPTCP socket open)\n")
    snapshot_counters(col)
    command, code, text = _kernel_log()
    col.add("Kernel log", "kernel-log", command, code, text)


class EventRecorder:
    """Records mptcp_pm events: through mptcpkit.netlink, else `ip mptcp monitor` as a fallback."""

    def __init__(self, log: Log) -> None:
        self.start = time.monotonic()
        self.lines: list[str] = []
        self.source = ""
        self._client = None
        self._proc: subprocess.Popen[str] | None = None
        try:
            from mptcpkit.netlink import MptcpPmClient

            client = MptcpPmClient()
            client.subscribe()
            self._client = client
            self.source = "mptcp_pm netlink events (mptcpkit.netlink)"
        except Exception as exc:
            log(f"netlink event capture unavailable ({exc}); using `ip mptcp monitor`")
            self._proc = subprocess.Popen(
                ["ip", "mptcp", "monitor"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
            os.set_blocking(self._proc.stdout.fileno(), False)  # type: ignore[union-attr]
            self.source = "ip mptcp monitor"

    def fileno(self) -> int:
        if self._client is not None:
            return self._client.subscribe().fileno()
        assert self._proc is not None and self._proc.stdout is not None
        return self._proc.stdout.fileno()

    def pump(self) -> None:
        """Read whatever is queued now."""
        t = time.monotonic() - self.start
        if self._client is not None:
            for ev in self._client.read_events():
                self.lines.append(json.dumps({"t": round(t, 3), **ev.to_dict()}))
            return
        assert self._proc is not None and self._proc.stdout is not None
        try:
            chunk = self._proc.stdout.read()
        except (BlockingIOError, TypeError):
            chunk = None
        for line in (chunk or "").splitlines():
            if line.strip():
                self.lines.append(json.dumps({"t": round(t, 3), "monitor": line.strip()}))

    def close(self) -> None:
        self.pump()
        if self._client is not None:
            self._client.close()
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


def run_reproduction(
    col: Collector, *, duration: float | None, command: Sequence[str] | None, log: Log
) -> None:
    """Snapshot, record events during the reproduction, snapshot again, diff the counters."""
    before = snapshot_counters()
    rec = EventRecorder(log)
    how: str
    status = ""
    try:
        if command:
            how = f"while `{' '.join(command)}` ran"
            log(f"recording MPTCP events while running: {' '.join(command)}")
            proc = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            out_chunks: list[bytes] = []
            assert proc.stdout is not None
            watched: list[Any] = [rec.fileno(), proc.stdout]
            while proc.stdout in watched or proc.poll() is None:
                ready, _, _ = select.select(watched, [], [], 0.2)
                if rec.fileno() in ready:
                    rec.pump()
                if proc.stdout in ready:
                    chunk = os.read(proc.stdout.fileno(), 65536)
                    if chunk:
                        out_chunks.append(chunk)
                    else:
                        watched.remove(proc.stdout)
            proc.wait()
            status = f"exit status {proc.returncode}"
            col.add(
                "Reproduction",
                "command-output",
                " ".join(command),
                0,
                b"".join(out_chunks).decode(errors="replace"),
            )
        elif duration is not None:
            how = f"for {duration:g} s"
            log(f"recording MPTCP events for {duration:g} s: reproduce the problem now")
            end = time.monotonic() + duration
            while (left := end - time.monotonic()) > 0:
                ready, _, _ = select.select([rec.fileno()], [], [], min(left, 0.5))
                if ready:
                    rec.pump()
        else:
            how = "until Enter was pressed"
            log("recording MPTCP events: reproduce the problem, then press Enter")
            while True:
                ready, _, _ = select.select([rec.fileno(), sys.stdin], [], [], 0.5)
                if rec.fileno() in ready:
                    rec.pump()
                if sys.stdin in ready:
                    sys.stdin.readline()
                    break
        time.sleep(0.2)  # late events (CLOSED) of what just ended
    finally:
        rec.close()
    after = snapshot_counters()
    col.add("Reproduction", "ss-after", "ss -ManiH (after)", *run_text(["ss", "-ManiH"]))
    col.add(
        "Reproduction",
        "endpoints-after",
        "ip mptcp endpoint show (after)",
        *run_text(["ip", "mptcp", "endpoint", "show"]),
    )
    col.c.events = rec.lines
    diff = counter_diff(before, after)
    lines = [f"Recorded {how}{' (' + status + ')' if status else ''}; event source: {rec.source}.", ""]
    lines.append(f"### Events ({len(rec.lines)})")
    lines.append("")
    lines.append(fence("\n".join(rec.lines) or "(no MPTCP event during the reproduction)"))
    lines.append("")
    lines.append(f"### Counter differences ({len(diff)})")
    lines.append("")
    if diff:
        lines.append("| counter | before | after | delta |")
        lines.append("|---|---:|---:|---:|")
        lines.extend(f"| {n} | {a} | {b} | {d:+d} |" for n, a, b, d in diff)
    else:
        lines.append("No counter changed.")
    lines.append("")
    for out in col.c.sections.pop("Reproduction", []):
        lines += [f"`{out.command}`", "", fence(out.text), ""]
        col.c.sections.setdefault("Reproduction (raw)", []).append(out)
    col.c.reproduction = lines


def write_archive(path: Path, c: Collected, markdown: str) -> None:
    """tar.gz with report.md, raw/NN-*.txt (one per command) and events.jsonl."""

    def add(tar: tarfile.TarFile, name: str, text: str) -> None:
        data = text.encode()
        info = tarfile.TarInfo(f"mptcpkit-debug/{name}")
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w:gz") as tar:
        add(tar, "report.md", markdown)
        for outs in c.sections.values():
            for out in outs:
                add(tar, f"raw/{out.name}", f"$ {out.command}\n# exit status {out.code}\n{out.text}")
        if c.events:
            add(tar, "events.jsonl", "\n".join(c.events) + "\n")


def collect_report(
    *,
    output: Path | None,
    reproduce: bool,
    duration: float | None,
    command: Sequence[str] | None,
    redact: bool,
    log: Log,
) -> DebugResult:
    col = Collector()
    is_root = os.geteuid() == 0
    if not is_root:
        msg = "not running as root: some outputs (kernel log, other users' sockets) may be missing"
        log(f"warning: {msg}")
        col.c.warnings.append(msg)
    collect_static(col)
    if reproduce:
        run_reproduction(col, duration=duration, command=command, log=log)
    now = datetime.now(UTC)
    col.c.summary = [
        f"mptcpkit {__version__}, report made {now.strftime('%Y-%m-%d %H:%M:%S')} UTC",
        f"kernel {os.uname().release} ({os.uname().machine})",
        f"running as {'root' if is_root else 'uid ' + str(os.geteuid()) + ' (not root)'}",
        f"mode: {'reproduce' if reproduce else 'snapshot'}; "
        f"addresses {'redacted' if redact else 'not redacted'}",
        f"sections: {', '.join(SECTIONS)}",
    ]
    final = col.c
    if redact:
        names = {socket.gethostname(), socket.getfqdn(), os.uname().nodename}
        final = redact_collected(col.c, Redactor(names))
    markdown = render_markdown(final)
    if output is None:
        output = Path(f"mptcpkit-debug-{now.strftime('%Y%m%d-%H%M%S')}.md")
    archive = output.with_name(output.name.removesuffix(".md") + ".tar.gz")
    try:
        output.write_text(markdown)
        write_archive(archive, final, markdown)
    except OSError as exc:
        raise UsageError(
            f"cannot write the report to {output}: {exc.strerror}",
            hint="choose a writable place with -o FILE",
        ) from exc
    return DebugResult(markdown, output, archive)
