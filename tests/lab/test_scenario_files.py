"""Scenario and suite files (pure: no lab): the built-ins, mistakes with file:line, sweeps, suites, the registry
and the Python API. Runs without root."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.lab.scenarios import (
    FlowSpec,
    MetricKind,
    MetricSpec,
    ScenarioError,
    ScenarioSpec,
    TopologyRef,
    build,
    builtin_specs,
    default_suite,
    default_suite_spec,
    load_suite,
    parse_scenarios,
    register_metric,
    resolve,
)
from mptcpkit.lab.scenarios.matrix import case_suffix
from mptcpkit.lab.scenarios.registry import MetricContext, metric_kinds

MPTCPKIT = [sys.executable, "-m", "mptcpkit"]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "examples"

FIRST_WAVE = [
    "tcp-baseline",
    "mptcp-single",
    "simult-balanced",
    "simult-unbalanced-15-5",
    "simult-unbalanced-10-3",
    "simult-delay-1-25",
    "simult-delay-25-1",
    "aggregate-50-50",
    "backup",
    "failover",
    "add-addr",
    "fairness",
    "fairness-tcp",
]


def test_builtins_are_the_first_wave_suite() -> None:
    """The default suite runs from files and measures what the Python suite measured (same sizes, links)."""
    issue11 = ["cpu-bound-2", "connect-setup"]  # helper cost: the default suite's CPU/GB and setup probes
    assert [s.name for s in default_suite_spec().scenarios] == FIRST_WAVE + issue11
    assert set(FIRST_WAVE) <= set(builtin_specs())
    suite = {s.name: s for s in default_suite() if s.name not in issue11}
    assert all(s.origin.startswith("built-in: builtin/") for s in suite.values())
    # transfer sizes: int(rate * 0.9 * seconds / 8) rounded down to 64 KiB, as the first wave computed them
    assert suite["simult-balanced"].flows[0].bytes == 6684672
    assert suite["simult-unbalanced-10-3"].flows[0].bytes == 4325376
    assert suite["aggregate-50-50"].flows[0].bytes == 50593792
    assert suite["failover"].flows[0].bytes == 13434880
    backup = suite["backup"]
    assert backup.flows[0].duration == 6.0 and [a.at_s for a in backup.actions] == [2.0]
    assert backup.restore is not None
    topo = backup.topology()
    assert {ep.flags for ep in topo.host("client").mptcp.endpoints} == {frozenset({"subflow", "backup"})}
    assert topo.link("path1").a_to_b.rate_bps == 20_000_000 and topo.link("path2").b_to_a.delay_s == 0.005
    one = suite["tcp-baseline"].topology()
    assert [lk.name for lk in one.links] == ["path1"] and one.host("client").mptcp.endpoints == ()
    addr = suite["add-addr"].topology()
    assert addr.host("client").mptcp.endpoints == ()
    assert [str(e.address) for e in addr.host("server").mptcp.endpoints] == ["10.0.2.2"]
    fair = suite["fairness-tcp"]
    assert [f.proto for f in fair.flows] == ["mptcp", "tcp"]
    assert fair.topology().link("core").a_to_b.rate_bps == 20_000_000
    assert suite["fairness"].flows[0].parallel == 4


def test_scale_multiplies_sizes_durations_and_actions() -> None:
    spec = builtin_specs()["backup"]
    scn = build(spec, scale=2)
    assert scn.flows[0].duration == 12.0 and scn.actions[0].at_s == 4.0
    failover = build(builtin_specs()["failover"], scale=0.5)
    assert failover.flows[0].bytes == 13434880 // 2 // 65536 * 65536


BASE = 'topology = "two-paths"\n[[flows]]\nname = "f"\nduration = "3s"\n'
# (file text, words the message must contain, line it must name)
MISTAKES: list[tuple[str, str, int | None]] = [
    ('[[flows]]\nmode = "bulk-dowload"\nduration = "1s"\n', "did you mean 'bulk-download'", 2),
    ('topology = "two-path"\n', "did you mean 'two-paths'", 1),
    (BASE + '[links.path3]\nrate = "1mbit"\n', "no link 'path3'", 5),
    (BASE + '[hosts.clinet.mptcp]\nscheduler = "default"\n', "did you mean 'client'", 5),
    (BASE + '[links.path1]\nrat = "10mbit"\n', "did you mean 'rate'", 6),
    (BASE + '[links.path1]\nrate = "10 mbps/h"\n', "as a rate", 6),
    (BASE + '[links.path1]\ndelay = "10"\n', "as a duration", 6),
    (BASE + '[links.path1]\nloss = "150%"\n', "between 0% and 100%", 6),
    (BASE + '[links.path1]\njitter = "20ms"\ndelay = "5ms"\n', "jitter must not exceed delay", None),
    (BASE + '[hosts.client]\nsysctls = { "kernel.hostname" = "x" }\n', "net.", 6),
    (BASE + "[hosts.client.mptcp]\nlimits = { subflows = 9 }\n", "0..8", None),
    (BASE + '[hosts.client.mptcp]\nendpoints = [{ address = "10.9.9.9" }]\n', "not an address of host", None),
    (BASE + '[[actions]]\nat = "5s"\ndo = "link-down"\nlink = "path1"\n', "after the flows end", 6),
    (BASE + '[[actions]]\nat = "1s"\ndo = "link-down"\nlink = "path9"\n', "unknown link 'path9'", 8),
    (
        BASE + '[[actions]]\nat = "1s"\ndo = "set-backup"\nhost = "router"\naddress = "10.0.2.1"\n',
        "unknown host 'router'",
        8,
    ),
    (BASE + '[[actions]]\nat = "1s"\ndo = "link-dwn"\nlink = "path1"\n', "did you mean 'link-down'", 7),
    (
        BASE + '[[actions]]\nat = "1s"\ndo = "remove-endpoint"\nhost = "server"\naddress = "10.0.1.2"\n',
        "not an MPTCP endpoint",
        9,
    ),
    (BASE + '[[actions]]\ndo = "link-down"\nlink = "path1"\n', "needs a time 'at'", None),
    (BASE + '[[actions]]\nat = "1s"\ndo = "link-down"\n', "needs 'link'", None),
    (BASE + '[[actions]]\nat = "1s"\ndo = "link-down"\nlink = "path1"\nrate = "1mbit"\n', "set-link", None),
    (
        BASE + '[[actions]]\nat = "1s"\ndo = "close-subflow"\nflow = "g"\nlink = "path1"\n',
        "unknown flow 'g'",
        8,
    ),
    (BASE + '[[metrics]]\nkind = "goodput"\nexpect = "goodput_limt"\n', "did you mean 'goodput_limit'", 7),
    (BASE + '[[metrics]]\nkind = "goodputt"\n', "did you mean 'goodput'", 6),
    (BASE + '[[metrics]]\nkind = "goodput"\npass = ">= 0.9"\n', "compares with 'expect'", 7),
    (BASE + '[[metrics]]\nkind = "goodput"\nexpect = 10\npass = "=> 0.9"\n', "as a rule", 8),
    (BASE + '[[metrics]]\nkind = "goodput"\noptions = { skp = "1s" }\n', "did you mean 'skip'", 7),
    (BASE + '[[metrics]]\nkind = "link_share"\n', "needs option(s) link", None),
    (BASE + '[[metrics]]\nkind = "goodput"\nflow = "nope"\n', "unknown flow 'nope'", 7),
    (BASE + '[[metrics]]\nkind = "goodput"\n[[metrics]]\nkind = "goodput"\n', "used twice", None),
    (
        BASE + '[[metrics]]\nkind = "goodput"\n[[relations]]\ncheck = "goodput >= 0.95 * tcp_goodput"\n',
        "no metric 'tcp_goodput'",
        8,
    ),
    (BASE + '[[relations]]\ncheck = "a > b"\n', "expected 'METRIC >= FACTOR * METRIC'", 6),
    (BASE + "[matrix]\nsubflows = [1, 2]\n", "matrix key 'subflows' is not used", 6),
    (
        BASE + '[matrix]\nn = [1, 2]\n[hosts.client.mptcp]\nlimits = { subflows = "{m}" }\n',
        "'{m}' names no key",
        None,
    ),
    (BASE + "[matrix]\nn = []\n", "non-empty list", 6),
    (BASE + '[matrix]\nn = [1, 1]\n[[flows]]\nparallel = "{n}"\nduration="1s"\n', "listed twice", None),
    ('[[flows]]\nsize = "10MB"\nduration = "1s"\n', "either size or duration", None),
    ('[[flows]]\nmode = "bulk-upload"\n', "needs a size or a duration", None),
    ('[[flows]]\nsize = "10 parsecs"\n', "as a size", 2),
    ('[[flows]]\nengine = "iperf3"\nmode = "rr"\ncount = 5\n', "bulk transfers only", None),
    ('[[flows]]\nclient = "server"\nduration = "1s"\n', "different hosts", None),
    ('[[flows]]\nto = "10.0.1.1"\nduration = "1s"\n', "not an address of host 'server'", None),
    ('[[flows]]\nmode = "stream"\nduration = "1s"\n', "rate and a message size", None),
    ('[[flows]]\nparallel = 0\nduration = "1s"\n', "at least 1", 2),
    ('[[flows]]\nparallel = 100000\nduration = "1s"\n', "within 1..128", 2),
    ('interval = "1us"\n', "within 10ms..10s", 1),
    ('[[flows]]\nduration = "1s"\n[[flows]]\nduration = "1s"\nname = "flow0"\n', "used twice", None),
    ('name = "bad name!"\n', "scenario names", 1),
    ('timeout = "-1s"\n', "duration", 1),
    ("nonsense = 1\n", "unknown field 'nonsense'", 1),
    ("[[flows]\n", "not valid TOML", None),
    ('topology = "nothere.toml"\n', "no such topology file", 1),
    ("topology = 5\n", "built-in topology name", 1),
    (
        '[topology]\nhosts = { a = {} }\nlinks = [{ a = { host = "a" }, b = { host = "x" } }]\n',
        "unknown host 'x'",
        None,
    ),
    ('tags = "x"\nprofile = "yes"\n', "true or false", 2),
]


@pytest.mark.parametrize(("text", "words", "line"), MISTAKES, ids=[f"m{i}" for i in range(len(MISTAKES))])
def test_mistake_is_one_message_with_file_and_line(text: str, words: str, line: int | None) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenarios(text, source="bad.toml")
    message = str(info.value)
    assert words in message, message
    assert message.startswith("bad.toml"), message
    assert "\n" not in message
    if line is not None:
        assert message.startswith(f"bad.toml:{line}: "), message
    assert info.value.exit_code == 2


def test_at_least_twenty_kinds_of_mistake() -> None:
    assert len({words for _t, words, _l in MISTAKES}) >= 40


def test_matrix_cases_are_named_typed_and_filled() -> None:
    text = (
        BASE
        + '[matrix]\nsubflows = [1, 2]\nloss = ["0%", "1%"]\nrates = [["50mbit", "10mbit"]]\n'
        + '[hosts.client.mptcp]\nlimits = { subflows = "{subflows}" }\n'
        + '[links.path2]\nloss = "{loss}"\nrate = "{rates.1}"\n[links.path1]\nrate = "{rates.0}"\n'
        + 'description = "x"\n'
    )
    specs = parse_scenarios(text.replace('description = "x"\n', ""), source="unequal.toml")
    assert [s.name for s in specs] == [
        "unequal[subflows=1,loss=0%,rates=50mbit/10mbit]",
        "unequal[subflows=1,loss=1%,rates=50mbit/10mbit]",
        "unequal[subflows=2,loss=0%,rates=50mbit/10mbit]",
        "unequal[subflows=2,loss=1%,rates=50mbit/10mbit]",
    ]
    case = specs[3]
    assert case.sweep == "unequal" and dict(case.params) == {
        "subflows": 2,
        "loss": "1%",
        "rates": ["50mbit", "10mbit"],
    }
    (host,) = case.hosts
    assert host.subflows == 2
    links = {lk.name: lk for lk in case.links}
    assert links["path2"].a_to_b.loss == 0.01 and links["path2"].a_to_b.rate_bps == 10_000_000
    assert links["path1"].b_to_a.rate_bps == 50_000_000
    assert case_suffix({"a": 1.5, "b": True}) == "[a=1.5,b=true]"


def test_matrix_error_names_the_case() -> None:
    text = BASE + '[matrix]\nd = ["1ms", "oops"]\n[links.path1]\ndelay = "{d}"\n'
    with pytest.raises(ScenarioError, match=r"bad.toml:8: links.path1.delay: .*in case \[d=oops\]"):
        parse_scenarios(text, source="bad.toml")


def test_suites_names_globs_paths_and_dirs(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text('name = "one"\n[[flows]]\nduration = "1s"\n')
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "two.toml").write_text('name = "two"\n[[flows]]\nduration = "1s"\n')
    suite = tmp_path / "s.toml"
    suite.write_text('reps = 5\nscale = 0.5\nscenarios = ["simult-*", "one.toml", "more/*.toml", "backup"]\n')
    loaded = load_suite(suite)
    names = [s.name for s in loaded.scenarios]
    assert sorted(names[:5]) == sorted(n for n in FIRST_WAVE if n.startswith("simult-"))
    assert names[5:] == ["one", "two", "backup"] and loaded.reps == 5 and loaded.scale == 0.5
    assert loaded.scenarios[5].origin == str(tmp_path / "one.toml")
    by_dir = load_suite(tmp_path / "more")
    assert [s.name for s in by_dir.scenarios] == ["two"]
    suite.write_text('scenarios = ["simult-balanced", "bakup"]\n')
    with pytest.raises(
        ScenarioError, match=r"s.toml:1: scenarios\[1\]: unknown scenario 'bakup' \(did you mean 'backup'"
    ):
        load_suite(suite)
    suite.write_text('scenarios = ["default", "backup"]\n')
    with pytest.raises(ScenarioError, match="listed twice"):
        load_suite(suite)
    suite.write_text("scenarios = []\n")
    with pytest.raises(ScenarioError, match="lists its scenarios"):
        load_suite(suite)
    suite.write_text('reps = 0\nscenarios = ["backup"]\n')
    with pytest.raises(ScenarioError, match=r"s\.toml:1: reps: must be at least 1"):
        load_suite(suite)
    (tmp_path / "clash.toml").write_text('name = "backup"\n[[flows]]\nduration = "1s"\n')
    with pytest.raises(UsageError, match="two scenarios are called 'backup'"):
        resolve(["backup", str(tmp_path / "clash.toml")])


def test_sweep_name_selects_every_case(tmp_path: Path) -> None:
    specs = resolve([str(DOCS / "subflow-sweep.toml")])
    assert [s.name for s in specs] == ["subflows[subflows=0]", "subflows[subflows=1]", "subflows[subflows=2]"]
    topo = build(specs[2]).topology()
    assert topo.host("client").mptcp.subflows == 2


def test_registry_extends_metric_kinds_without_the_loader() -> None:
    def flows_count(ctx: MetricContext, options: Mapping[str, Any]) -> float | None:
        return float(len(ctx.spec.flows)) * options.get("factor", 1)

    kind = MetricKind("test_flow_count", "", "higher", flows_count, {"factor": int})
    register_metric(kind)
    register_metric(kind)  # the same object again: fine
    with pytest.raises(ValueError, match="already registered"):
        register_metric(dataclasses.replace(kind))
    (spec,) = parse_scenarios(
        BASE + '[[metrics]]\nkind = "test_flow_count"\noptions = { factor = 3 }\nexpect = 3\npass = ">="\n',
        "x.toml",
    )
    assert spec.metrics[0].options == {"factor": 3}
    assert "test_flow_count" in metric_kinds()


def test_python_api_gets_the_same_checks() -> None:
    spec = ScenarioSpec(
        name="api",
        topology=TopologyRef(builtin="two-paths"),
        flows=(FlowSpec(name="a", duration_s=2.0),),
        metrics=(MetricSpec(name="goodput", kind="goodput", flow="b"),),
    )
    with pytest.raises(UsageError, match=r"scenario api: metrics\[0\]\.flow: unknown flow 'b'"):
        build(spec)
    ok = dataclasses.replace(
        spec, metrics=(MetricSpec(name="goodput", kind="goodput", expect="goodput_limit"),)
    )
    scenario = build(ok, scale=2)
    assert scenario.flows[0].duration == 4.0 and scenario.origin == "python"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MPTCPKIT, "lab", *args], capture_output=True, text=True, timeout=60)


def test_cli_check_show_list(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[flows]]\nduration = "1s"\n[[actions]]\nat = "0.5s"\ndo = "link-down"\nlink = "pth1"\n')
    proc = run_cli("scenario", "check", str(bad), *(str(p) for p in sorted(DOCS.glob("*.toml"))))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"{bad}:6: actions[0].link: unknown link 'pth1' (did you mean 'path1'?)" in proc.stderr
    assert proc.stdout.count("ok ") == 3
    proc = run_cli("scenario", "show", "--json", "backup")
    assert proc.returncode == 0, proc.stderr
    (shown,) = json.loads(proc.stdout)
    assert shown["topology"]["resolved"]["links"][0]["a_to_b"]["rate_bps"] == 20_000_000
    assert shown["actions"][0]["kind"] == "link-down" and shown["origin"] == "built-in: builtin/backup.toml"
    proc = run_cli("run", "--list")
    assert proc.returncode == 0 and "builtin/fairness-tcp.toml" in proc.stdout
    proc = run_cli("run", "--list", "-s", str(DOCS / "subflow-sweep.toml"))
    assert "subflows[subflows=1]" in proc.stdout and "subflow-sweep.toml" in proc.stdout
    proc = run_cli("run", "-s", str(bad))
    assert proc.returncode == 2 and "unknown link 'pth1'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("run", "-s", "fairnes")
    assert proc.returncode == 2 and "did you mean 'fairness'" in proc.stderr
    suite_dir = tmp_path / "suite"
    suite_dir.mkdir()
    (suite_dir / "a.toml").write_text('name = "mine"\n[[flows]]\nduration = "1s"\n')
    proc = run_cli("run", "--list", "--suite", str(suite_dir), "-s", "simult-*")
    assert proc.returncode == 0, proc.stderr
    assert "mine" in proc.stdout and "simult-delay-25-1" in proc.stdout and "backup" not in proc.stdout
    proc = run_cli("scenario", "check", str(tmp_path / "missing.toml"))
    assert proc.returncode == 2 and "no such scenario file" in proc.stderr


def test_builtin_suites_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--suite full` is the shipped full suite (README), unless a file or directory of that name is here."""
    proc = run_cli("run", "--list", "--suite", "full")
    assert proc.returncode == 0, proc.stderr
    assert "cpu-bound[" in proc.stdout and "latency-rr" in proc.stdout
    assert "best-path-lossy" in proc.stdout and "built-in suites (--suite NAME): default, full" in proc.stdout
    proc = run_cli("run", "--list", "--suite", "ful")
    assert proc.returncode == 2 and "did you mean 'full'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("run", "--list", "--suite", "./full")  # path-like: a file, never the built-in name
    assert proc.returncode == 2 and "no such suite file" in proc.stderr
    mine = tmp_path / "full"
    mine.mkdir()
    (mine / "a.toml").write_text('name = "mine"\n[[flows]]\nduration = "1s"\n')
    monkeypatch.chdir(tmp_path)
    proc = run_cli("run", "--list", "--suite", "full")
    assert proc.returncode == 0 and "mine" in proc.stdout and "best-path" not in proc.stdout


