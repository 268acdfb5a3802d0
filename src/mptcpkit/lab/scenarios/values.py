"""Reading scenario and suite files: a typed table reader with field paths, sizes, rules, file text.

Every problem is a ModelError carrying the field path; the loaders turn it into one message with file:line.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from mptcpkit.errors import TopologyError
from mptcpkit.lab.model import ModelError
from mptcpkit.lab.topology_file import read_lab_file
from mptcpkit.lab.units import parse_duration, parse_fraction, parse_rate

FieldPath = tuple[str | int, ...]

_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


class ScenarioError(TopologyError):
    """A scenario or suite file is invalid: `file:line: field: message` (exit 2)."""


def parse_size(value: object) -> int:
    """'64KiB', '10MB', '1.5GiB' or a number of bytes -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '10MB', got a boolean")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size such as '10MB' or '64KiB', got {value!r}")
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)", value.strip())
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"cannot read {value!r} as a size (use e.g. '10MB', '64KiB', '1GiB' or bytes)")
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"size must be positive, got {value!r}")
    return size


def parse_time(value: object) -> float:
    """A duration that must be finite (rejects nan/inf numbers that TOML allows)."""
    seconds = parse_duration(value)
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {value!r}")
    return seconds


def parse_positive_time(value: object) -> float:
    seconds = parse_time(value)
    if seconds <= 0:
        raise ValueError(f"must be longer than 0, got {value!r}")
    return seconds


def parse_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value!r}")
    return float(value)


def parse_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {value!r}")
    return value


def parse_index(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an index 0, 1, 2 ..., got {value!r}")
    return value


def parse_name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a name, got {value!r}")
    return value


def parse_names(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a list of names, got {value!r}")
    return tuple(value)


_RULE = re.compile(r"\s*(>=|<=)\s*([0-9]+(?:\.[0-9]+)?)?\s*")


def parse_rule(value: object) -> tuple[str, float]:
    """'>= 0.97' -> ('>=', 0.97); '<=' -> ('<=', 1.0)."""
    match = _RULE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"cannot read {value!r} as a rule (use e.g. '>= 0.97' or '<=')")
    factor = float(match.group(2)) if match.group(2) else 1.0
    return match.group(1), factor


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    options = sorted(choices)
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; one of: {', '.join(options)}" if options else ""


class Table:
    """Typed access to one TOML table, refusing unknown keys with a 'did you mean' hint."""

    def __init__(self, data: Any, path: FieldPath, allowed: Iterable[str]) -> None:
        if not isinstance(data, dict):
            raise ModelError(path, f"expected a table, got {_type_name(data)}")
        allowed_set = set(allowed)
        for key in data:
            if key not in allowed_set:
                raise ModelError((*path, key), f"unknown field '{key}'{did_you_mean(key, allowed_set)}")
        self.data: dict[str, Any] = data
        self.path = path

    def at(self, key: str | int, *more: str | int) -> FieldPath:
        return (*self.path, key, *more)

    def has(self, key: str) -> bool:
        return key in self.data

    def parse(self, key: str, parser: Callable[[Any], Any], default: Any = None) -> Any:
        if key not in self.data:
            return default
        try:
            return parser(self.data[key])
        except ValueError as exc:
            raise ModelError(self.at(key), str(exc)) from None

    def string(self, key: str, default: str | None = None) -> str | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if not isinstance(value, str):
            raise ModelError(self.at(key), f"expected a string, got {_type_name(value)}")
        return value

    def integer(self, key: str, default: int | None = None, low: int | None = None) -> int | None:
        if key not in self.data:
            return default
        value = self.data[key]
        if isinstance(value, bool) or not isinstance(value, int):
            raise ModelError(self.at(key), f"expected an integer, got {_type_name(value)}")
        if low is not None and value < low:
            raise ModelError(self.at(key), f"must be at least {low}, got {value}")
        return value

    def table(self, key: str, allowed: Iterable[str]) -> Table:
        return Table(self.data.get(key, {}), self.at(key), allowed)

    def array(self, key: str) -> list[Any]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise ModelError(self.at(key), f"expected a list, got {_type_name(value)}")
        return value


def _type_name(value: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a number", list: "a list"}
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def shape_parsers() -> dict[str, Callable[[Any], Any]]:
    """Link shape keys of scenario files (same units as topology files)."""

    def queue(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1_000_000:
            raise ValueError(f"queue is a number of packets 1..1000000, got {value!r}")
        return value

    return {
        "rate": parse_rate,
        "delay": parse_time,
        "jitter": parse_time,
        "loss": parse_fraction,
        "queue": queue,
        "reorder": parse_fraction,
    }


def read_text(path: Path, what: str = "scenario file") -> str:
    """A scenario or suite file's text, or one ScenarioError (the topology files' reader and rules)."""
    return read_lab_file(path, what, ScenarioError)
