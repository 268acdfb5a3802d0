"""Talk to a running forwarder over its control socket: change a direction's shape, read its settings.

The forwarder binds a unix datagram socket at a file path (reachable from any namespace, unlike abstract
sockets); each request is one JSON datagram and gets one JSON answer to the sender's own bound path.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Any

from mptcpkit.errors import LabError
from mptcpkit.lab.emulation.shape import LinkShape, tap_gso

ANSWER_TIMEOUT_S = 3.0


def set_command(tap: str, shape: LinkShape) -> dict[str, Any]:
    """The forwarder's ``set`` command for one direction (its fields are checked by forwarder.parse_command)."""
    return {
        "op": "set",
        "tap": tap,
        "rate_bps": shape.rate_bps,
        "queue_packets": shape.queue_packets,
        "delay_s": shape.delay_s,
        "jitter_s": shape.jitter_s,
        "loss": shape.loss,
        "gso": tap_gso(shape),
    }


def request(control_path: Path, command: dict[str, Any]) -> dict[str, Any]:
    """Send one command and return the forwarder's answer (its settings per direction); LabError on failure."""
    reply_path = control_path.with_name(f"ctl-reply-{os.getpid()}-{uuid.uuid4().hex[:8]}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(reply_path))
        sock.settimeout(ANSWER_TIMEOUT_S)
        try:
            sock.sendto(json.dumps(command).encode(), str(control_path))
            answer = json.loads(sock.recv(65536).decode())
        except (OSError, ValueError) as e:
            raise LabError(f"the link emulator at {control_path} did not answer: {e}") from e
    finally:
        sock.close()
        with contextlib.suppress(OSError):
            reply_path.unlink()
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise LabError(f"the link emulator refused {command.get('op')}: {error}")
    return answer
