"""One JSON form for errors that cross a process or VM boundary, so the user sees the original message.

The VM agent (replies to the host), the VM lab supervisor (its lab record) and a `lab run --kernel` guest (its
result file) all encode with `error_to_json`; the host decodes with `error_from_json` and raises the same kind
of error (a usage error stays exit 2). Anything that is not an MptcpkitError becomes a LabError naming its type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mptcpkit.errors import EnvironmentProblem, LabError, MptcpkitError, UsageError

# TopologyError is a UsageError whose message already names file and line: it comes back as UsageError.
KINDS: dict[str, type[MptcpkitError]] = {
    "UsageError": UsageError,
    "TopologyError": UsageError,
    "EnvironmentProblem": EnvironmentProblem,
    "LabError": LabError,
}


def error_to_json(exc: BaseException, *, where: str = "") -> dict[str, Any]:
    """`{"type", "message", "hint"}`; `where` prefixes messages of unexpected errors (e.g. "guest agent")."""
    if isinstance(exc, MptcpkitError):
        return {"type": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    prefix = f"{where}: " if where else ""
    return {"type": "LabError", "message": f"{prefix}{type(exc).__name__}: {exc}", "hint": None}


def error_from_json(data: Mapping[str, Any], *, default: str = "the operation failed") -> MptcpkitError:
    """The error `error_to_json` encoded (unknown types: LabError)."""
    kind = KINDS.get(str(data.get("type")), LabError)
    hint = data.get("hint")
    return kind(str(data.get("message") or default), hint=str(hint) if hint is not None else None)
