"""Fuzzing scenario and suite files: whatever the text, the loaders answer with specs or one ScenarioError
(a UsageError, exit 2), never a traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mptcpkit.errors import UsageError
from mptcpkit.lab.scenarios import parse_scenarios
from mptcpkit.lab.scenarios.suites import parse_suite

KEYS = [
    "name",
    "description",
    "tags",
    "topology",
    "interval",
    "timeout",
    "restore",
    "profile",
    "links",
    "hosts",
    "flows",
    "actions",
    "metrics",
    "relations",
    "matrix",
    "path1",
    "path2",
    "path3",
    "client",
    "server",
    "router",
    "rate",
    "delay",
    "jitter",
    "loss",
    "queue",
    "reorder",
    "mtu",
    "a_to_b",
    "b_to_a",
    "sysctls",
    "mptcp",
    "scheduler",
    "path_manager",
    "limits",
    "subflows",
    "add_addr_accepted",
    "endpoints",
    "address",
    "flags",
    "dev",
    "id",
    "port",
    "proto",
    "server_proto",
    "mode",
    "size",
    "duration",
    "parallel",
    "start",
    "to",
    "local",
    "engine",
    "rr_size",
    "count",
    "message",
    "at",
    "do",
    "link",
    "direction",
    "host",
    "flow",
    "key",
    "value",
    "kind",
    "options",
    "expect",
    "expect_options",
    "pass",
    "check",
    "skip",
    "steady",
    "action",
    "threshold",
    "settle",
    "field",
    "links",
    "slack",
    "n",
    "scenarios",
    "reps",
    "scale",
    "ratee",
]
WORDS = [
    "two-paths",
    "three-paths",
    "routed",
    "two-path",
    "x.toml",
    "/etc/passwd",
    "10mbit",
    "1gbit",
    "0mbit",
    "-5mbit",
    "10ms",
    "0ms",
    "-1s",
    "1e9s",
    "5%",
    "150%",
    "1%",
    "10MB",
    "64KiB",
    "0B",
    "mptcp",
    "tcp",
    "udp",
    "bulk-download",
    "bulk-upload",
    "bulk-both",
    "rr",
    "connect",
    "stream",
    "mptcpkit",
    "iperf3",
    "link-down",
    "link-up",
    "set-link",
    "add-endpoint",
    "remove-endpoint",
    "set-backup",
    "clear-backup",
    "close-subflow",
    "set-sysctl",
    "goodput",
    "transfer_time",
    "subflows",
    "jain_index",
    "share",
    "link_share",
    "stall_time",
    "goodput_limit",
    "simult_flows",
    "time_at_limit",
    ">= 0.9",
    "<=",
    "=>",
    "a >= 0.95 * b",
    "goodput >= 1 * goodput",
    "10.0.1.1",
    "10.0.1.2",
    "10.0.2.1",
    "10.0.2.2",
    "fd00:1::1",
    "::",
    "eth0",
    "eth1",
    "path1",
    "path2",
    "client",
    "server",
    "router",
    "flow0",
    "{n}",
    "{n.0}",
    "{m}",
    "x{n}y",
    "net.mptcp.scheduler",
    "kernel.hostname",
    "default",
    "kernel",
    "userspace",
    "signal",
    "subflow",
    "backup",
    "fullmesh",
    "both",
    "a_to_b",
    "simult-*",
    "backup",
    "default",
    "",
    " ",
    "\u00e9",
    "[x]",
]

scalars = st.one_of(
    st.sampled_from(WORDS),
    st.integers(min_value=-3, max_value=10_000_000_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    """Top-level tables as [headers] and lists of tables as [[arrays]], the rest as key = value."""
    lines = []
    tables = []
    for key, value in doc.items():
        if isinstance(value, dict):
            tables.append(
                f"[{json.dumps(key)}]\n"
                + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in value.items())
            )
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tables.append(
                    f"[[{json.dumps(key)}]]\n"
                    + "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in item.items())
                )
        else:
            lines.append(f"{json.dumps(key)} = {toml_value(value)}\n")
    return "".join(lines) + "\n".join(tables)


def only_usage_errors(text: str, suite: bool = False) -> None:
    try:
        if suite:
            parse_suite(text, source="fuzz.toml", base_dir=None)
        else:
            parse_scenarios(text, source="fuzz.toml")
    except UsageError as exc:
        message = str(exc)
        assert message and message.startswith("fuzz.toml"), message


FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(documents)
def test_structured_scenarios_never_traceback(doc: dict[str, Any]) -> None:
    only_usage_errors(toml_document(doc))


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "flows": st.lists(
                st.dictionaries(st.sampled_from(KEYS), scalars, max_size=6), min_size=1, max_size=3
            )
        },
        optional={
            "links": st.dictionaries(
                st.sampled_from(["path1", "path2", "path3"]),
                st.dictionaries(st.sampled_from(KEYS), scalars, max_size=4),
                max_size=2,
            ),
            "actions": st.lists(st.dictionaries(st.sampled_from(KEYS), scalars, max_size=6), max_size=3),
            "metrics": st.lists(st.dictionaries(st.sampled_from(KEYS), values, max_size=6), max_size=3),
            "relations": st.lists(
                st.dictionaries(st.sampled_from(["check", "name"]), scalars, max_size=2), max_size=2
            ),
            "matrix": st.dictionaries(
                st.sampled_from(["n", "m", "x y"]), st.lists(scalars, max_size=3), max_size=2
            ),
        },
    )
)
def test_near_valid_scenarios_never_traceback(doc: dict[str, Any]) -> None:
    only_usage_errors(toml_document(doc))


@FUZZ
@given(st.text(max_size=300))
def test_raw_text_never_tracebacks(text: str) -> None:
    only_usage_errors(text)


@settings(max_examples=200, deadline=None)
@given(documents)
def test_suites_never_traceback(doc: dict[str, Any]) -> None:
    only_usage_errors(toml_document(doc), suite=True)


SEEDS = sorted(
    p.read_text()
    for folder in (
        Path(__file__).resolve().parents[2] / "src" / "mptcpkit" / "lab" / "scenarios" / "builtin",
        Path(__file__).resolve().parents[2] / "docs" / "examples",
    )
    for p in folder.glob("*.toml")
)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A real scenario file with a few lines deleted, duplicated, or given another value."""
    lines = draw(st.sampled_from(SEEDS)).splitlines()
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not lines:
            break
        i = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "value", "key"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif "=" in lines[i] and not lines[i].lstrip().startswith("["):
            key, _, _old = lines[i].partition("=")
            if op == "value":
                lines[i] = f"{key}= {toml_value(draw(values))}"
            else:
                lines[i] = f"{json.dumps(draw(st.sampled_from(KEYS)))} = {_old.strip()}"
    return "\n".join(lines) + "\n"


@FUZZ
@given(mutated())
def test_mutated_real_files_never_traceback(text: str) -> None:
    only_usage_errors(text)
