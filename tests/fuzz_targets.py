"""Fuzz targets, shared by the hypothesis tests (few cases, in CI) and `benchmarks/fuzz.py` (>= 1,000 per target).

A target is a hypothesis strategy of inputs plus a session: a context manager that sets up what the parser needs
(a temporary directory, a running dashboard) and yields a check. The check feeds one input to the parser and
returns "accepted" or "refused"; anything else the parser does (another exception: a traceback for the user; a
500; a file left behind; a database written) fails the check with AssertionError. Sessions verify "no leftovers"
when they end.

Other parsers join with `register(Target(...))` in this module (or a module imported from `load_all`): scenario
files, mptcpd.conf, netlink decoders, `check serve` requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

Check = Callable[[Any], str]


@dataclass(frozen=True)
class Target:
    """One parser under fuzzing."""

    name: str
    strategy: Callable[[], st.SearchStrategy[Any]]
    session: Callable[[], contextlib.AbstractContextManager[Check]]
    ci_cases: int = 60
    shrink: bool = True
    bench_cases: int | None = None
    """Cap for `benchmarks/fuzz.py` (a target that builds real labs takes ~1 s a case)."""
    """False for slow targets (real labs): report the failing case as found instead of minimising it."""


TARGETS: dict[str, Target] = {}


def register(target: Target) -> Target:
    TARGETS[target.name] = target
    return target


def load_all() -> dict[str, Target]:
    """Every registered target (other helpers' modules are imported here when they exist)."""
    for module in ("fuzz_targets_build", "fuzz_targets_scenarios", "fuzz_targets_pm", "fuzz_targets_tools"):
        with contextlib.suppress(ImportError):
            __import__(module)
    return TARGETS


# -- topology files ---------------------------------------------------------------------------------------------

TOPOLOGY_KEYS = {
    "top": ["name", "description", "hosts", "links"],
    "host": ["mptcp", "sysctls", "routes", "forwarding", "policy_routing", "ssh"],
    "mptcp": ["enabled", "path_manager", "scheduler", "limits", "endpoints"],
    "limits": ["subflows", "add_addr_accepted"],
    "endpoint": ["address", "flags", "dev", "id", "port"],
    "route": ["to", "via", "dev", "metric"],
    "link": [
        "name",
        "a",
        "b",
        "mtu",
        "a_to_b",
        "b_to_a",
        "rate",
        "delay",
        "jitter",
        "loss",
        "queue",
        "reorder",
    ],
    "end": ["host", "ifname", "addresses"],
}
INTERESTING_TEXT = [
    "client", "server", "eth0", "eth1", "lo", "a:b", "..", ".", "/tmp/x", "../../etc/passwd", "net.ipv4.tcp_ecn",
    "kernel.hostname", "net..x", "sérver", "10.0.1.1/24", "10.0.1.2/24", "10.0.0.0/8", "fd00::1/64", "10.0.1.1",
    "10.0.1.300/24", "default", "10mbit", "1e99gbit", "inf", "nan", "-1ms", "5ms", "1%", "150%", "subflow",
    "signal", "fullmesh", "backup", "userspace", "kernel", "-oProxyCommand=id", "x" * 300, "\x00", "\n", "%d",
]  # fmt: skip
INTERESTING_NUMBERS: list[Any] = [
    0, 1, -1, 8, 9, 255, 256, 1279, 1280, 65535, 65536, 2**31, 2**32, 2**38, 2**63 - 1, 10**30,
    0.5, 1e308, math.inf, -math.inf, math.nan, True, False,
]  # fmt: skip


def _scalar() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.sampled_from(INTERESTING_TEXT),
        st.sampled_from(INTERESTING_NUMBERS),
        st.text(max_size=20),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
    )


