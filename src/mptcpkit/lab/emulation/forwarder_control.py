"""The forwarder's control channel: a unix datagram socket taking JSON commands at run time.

Stdlib only, like the forwarder, which loads it as a sibling file when it runs as a script (``python -I``).
``parse_command`` is pure: it checks one datagram and returns the normalised command or raises ValueError.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from collections.abc import Sequence
from typing import Any, Protocol


class Controlled(Protocol):
    """What a control command acts on: one shaped direction of the forwarder."""

    tap: str

    def settings(self) -> dict[str, Any]: ...

    def reconfigure(self, change: dict[str, Any]) -> None: ...


CONTROL_MAX = 4096
_SET_FIELDS = ("rate_bps", "queue_packets", "delay_s", "jitter_s", "loss", "gso")


def parse_command(data: bytes, taps: list[str]) -> dict[str, Any]:
    """Check one control datagram: ``{"op": "get"}`` or ``{"op": "set", "tap": T, <all of _SET_FIELDS>}``.

    Raises ValueError with the reason; the answer then carries it and nothing changes.
    """
    try:
        cmd = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"not JSON: {e}") from None
    if not isinstance(cmd, dict) or cmd.get("op") not in ("get", "set"):
        raise ValueError('a command is a JSON object with "op": "get" or "set"')
    if cmd["op"] == "get":
        return {"op": "get"}
    if cmd.get("tap") not in taps:
        raise ValueError(f"unknown tap {cmd.get('tap')!r} (taps: {', '.join(taps)})")
    missing = [k for k in _SET_FIELDS if k not in cmd]
    extra = sorted(set(cmd) - {"op", "tap", *_SET_FIELDS})
    if missing or extra:
        raise ValueError(f"set needs exactly {', '.join(_SET_FIELDS)} (missing {missing}, unknown {extra})")
    rate = cmd["rate_bps"]
    if rate is not None and (not _number(rate) or rate <= 0):
        raise ValueError(f"rate_bps must be a positive number or null, got {rate!r}")
    queue = cmd["queue_packets"]
    if not isinstance(queue, int) or isinstance(queue, bool) or queue < 1:
        raise ValueError(f"queue_packets must be a positive integer, got {queue!r}")
    for key in ("delay_s", "jitter_s"):
        if not _number(cmd[key]) or not 0 <= cmd[key] <= 60:
            raise ValueError(f"{key} must be between 0 and 60, got {cmd[key]!r}")
    if cmd["jitter_s"] > cmd["delay_s"]:
        raise ValueError("jitter_s cannot exceed delay_s")
    if not _number(cmd["loss"]) or not 0 <= cmd["loss"] <= 1:
        raise ValueError(f"loss must be between 0 and 1, got {cmd['loss']!r}")
    if not isinstance(cmd["gso"], bool):
        raise ValueError(f"gso must be true or false, got {cmd['gso']!r}")
    return {
        "op": "set",
        "tap": cmd["tap"],
        "rate_bps": float(rate) if rate is not None else None,
        "queue_packets": queue,
        "delay_s": float(cmd["delay_s"]),
        "jitter_s": float(cmd["jitter_s"]),
        "loss": float(cmd["loss"]),
        "gso": cmd["gso"],
    }


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def handle_control(sock: socket.socket, dirs: Sequence[Controlled]) -> None:
    """Answer the pending control datagrams: the settings of every direction after the command, or the error."""
    while True:
        try:
            data, peer = sock.recvfrom(CONTROL_MAX)
        except (BlockingIOError, InterruptedError):
            return
        try:
            cmd = parse_command(data, [d.tap for d in dirs])
            if cmd["op"] == "set":
                next(d for d in dirs if d.tap == cmd["tap"]).reconfigure(cmd)
            answer: dict[str, Any] = {"ok": True, "directions": [d.settings() for d in dirs]}
        except (ValueError, OSError) as e:
            answer = {"ok": False, "error": str(e)}
        if peer:
            with contextlib.suppress(OSError):
                sock.sendto(json.dumps(answer).encode(), peer)


def open_control(path: str) -> socket.socket:
    """A unix datagram socket at ``path`` (a file path, so it is reachable from outside the wire netns)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.setblocking(False)
    return sock
