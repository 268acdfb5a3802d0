"""The project's error tree.

MptcpkitError            anything the user can fix; printed as one line, never a traceback
 +-- UsageError          bad input (topology file, arguments): exit code 2
 |    +-- TopologyError  names file, line and field
 +-- EnvironmentProblem  this machine cannot do it (not root, MPTCP disabled, missing feature): exit 2
 +-- LabError            a lab operation failed while running: exit 1
"""

from __future__ import annotations


class MptcpkitError(Exception):
    """Base of every error mptcpkit reports to the user as a message."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  hint: {self.hint}"


class UsageError(MptcpkitError):
    """The user's input is wrong."""

    exit_code = 2


class TopologyError(UsageError):
    """A topology file or object is invalid; the message names file, line and field."""

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, field: str | None = None
    ) -> None:
        where = ""
        if file is not None:
            where = file + (f":{line}" if line is not None else "") + ": "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")
        self.file = file
        self.line = line
        self.field = field


class EnvironmentProblem(MptcpkitError):
    """The machine lacks something (privileges, kernel feature, program)."""

    exit_code = 2


class LabError(MptcpkitError):
    """A lab operation failed at run time."""

    exit_code = 1
