"""`[matrix]`: one scenario table -> one table per combination of parameters, with `{key}` placeholders filled.

A string that is exactly "{key}" becomes the value itself (keeping its type: `parallel = "{n}"` gives an
integer); inside a longer string the value's text is inserted. `{key.0}` picks an element of a list value
(a tuple of parameters such as a pair of rates). Pure.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from mptcpkit.lab.model import ModelError

MAX_CASES = 256
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\.([0-9]+))?\}")
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def value_text(value: Any) -> str:
    """How a parameter value shows in a case name: '1%', '4', 'true', '500mbit/75mbit'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "/".join(value_text(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def case_suffix(params: dict[str, Any]) -> str:
    """{'subflows': 4, 'loss': '1%'} -> '[subflows=4,loss=1%]'."""
    return "[" + ",".join(f"{k}={value_text(v)}" for k, v in params.items()) + "]"


def _check_value(path: tuple[str | int, ...], value: Any, depth: int = 0) -> None:
    if isinstance(value, dict):
        raise ModelError(path, "matrix values are strings, numbers, booleans or lists of them")
    if isinstance(value, list):
        if depth or not value:
            raise ModelError(path, 'a list value is a tuple of plain values, e.g. ["500mbit", "75mbit"]')
        for i, item in enumerate(value):
            _check_value((*path, i), item, depth + 1)
    if isinstance(value, float) and value != value:
        raise ModelError(path, "nan is not a parameter value")


def _used(data: Any, found: set[str], path: tuple[str | int, ...], keys: set[str]) -> None:
    if isinstance(data, dict):
        for k, v in data.items():
            _used(v, found, (*path, k), keys)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            _used(v, found, (*path, i), keys)
    elif isinstance(data, str):
        for match in _PLACEHOLDER.finditer(data):
            if match.group(1) not in keys:
                hint = f"; matrix keys: {', '.join(sorted(keys))}" if keys else ""
                raise ModelError(path, f"'{{{match.group(1)}}}' names no key of [matrix]{hint}")
            found.add(match.group(1))


def _pick(params: dict[str, Any], match: re.Match[str], path: tuple[str | int, ...]) -> Any:
    value = params[match.group(1)]
    if match.group(2) is None:
        return value
    index = int(match.group(2))
    if not isinstance(value, list) or index >= len(value):
        raise ModelError(path, f"'{match.group(0)}': the value {value_text(value)!r} has no element {index}")
    return value[index]


def _fill(data: Any, params: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    if isinstance(data, dict):
        return {k: _fill(v, params, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [_fill(v, params, (*path, i)) for i, v in enumerate(data)]
    if isinstance(data, str):
        whole = _PLACEHOLDER.fullmatch(data)
        if whole:
            return _pick(params, whole, path)
        return _PLACEHOLDER.sub(lambda m: value_text(_pick(params, m, path)), data)
    return data


def expand(data: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """[(params, table)] for every case; [({}, data)] when there is no [matrix]."""
    if "matrix" not in data:
        return [({}, data)]
    table = data["matrix"]
    if not isinstance(table, dict) or not table:
        raise ModelError(("matrix",), "expected a table of parameter lists, e.g. subflows = [1, 2, 4]")
    for key, values in table.items():
        if not _KEY.fullmatch(key):
            raise ModelError(("matrix", key), f"'{key}': matrix keys are words (letters, digits, '_')")
        if not isinstance(values, list) or not values:
            raise ModelError(("matrix", key), "expected a non-empty list of values")
        for i, value in enumerate(values):
            _check_value(("matrix", key, i), value)
        texts = [value_text(v) for v in values]
        for i, text in enumerate(texts):
            if texts.index(text) != i:
                raise ModelError(("matrix", key, i), f"value '{text}' is listed twice")
    rest = {k: v for k, v in data.items() if k != "matrix"}
    found: set[str] = set()
    _used(rest, found, (), set(table))
    for key in table:
        if key not in found:
            raise ModelError(("matrix", key), f"matrix key '{key}' is not used: no field says \"{{{key}}}\"")
    count = 1
    for values in table.values():
        count *= len(values)
    if count > MAX_CASES:
        raise ModelError(("matrix",), f"{count} cases; at most {MAX_CASES} per file")
    cases = []
    for combination in itertools.product(*table.values()):
        params = dict(zip(table, combination, strict=True))
        cases.append((params, _fill(rest, params, ())))
    return cases