def _sweep_run(store: Any) -> str:
    from mptcpkit.lab.store import Result

    env = {
        "hostname": "h",
        "kernel_release": "k",
        "emulation": "userspace",
        "backend": "netns",
        "cpu_model": "c",
    }
    run = store.create_run("sweep", env, {"scenarios": [], "reps": 3})
    cases = ["pm[pm=userspace,n=1]", "pm[pm=kernel,n=1]", "pm[pm=kernel,n=2]"]
    store.finish_run(run.run_id, "complete")
    for i, case in enumerate(cases):
        pm, n = case[3:-1].split(",")
        params = {"pm": pm.split("=")[1], "n": int(n.split("=")[1])}
        store.add_result(
            Result(
                run.run_id,
                case,
                "goodput",
                "Mbit/s",
                "higher",
                [10.0 + i, 11.0 + i, 12.0 + i],
                40.0,
                None,
                True,
                "informational",
                {},
                sweep="pm",
                params=params,
            )
        )
    return str(run.run_id)


def test_store_v3_keeps_sweep_parameters(tmp_path: Path) -> None:
    from mptcpkit.lab.store import LATEST_VERSION, open_store
    from mptcpkit.lab.store.db import connect
    from mptcpkit.lab.store.schema import migrate

    old = connect(str(tmp_path / "old.db"))
    migrate(old, target=2)
    old.execute(
        "INSERT INTO runs (run_id, label, started_at, status, environment, config) VALUES (?, ?, ?, ?, ?, ?)",
        ("r1", None, "2026-11-29T00:00:00+00:00", "complete", "{}", "{}"),
    )
    old.execute(
        "INSERT INTO results (run_id, scenario, metric, unit, direction, samples, expected, score, passed, rule, "
        "details) VALUES ('r1', 'backup', 'stall_time', 's', 'lower', '[0.2]', NULL, NULL, 1, '', '{}')"
    )
    old.close()
    assert LATEST_VERSION >= 3
    with open_store(str(tmp_path / "old.db")) as store:  # migrated v2 -> v3: old results have no sweep
        (result,) = store.results("r1")
        assert result.sweep is None and result.params is None
        run_id = _sweep_run(store)
        stored = {r.scenario: r for r in store.results(run_id)}
        assert stored["pm[pm=kernel,n=2]"].params == {"pm": "kernel", "n": 2}
        assert stored["pm[pm=kernel,n=2]"].sweep == "pm"


