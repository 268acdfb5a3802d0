"""Map a field path of a parsed TOML document back to its line, for error messages.

tomllib gives values but no positions; this scans the text once, following table headers, array-of-tables
indices, dotted and quoted keys, inline tables and multi-line arrays of inline tables, which is what topology files
use. Lookup falls back to the nearest enclosing field that has a line.

Rule: every pattern here is unambiguous (no two quantifiers can match the same characters), so each line is
scanned in linear time whatever it holds; lines inside multi-line strings are skipped, not parsed as keys.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_HEADER = re.compile(r"^[ \t]*(\[\[?)([^\]]*)\]\]?[ \t]*(#.*)?$")
_KEY = re.compile(
    r'^\s*((?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+)(?:\s*\.\s*(?:"[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+))*)\s*='
)
_INLINE_KEY = re.compile(r'(?:[{,]\s*)("[^"]*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*=')


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r'"([^"]*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', text)
    return tuple(a or b or c for a, b, c in parts)


def index_lines(text: str) -> dict[Path, int]:
    """Field path -> 1-based line number for every field the scanner recognises."""
    lines: dict[Path, int] = {}
    table: Path = ()
    array_counts: dict[Path, int] = {}
    open_array: Path | None = None
    element = -1
    depth = 0
    in_string: str | None = None  # the delimiter of the multi-line string we are inside, if any
    for number, raw in enumerate(text.splitlines(), start=1):
        was_in_string = in_string
        in_string = _multiline_state(raw, in_string)
        if was_in_string is not None:
            continue  # a line of a multi-line string's body (or its closing line)
        line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
        if open_array is not None:
            if line.lstrip().startswith("{"):
                element += 1
                lines.setdefault((*open_array, element), number)
                for key in _INLINE_KEY.findall(line):
                    lines.setdefault((*open_array, element, *_split_key(key)), number)
            depth += line.count("[") - line.count("]")
            if depth <= 0:
                open_array = None
            continue
        header = _HEADER.match(line)
        if header and header.group(2).strip():
            path: Path = _split_key(header.group(2))
            if header.group(1) == "[[":
                index = array_counts.get(path, -1) + 1
                array_counts[path] = index
                path = (*path, index)
            table = path
            lines.setdefault(table, number)
            continue
        key = _KEY.match(line)
        if not key:
            continue
        path = (*table, *_split_key(key.group(1)))
        lines.setdefault(path, number)
        rest = line[key.end() :]
        for inner in _INLINE_KEY.findall(rest):
            lines.setdefault((*path, *_split_key(inner)), number)
        stripped = rest.strip()
        if stripped.startswith("[") and stripped.count("[") > stripped.count("]"):
            open_array, element = path, -1
            depth = stripped.count("[") - stripped.count("]")
            if "{" in stripped:
                element = 0
                lines.setdefault((*path, 0), number)
        elif stripped.startswith("["):
            # a one-line array: every element is on this line
            for index in range(stripped.count(",") + 1):
                lines.setdefault((*path, index), number)
    return lines


def _multiline_state(line: str, in_string: str | None) -> str | None:
    """The multi-line string delimiter open after `line` (None: not inside one), given the state before it."""
    position = 0
    while True:
        if in_string is None:
            starts = [(line.find(d, position), d) for d in ('"""', "'''")]
            found = [(i, d) for i, d in starts if i >= 0]
            if not found:
                return None
            index, delimiter = min(found)
            in_string, position = delimiter, index + 3
        else:
            index = line.find(in_string, position)
            if index < 0:
                return in_string
            in_string, position = None, index + 3


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, or of its nearest ancestor that has one."""
    probe = path
    while probe:
        if probe in lines:
            return lines[probe]
        probe = probe[:-1]
    return None
