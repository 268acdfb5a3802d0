"""iperf3 as an alternative engine: argv builders and a pure parser of `iperf3 -J` into `TrafficResult`.

iperf3 >= 3.16 has `--mptcp`; Debian's 3.12 has not, so MPTCP is forced from outside:
`mptcpize run iperf3 ...` (LD_PRELOAD) or the project's own `mptcpkit run iperf3 ...`. Run the client with
`--get-server-output` (and the server with `-J`) so the result carries receiver-side samples for uploads too.
iperf3 cannot tell whether its connection fell back to TCP, and does no integrity check: those fields stay
empty (`integrity: none`, `fallback: false`); check fallback with `ss -M` if you need it.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from mptcpkit.errors import EnvironmentProblem
from mptcpkit.lab.traffic.model import (
    ConnectionStats,
    ErrorInfo,
    ProcessCpu,
    Sample,
    StreamResult,
    TrafficResult,
)

WRAPPERS = ("auto", "native", "mptcpize", "mptcpkit", "none")


@dataclass(frozen=True, slots=True)
class Iperf3Client:
    """One iperf3 client run (bulk modes only)."""

    connect: str
    port: int
    mode: str = "bulk-upload"
    proto: str = "mptcp"
    bytes: int | None = None
    duration: float | None = None
    interval: float = 0.1
    parallel: int = 1
    connect_timeout_ms: int | None = None


def supports_mptcp(help_text: str) -> bool:
    """True when `iperf3 --help` lists `--mptcp` (iperf3 >= 3.16 built with MPTCP)."""
    return "--mptcp" in help_text


def wrapper_prefix(wrapper: str, proto: str) -> list[str]:
    """The argv prefix that makes iperf3 use MPTCP (`native` adds the flag instead, see `_mptcp_flag`)."""
    if proto != "mptcp" or wrapper in ("native", "none"):
        return []
    if wrapper == "mptcpize":
        return ["mptcpize", "run"]
    if wrapper == "mptcpkit":
        return ["mptcpkit", "run", "--"]
    raise ValueError(f"unknown iperf3 wrapper {wrapper!r} (one of {', '.join(WRAPPERS)})")


def _mptcp_flag(wrapper: str, proto: str) -> list[str]:
    return ["--mptcp"] if proto == "mptcp" and wrapper == "native" else []


def detect_wrapper(binary: str = "iperf3") -> str:
    """native if this iperf3 has --mptcp, else mptcpize, else `mptcpkit run` (I/O: runs `iperf3 --help`)."""
    if shutil.which(binary) is None:
        raise EnvironmentProblem(f"{binary} is not installed", hint="apt-get install iperf3")
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False).stdout
    if supports_mptcp(help_text):
        return "native"
    if shutil.which("mptcpize"):
        return "mptcpize"
    if shutil.which("mptcpkit"):
        return "mptcpkit"
    raise EnvironmentProblem(
        f"{binary} has no --mptcp and neither mptcpize nor mptcpkit is on PATH",
        hint="apt-get install mptcpize",
    )


def server_argv(
    bind: str,
    port: int,
    *,
    proto: str = "mptcp",
    wrapper: str = "mptcpize",
    interval: float = 0.1,
    once: bool = True,
    binary: str = "iperf3",
) -> list[str]:
    """argv of an iperf3 server that prints JSON (so `--get-server-output` embeds it in the client's)."""
    argv = [
        *wrapper_prefix(wrapper, proto),
        binary,
        "-s",
        "-B",
        bind,
        "-p",
        str(port),
        "-J",
        "-i",
        str(interval),
    ]
    argv += _mptcp_flag(wrapper, proto)
    if once:
        argv.append("-1")
    return argv


def whole_seconds(duration: float) -> int:
    """iperf3's `-t`: it reads whole seconds (atoi), and 0 means "run forever", so 0.5 s would never end.

    Rounds up, so a run lasts at least as long as asked.
    """
    return max(1, math.ceil(duration - 1e-9))


def client_argv(opts: Iperf3Client, *, wrapper: str = "mptcpize", binary: str = "iperf3") -> list[str]:
    """argv of an iperf3 client run equivalent to our engine's bulk modes."""
    argv = [*wrapper_prefix(wrapper, opts.proto), binary, "-c", opts.connect, "-p", str(opts.port), "-J"]
    argv += ["--get-server-output", "-i", str(opts.interval)]
    argv += _mptcp_flag(wrapper, opts.proto)
    if opts.bytes is not None:
        argv += ["-n", str(opts.bytes)]
    elif opts.duration is not None:
        argv += ["-t", str(whole_seconds(opts.duration))]
    if opts.parallel != 1:
        argv += ["-P", str(opts.parallel)]
    if opts.mode == "bulk-download":
        argv.append("-R")
    elif opts.mode == "bulk-both":
        argv.append("--bidir")
    elif opts.mode != "bulk-upload":
        raise ValueError(f"iperf3 runs bulk modes only, not {opts.mode!r}")
    if opts.connect_timeout_ms is not None:
        argv += ["--connect-timeout", str(opts.connect_timeout_ms)]
    return argv


def _error_kind(message: str) -> str:
    low = message.lower()
    for needle, kind in (
        ("refused", "refused"),
        ("timed out", "timeout"),
        ("timeout", "timeout"),
        ("reset", "reset"),
        ("unreachable", "unreachable"),
    ):
        if needle in low:
            return kind
    return "iperf3"


def _receiver_samples(intervals: list[dict[str, Any]]) -> list[Sample]:
    """Cumulative samples of the receiving end (`sender: false` sums) in one side's iperf3 intervals."""
    out: list[Sample] = []
    total = 0
    for iv in intervals:
        for key in ("sum", "sum_bidir_reverse"):
            s = iv.get(key)
            if isinstance(s, dict) and s.get("sender") is False:
                total += int(s.get("bytes", 0))
                out.append(
                    Sample(t=float(s.get("end", 0.0)), bytes=total, bps=float(s.get("bits_per_second", 0)))
                )
    return out


def _cpu(end: dict[str, Any], seconds: float) -> ProcessCpu | None:
    """iperf3's own CPU figures (percent of wall time, both ends) as seconds."""
    util = end.get("cpu_utilization_percent")
    if not isinstance(util, dict) or seconds <= 0:
        return None
    return ProcessCpu(
        user_s=float(util.get("host_user", 0.0)) * seconds / 100,
        sys_s=float(util.get("host_system", 0.0)) * seconds / 100,
        source="iperf3",
        peer_user_s=float(util.get("remote_user", 0.0)) * seconds / 100,
        peer_sys_s=float(util.get("remote_system", 0.0)) * seconds / 100,
    )


def parse(text: str, *, mode: str = "bulk-upload", proto: str = "mptcp") -> TrafficResult:
    """Parse an iperf3 client's `-J` output (pure). Errors in the JSON become `TrafficResult.error`."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not iperf3 JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not iperf3 JSON: top level is not an object")
    start = data.get("start") or {}
    end = data.get("end") or {}
    t0 = float((start.get("timestamp") or {}).get("timesecs", 0))
    result = TrafficResult(
        role="client",
        engine="iperf3",
        mode=mode,
        proto=proto,
        ok=False,
        started_at=t0,
        ended_at=t0,
        options={
            "version": start.get("version"),
            "test_start": start.get("test_start"),
            "sender_tcp_congestion": end.get("sender_tcp_congestion"),
        },
    )
    mss = start.get("tcp_mss_default")
    for i, c in enumerate(start.get("connected") or []):
        result.connections.append(
            ConnectionStats(
                index=i,
                proto=proto,
                local=f"{c.get('local_host')}:{c.get('local_port')}",
                remote=f"{c.get('remote_host')}:{c.get('remote_port')}",
                mss=int(mss) if mss else None,
                fallback=False,
                fallback_reason=None,
                mptcp_info=None,
            )
        )
    server = data.get("server_output_json") or {}
    retrans = 0
    for i, st in enumerate(end.get("streams") or []):
        snd, rcv = st.get("sender") or {}, st.get("receiver") or {}
        local_sends = bool(snd.get("sender", True))
        retrans += int(snd.get("retransmits", 0) or 0)
        seconds = float(rcv.get("seconds") or rcv.get("end") or 0.0)
        begin = t0 + float(rcv.get("start", 0.0))
        result.streams.append(
            StreamResult(
                direction="upload" if local_sends else "download",
                connection=i,
                bytes_sent=int(snd.get("bytes", 0)),
                bytes_received=int(rcv.get("bytes", 0)),
                start=begin,
                end=begin + seconds,
                duration_s=seconds,
                goodput_bps=float(rcv.get("bits_per_second", 0.0)),
                integrity="none",
                sender_sha256=None,
                receiver_sha256=None,
                integrity_ok=None,
                sender_duration_s=float(snd.get("seconds", 0.0)),
            )
        )
    for direction in ("upload", "download"):
        first = next((s for s in result.streams if s.direction == direction), None)
        if first is None:
            continue
        # the receiver's own intervals: the client's for downloads, the embedded server output for uploads
        source = data.get("intervals") if direction == "download" else server.get("intervals")
        first.samples = _receiver_samples(source or [])
    result.options["retransmits"] = retrans
    result.bytes_total = sum(s.bytes_received for s in result.streams)
    received = [end.get("sum_received"), end.get("sum_received_bidir_reverse")]
    result.goodput_bps = sum(float(r.get("bits_per_second", 0.0)) for r in received if isinstance(r, dict))
    if result.streams:
        result.ended_at = max(s.end for s in result.streams)
    result.cpu = _cpu(end, max((s.sender_duration_s or s.duration_s for s in result.streams), default=0.0))
    if data.get("error"):
        message = str(data["error"])
        result.error = ErrorInfo(_error_kind(message), f"iperf3: {message}")
    result.ok = result.error is None and bool(result.streams)
    if result.error is None and not result.streams:
        result.error = ErrorInfo("iperf3", "iperf3 reported no stream")
    return result