def test_sweep_figures_group_order_and_draw(tmp_path: Path) -> None:
    from mptcpkit.lab.report import build_html
    from mptcpkit.lab.report.sweeps import sweep_figure, sweep_png, sweeps_of
    from mptcpkit.lab.store import open_store

    with open_store(str(tmp_path / "s.db")) as store:
        run_id = _sweep_run(store)
        (sweep,) = sweeps_of(store.results(run_id), order=["pm[pm=kernel,n=1]", "pm[pm=userspace,n=1]"])
        html = build_html(store, run_id)
    assert sweep.x_param == "pm" and sweep.params == ["pm", "n"] and not sweep.ci  # 3 samples: min..max bands
    (metric,) = sweep.metrics
    assert [p.x for p in metric.lines["n=1"]] == ["kernel", "userspace"]  # the run's (matrix) order
    assert [p.x for p in metric.lines["n=2"]] == ["kernel"]
    point = metric.lines["n=1"][0]
    assert (point.low, point.median, point.high, point.expected) == (11.0, 12.0, 13.0, 40.0)
    figure = json.loads(sweep_figure(sweep))
    assert {t["name"] for t in figure["data"]} >= {"n=1", "n=2", "n=1 band", "expected"}
    assert 'class="card sweep"' in html and "Sweep pm" in html
    assert sweep_png(sweep, tmp_path / "s.png") and (tmp_path / "s.png").stat().st_size > 3000