def _value(keys: str | None = None) -> st.SearchStrategy[Any]:
    """A value for a field: usually the right shape for the schema, sometimes anything."""
    anything = st.recursive(
        _scalar(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    )
    if keys is None:
        return anything
    return st.one_of(_table(keys), anything) if keys else anything


def _table(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = TOPOLOGY_KEYS[kind]
    nested = {
        "mptcp": "mptcp", "limits": "limits", "a": "end", "b": "end", "a_to_b": "link", "b_to_a": "link",
    }  # fmt: skip
    lists = {"endpoints": "endpoint", "routes": "route"}

    def field_value(name: str) -> st.SearchStrategy[Any]:
        if name in nested:
            return st.deferred(lambda: _table(nested[name])) | _scalar()
        if name in lists:
            return st.lists(st.deferred(lambda: _table(lists[name])), max_size=3)
        if name == "addresses":
            return st.lists(st.sampled_from(INTERESTING_TEXT) | _scalar(), max_size=3)
        if name == "sysctls":
            return st.dictionaries(
                st.sampled_from(INTERESTING_TEXT) | st.text(max_size=12), _scalar(), max_size=3
            )
        return st.sampled_from(INTERESTING_TEXT) | _scalar()

    keys = st.lists(st.sampled_from(fields) | st.text(max_size=6), max_size=len(fields), unique=True)
    return keys.flatmap(lambda ks: st.fixed_dictionaries({k: field_value(k) for k in ks}))


def topology_documents() -> st.SearchStrategy[str]:
    """Random topology-like TOML documents (valid TOML most of the time, random content)."""
    hosts = st.dictionaries(
        st.sampled_from(["client", "server", "router", "sérver", "a" * 30, "x"]), _table("host")
    )
    links = st.lists(_table("link"), max_size=4)
    top = st.fixed_dictionaries(
        {"hosts": hosts, "links": links},
        optional={"name": _scalar(), "description": _scalar()},
    )
    return top.map(to_toml)


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for generated documents (tables become inline tables under [hosts.X] / [[links]])."""
    out = []
    for key, value in data.items():
        if key not in ("hosts", "links"):
            out.append(f"{_key(key)} = {_inline(value)}")
    for name, host in (data.get("hosts") or {}).items():
        out.append(f"[hosts.{_key(name)}]")
        if isinstance(host, dict):
            out += [f"{_key(k)} = {_inline(v)}" for k, v in host.items()]
    for link in data.get("links") or []:
        out.append("[[links]]")
        if isinstance(link, dict):
            out += [f"{_key(k)} = {_inline(v)}" for k, v in link.items()]
    return "\n".join(out) + "\n"


def _key(key: Any) -> str:
    return json.dumps(str(key))


def _inline(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_inline(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


SEED_TOPOLOGY = """\
name = "t"
description = \"\"\"two
paths\"\"\"

[hosts.client]
sysctls = { "net.ipv4.tcp_ecn" = 1 }
routes = [{ to = "10.0.9.0/24", via = "10.0.1.2", metric = 10 }]

[hosts.client.mptcp]
scheduler = "default"
limits = { subflows = 2, add_addr_accepted = 2 }
endpoints = [
  { address = "10.0.2.1", flags = ["subflow"], dev = "eth1", id = 3 },
  { address = "fd00:2::1", flags = ["signal"], port = 8080 },
]

[hosts.server]

[[links]]
name = "p1"
a = { host = "client", ifname = "eth0", addresses = ["10.0.1.1/24"] }
b = { host = "server", ifname = "eth0", addresses = ["10.0.1.2/24"] }
rate = "10mbit"
delay = "5ms"
jitter = "1ms"

[[links]]
name = "p2"
a = { host = "client", ifname = "eth1", addresses = ["10.0.2.1/24", "fd00:2::1/64"] }
b = { host = "server", ifname = "eth1", addresses = ["10.0.2.2/24", "fd00:2::2/64"] }
b_to_a = { rate = "5mbit", loss = "1%", queue = 50 }
"""
MUTATION_TOKENS = [
    "[", "]", "[[", "{", "}", '"', '"""', "'", "=", ",", ".", "\n", "#", " " * 2000, "[" + " " * 3000, "\\",
    "inf", "nan", "-", "1e999", "99999999999999999999999", "true", "[5]", "[true]", "é", "\x00", "\udcff",
    '"/tmp/x"', '"kernel.hostname"', '"lo"', '"a:b"', '".."', "[hosts.x]", "[[links]]", "70000",
]  # fmt: skip


@st.composite
def mutated_topologies(draw: st.DrawFn) -> bytes:
    """The seed file with a few random edits: deletions, insertions of tricky tokens, duplicated lines, bytes."""
    text = SEED_TOPOLOGY
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        if op == "insert":
            text = (
                text[:position]
                + draw(st.sampled_from(MUTATION_TOKENS) | st.text(max_size=5))
                + text[position:]
            )
        elif op == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 40)) :]
        elif op == "replace":
            end = position + draw(st.integers(1, 10))
            text = text[:position] + draw(st.sampled_from(MUTATION_TOKENS)) + text[end:]
        else:
            lines = text.splitlines(keepends=True)
            index = draw(st.integers(0, max(0, len(lines) - 1)))
            text = "".join(lines[: index + 1] + lines[index:])
    data = text.encode("utf-8", "surrogateescape")
    if draw(st.booleans()) and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
    return data


