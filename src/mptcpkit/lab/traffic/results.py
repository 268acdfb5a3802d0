"""Turning both ends' summaries into the result document: one stream from two halves, totals and the verdict."""

from __future__ import annotations

import resource
import time
from typing import Any

from mptcpkit.lab.traffic.model import ProcessCpu, Sample, StreamResult, TrafficResult


def stream_result(
    direction: str, index: int, integrity: str, snd: dict[str, Any], rcv: dict[str, Any]
) -> StreamResult:
    """Join the sender's and the receiver's summaries of one stream."""
    dur = max(1e-9, float(rcv["end"]) - float(rcv["start"]))
    ok: bool | None
    same_len = int(snd["bytes"]) == int(rcv["bytes"])
    if integrity == "sha256":
        ok = same_len and rcv["first_bad"] is None and snd["sha256"] == rcv["sha256"]
    elif integrity == "verify":
        ok = same_len and rcv["first_bad"] is None
    else:
        ok = None
    return StreamResult(
        direction=direction,
        connection=index,
        bytes_sent=int(snd["bytes"]),
        bytes_received=int(rcv["bytes"]),
        start=float(rcv["start"]),
        end=float(rcv["end"]),
        duration_s=dur,
        goodput_bps=int(rcv["bytes"]) * 8 / dur,
        integrity=integrity,
        sender_sha256=snd.get("sha256"),
        receiver_sha256=rcv.get("sha256"),
        integrity_ok=ok,
        first_bad_offset=rcv.get("first_bad"),
        sender_duration_s=float(snd["end"]) - float(snd["start"]),
        samples=[Sample(**s) for s in rcv.get("samples", [])],
    )


_cpu_baseline = (0.0, 0.0)


def mark_cpu_baseline() -> None:
    """Start the process CPU count here (after imports and listen), so a result counts only its session."""
    global _cpu_baseline
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _cpu_baseline = (usage.ru_utime, usage.ru_stime)


def finish(result: TrafficResult) -> TrafficResult:
    """Fill the totals and the verdict from the parts."""
    result.bytes_total = sum(s.bytes_received for s in result.streams)
    result.goodput_bps = sum(s.goodput_bps for s in result.streams)
    if result.connect is not None and not result.streams and result.connect.goodput_bps:
        result.goodput_bps = result.connect.goodput_bps
    fbs = [c for c in result.connections if c.fallback]
    if fbs:
        result.fallback = True
        result.fallback_reason = f"connection {fbs[0].index}: {fbs[0].fallback_reason}"
    result.ok = (
        result.error is None
        and all(s.integrity_ok is not False for s in result.streams)
        and not (result.proto == "mptcp" and result.fallback)
    )
    result.ended_at = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu = ProcessCpu(user_s=usage.ru_utime - _cpu_baseline[0], sys_s=usage.ru_stime - _cpu_baseline[1])
    return result


def server_result(mode: str, proto: str, options: dict[str, Any]) -> TrafficResult:
    """An empty server-side result to fill in."""
    return TrafficResult(
        role="server",
        engine="mptcpkit",
        mode=mode,
        proto=proto,
        ok=False,
        started_at=time.time(),
        ended_at=0.0,
        options=options,
    )
