"""perf script text -> folded stacks ("comm;outer;...;leaf count"), and a compact encoding for storage.

Pure: no perf, no files. The parser reads the default `perf script` layout (a header line per sample, then one
indented line per frame, leaf first, a blank line between samples), which is what `perf script -F
comm,pid,tid,time,event,ip,sym,dso` prints as well. Frames are reversed to root-first, the command name becomes the
root frame (as Brendan Gregg's stackcollapse-perf does), offsets (`+0x1a`) are dropped, and runs of unresolved
frames collapse to one `[unknown]`.
"""

from __future__ import annotations

import base64
import gzip
import re
from collections import Counter
from collections.abc import Iterable, Mapping

Folded = Mapping[str, int]
"""Folded stacks: 'comm;root;...;leaf' -> number of samples."""

_FRAME = re.compile(
    r"^\s+(?P<addr>[0-9a-fA-F]+)\s+(?P<sym>.*?)(?:\s+\((?P<dso>[^()]*(?:\([^()]*\))?[^()]*)\))?\s*$"
)
_OFFSET = re.compile(r"\+0x[0-9a-fA-F]+$")
_HEADER = re.compile(r"^(?P<comm>.+?)\s+(?P<pid>-?\d+)(?:/(?P<tid>-?\d+))?\s")

#: Leaf functions of an idle CPU: samples ending there are idle time, not work.
IDLE_LEAVES = re.compile(
    r"(^|_)(safe_halt|default_idle|poll_idle|mwait_idle\w*|intel_idle\w*|acpi_idle\w*|cpu_idle_poll|"
    r"native_safe_halt|pv_native_safe_halt|arch_cpu_idle|cpuidle_enter_state|do_idle)$"
)


def _clean_symbol(sym: str, dso: str | None) -> str:
    """The function name; for code without symbols the library instead ('[libcrypto.so.3]'), as
    stackcollapse-perf does, so a stripped library still shows up as one block."""
    sym = _OFFSET.sub("", sym.strip())
    if not sym or sym == "[unknown]":
        lib = (dso or "").strip().rsplit("/", 1)[-1]
        return f"[{lib}]" if lib and lib != "[unknown]" else "[unknown]"
    return sym.replace(";", ":").replace(" ", "_")


def _fold(comm: str, frames: list[str]) -> str:
    names: list[str] = [comm.replace(";", ":").replace(" ", "_") or "[unknown]"]
    for sym in reversed(frames):
        if sym == "[unknown]" and names[-1] == "[unknown]":
            continue
        names.append(sym)
    return ";".join(names)


def parse_perf_script(lines: Iterable[str], lab_pids: set[int] | None = None) -> Counter[str]:
    """Fold `perf script` output into stacks with sample counts. Samples without frames are kept (comm only).

    With `lab_pids`, samples of other processes get the root frame `[other]COMM` (see attribution.py).
    """
    from mptcpkit.lab.profiling.attribution import OTHER, lab_sample

    folded: Counter[str] = Counter()
    comm: str | None = None
    frames: list[str] = []

    def root(header: re.Match[str] | None, line: str) -> str:
        name = header.group("comm").strip() if header else line.split()[0]
        if lab_pids is None or header is None:
            return name
        return name if lab_sample(int(header.group("pid")), name, lab_pids) else OTHER + name

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if comm is not None:
                folded[_fold(comm, frames)] += 1
            comm, frames = None, []
            continue
        if line[0] in " \t":
            match = _FRAME.match(line)
            if comm is not None and match:
                frames.append(_clean_symbol(match.group("sym"), match.group("dso")))
            continue
        if comm is not None:  # a header right after another: the previous sample had no blank line
            folded[_fold(comm, frames)] += 1
        header = _HEADER.match(line)
        comm, frames = root(header, line), []
    if comm is not None:
        folded[_fold(comm, frames)] += 1
    return folded


def is_idle(stack: str) -> bool:
    """True when the sample is an idle CPU (its leaf is an idle loop function)."""
    return bool(IDLE_LEAVES.search(stack.rsplit(";", 1)[-1]))


def to_text(folded: Folded) -> str:
    """The classic folded format, one 'stack count' per line, sorted for stable output."""
    return "".join(f"{stack} {count}\n" for stack, count in sorted(folded.items()))


def from_text(text: str) -> Counter[str]:
    """Parse the folded format (as written by to_text, stackcollapse-perf.pl or inferno)."""
    folded: Counter[str] = Counter()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"line {number}: not 'stack count': {line[:80]!r}")
        folded[stack] += int(count)
    return folded


def encode(folded: Folded) -> str:
    """gzip + base64 of the folded text: compact, and a plain TEXT column in SQLite and PostgreSQL alike."""
    return base64.b64encode(gzip.compress(to_text(folded).encode(), compresslevel=9, mtime=0)).decode("ascii")


def decode(blob: str) -> Counter[str]:
    return from_text(gzip.decompress(base64.b64decode(blob)).decode())


def merge(profiles: Iterable[Folded]) -> Counter[str]:
    total: Counter[str] = Counter()
    for profile in profiles:
        total.update(profile)
    return total