@contextlib.contextmanager
def topology_session() -> Iterator[Check]:
    """Checks load_topology on files in a private directory; at the end only those files may be there.

    (Loading never creates namespaces: nothing in topology_file imports a backend. Counting namespaces here would
    be wrong anyway on a machine where other people's labs come and go.)
    """
    from mptcpkit.errors import UsageError
    from mptcpkit.lab.topology_file import load_topology

    folder = Path(tempfile.mkdtemp(prefix="fuzz-topology-"))
    try:

        def check(value: str | bytes) -> str:
            path = folder / "t.toml"
            path.write_bytes(value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value)
            started = time.perf_counter()
            try:
                load_topology(path)
                outcome = "accepted"
            except UsageError as exc:
                assert "\n" not in exc.message, f"multi-line message: {exc.message!r}"
                assert "Traceback" not in str(exc)
                outcome = "refused"
            elapsed = time.perf_counter() - started
            assert elapsed < 5.0, f"took {elapsed:.2f} s for {len(value)} bytes"  # linear: ms; 5 s: a blow-up
            return outcome

        yield check
        assert sorted(p.name for p in folder.iterdir()) in ([], ["t.toml"]), list(folder.iterdir())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


register(Target("topology-random", topology_documents, topology_session))
register(Target("topology-mutated", mutated_topologies, topology_session))


# -- dashboard HTTP ---------------------------------------------------------------------------------------------

ROUTES = ["/", "/runs/", "/compare", "/history", "/regressions", "/api/runs", "/api/runs/", "/api/compare",
          "/api/history", "/api/regressions", "/api/regressions/latest", "/assets/plotly.min.js", "/static/"]  # fmt: skip
PARAMS = ["base", "new", "scenario", "metric", "env", "limit", "baseline", "ref"]
PARAM_VALUES = ["latest", "k1", "k2", "k12", "0", "-1", "all", "99999999999999999999", "nope", "simult-balanced",
                "goodput", "%00", "../../etc/passwd", "'", '"', "<script>", "é", "\x00", "a" * 5000]  # fmt: skip


