"""Which sysctl keys a lab may write: the rule that keeps topology and scenario files inside the lab.

Rule 1: a key is dotted ASCII words (`net.ipv4.tcp_ecn`); no '/', no '..', no empty part, nothing absolute.
Rule 2: it lies under `net.` (owned by the lab's network namespace, VM or machine) or is on ALLOWED_OUTSIDE_NET.
Rule 3: values are one short line of printable ASCII.

Files are checked at parse time (model.validate); every writer (netns, SSH, VM) calls `require_safe_sysctl`
again just before writing, so a Topology built in Python, unpickled, or changed after validation cannot slip
a path such as "/tmp/x" or a host-wide key such as "kernel.hostname" through.
"""

from __future__ import annotations

import re
from pathlib import Path

from mptcpkit.errors import UsageError

ALLOWED_OUTSIDE_NET: frozenset[str] = frozenset()
"""Keys outside `net.` that a lab may write. Empty on purpose: on Linux no other sysctl belongs to a network
namespace, so anything else (kernel.*, vm.*, fs.*) would change the machine running the lab. A key is added here
only with a reason (and a test) showing it cannot reach beyond the lab on every backend."""

MAX_KEY_LENGTH = 200
MAX_VALUE_LENGTH = 256
_PART = re.compile(r"[A-Za-z0-9_-]+")
_VALUE = re.compile(r"[\x20-\x7e\t]*")


def sysctl_key_problem(key: object) -> str | None:
    """Why `key` may not be written by a lab, or None when it may. Pure; used by the loaders and the writers."""
    if not isinstance(key, str) or not key:
        return "a sysctl key is a non-empty string such as 'net.ipv4.tcp_ecn'"
    shown = ascii(key)[1:-1] if len(key) <= 60 else ascii(key[:60])[1:-1] + "..."
    if len(key) > MAX_KEY_LENGTH:
        return f"sysctl key '{shown}' is longer than {MAX_KEY_LENGTH} characters"
    if "/" in key or "\\" in key:
        return f"sysctl key '{shown}' contains a path separator; write keys dotted, e.g. 'net.ipv4.tcp_ecn'"
    parts = key.split(".")
    if any(not _PART.fullmatch(part) for part in parts):
        return (
            f"sysctl key '{shown}' is not dotted words of letters, digits, '_' or '-' "
            "(no empty parts, '..', spaces or other characters)"
        )
    if parts[0] != "net" and key not in ALLOWED_OUTSIDE_NET:
        return (
            f"sysctl key '{shown}' is outside 'net.': a lab only writes settings its own network namespace "
            "owns (see docs/topology.md, 'Sysctls')"
        )
    if len(parts) < 2:
        return "a sysctl key names a setting under 'net.', e.g. 'net.ipv4.tcp_ecn'"
    return None


def sysctl_value_problem(value: object) -> str | None:
    """Why `value` may not be written to a sysctl, or None."""
    if not isinstance(value, str):
        return "sysctl values are strings or numbers"
    if len(value) > MAX_VALUE_LENGTH:
        return f"sysctl value is longer than {MAX_VALUE_LENGTH} characters"
    if not _VALUE.fullmatch(value):
        return "sysctl values are one line of printable ASCII"
    return None


def require_safe_sysctl(key: str, value: str | None = None) -> None:
    """Raise UsageError unless the lab may write `key` (and `value`); the writers' last line of defence."""
    problem = sysctl_key_problem(key) or (None if value is None else sysctl_value_problem(value))
    if problem is not None:
        raise UsageError(f"refusing to write sysctl: {problem}")


def sysctl_read_path(key: str) -> Path:
    """/proc/sys path of `key` for reading (any subtree may be read), refusing keys that are not dotted words."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not all(_PART.fullmatch(p) for p in key.split("."))
    ):
        raise UsageError(
            f"refusing to read sysctl {str(key)[:60]!a}: not dotted words such as 'net.ipv4.tcp_ecn'"
        )
    return Path("/proc/sys", *key.split("."))