@st.composite
def http_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request: method, path (a route plus random text), query parameters, headers; or raw bytes."""
    if draw(st.integers(0, 9)) == 0:
        raw = draw(
            st.sampled_from([b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01", b"GET /" + b"a" * 9000, b"\r\n"])
        )
        return {"raw": raw + draw(st.binary(max_size=200))}
    suffix = st.sampled_from(["", "", "", "latest", "k1", "k6/results", "..%2f..%2fetc", "%ff", "a" * 3000])
    path = draw(st.sampled_from(ROUTES)) + draw(suffix | st.text(max_size=10))
    params = draw(
        st.dictionaries(
            st.sampled_from(PARAMS) | st.text(max_size=5), st.sampled_from(PARAM_VALUES) | st.text(max_size=8)
        )
    )
    method = draw(st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    headers = draw(
        st.dictionaries(
            st.sampled_from(["if-none-match", "accept", "range", "x-forwarded-for", "cookie"]),
            st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
            max_size=2,
        )
    )
    return {"method": method, "path": path, "params": params, "headers": headers}


def _db_fingerprint(path: Path) -> str:
    """The database's rows as a hash (the file itself may be checkpointed by SQLite without any write)."""
    from mptcpkit.lab.store import open_store

    with open_store(str(path), create=False) as store:
        runs = store.list_runs(limit=None)
        text = "|".join(f"{r.run_id}:{r.status}:{len(store.results(r.run_id))}" for r in runs)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def dashboard_session() -> Iterator[Check]:
    """A real uvicorn dashboard over a filled SQLite database; the database must be unchanged at the end."""
    import httpx
    import uvicorn

    from mptcpkit.lab.report import make_app
    from mptcpkit.lab.report.web import bind
    from mptcpkit.lab.store import open_store

    folder = Path(tempfile.mkdtemp(prefix="fuzz-dashboard-"))
    db = folder / "results.db"
    try:
        with open_store(str(db)) as store:
            fill_store_small(store)
        before = _db_fingerprint(db)
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(make_app(str(db)), log_level="critical", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "dashboard did not start"
            time.sleep(0.02)
        port = sock.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        try:
            with httpx.Client(base_url=base, timeout=30) as http:

                def check(request: dict[str, Any]) -> str:
                    if "raw" in request:
                        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
                            raw.sendall(request["raw"])
                            raw.shutdown(socket.SHUT_WR)
                            with contextlib.suppress(TimeoutError, ConnectionResetError):
                                reply = raw.recv(65536)
                                assert b" 500 " not in reply.split(b"\r\n", 1)[0], reply[:200]
                        assert http.get("/api/runs").status_code == 200, "server stopped answering"
                        return "refused"
                    try:
                        response = http.request(
                            request["method"],
                            request["path"],
                            params=request["params"],
                            headers=request["headers"],
                        )
                    except (httpx.InvalidURL, httpx.LocalProtocolError):
                        return "refused"  # the client would not send it
                    assert response.status_code < 500, (response.status_code, response.text[:300])
                    assert "Traceback" not in response.text
                    assert str(folder) not in response.text, "absolute database path in a page"
                    return "accepted" if response.status_code < 400 else "refused"

                yield check
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()
        assert _db_fingerprint(db) == before, "the dashboard changed the database"
        assert {p.name for p in folder.iterdir()} <= {"results.db", "results.db-wal", "results.db-shm"}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fill_store_small(store: Any) -> None:
    """Six runs of two metrics, the last three 10 % slower (enough for every page to have content)."""
    from mptcpkit.lab.store import Result

    for i in range(6):
        run = store.create_run(f"k{i + 1}", {"hostname": "fuzz", "kernel": "6.18"}, {"reps": 5})
        level = 18.8 if i < 3 else 16.9
        for scenario in ("simult-balanced", "tcp-baseline"):
            samples = [level * (1 + j) for j in (0.0, 0.004, -0.004, 0.002, -0.002)]
            store.add_result(
                Result(
                    run.run_id, scenario, "goodput", "Mbit/s", "higher", samples, expected=18.8, passed=i != 5
                )
            )
        store.finish_run(run.run_id, "complete")


register(Target("dashboard-http", http_requests, dashboard_session, ci_cases=40))


def environment_summary() -> dict[str, Any]:
    return {"cpus": os.cpu_count()}


def run_target(target: Target, cases: int, *, seed: int | None = None) -> dict[str, Any]:
    """Run `cases` hypothesis examples of `target`; returns counts. A failing case raises (hypothesis shrinks it)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    counts = {"cases": 0, "accepted": 0, "refused": 0}
    slowest = 0.0
    started = time.perf_counter()
    with target.session() as check:

        @settings(
            max_examples=cases,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            print_blob=True,
            phases=list(Phase) if target.shrink else [Phase.explicit, Phase.reuse, Phase.generate],
        )
        @given(target.strategy())
        def one(value: Any) -> None:
            nonlocal slowest
            t0 = time.perf_counter()
            outcome = check(value)
            slowest = max(slowest, time.perf_counter() - t0)
            counts["cases"] += 1
            counts[outcome] += 1

        if seed is not None:
            one = fixed_seed(seed)(one)
        one()
    return counts | {"seconds": round(time.perf_counter() - started, 2), "slowest_case_s": round(slowest, 4)}
