"""lab/profiling's pure parts: folding captured `perf script` output, encoding, the differential analysis with
its confidence intervals, the flame-graph tree, profiled-sample marks, options, and the profiles table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from mptcpkit.errors import UsageError
from mptcpkit.lab.profiling import folded
from mptcpkit.lab.profiling.cli import run_options
from mptcpkit.lab.profiling.diff import differential, flame_tree, is_mptcp, reduce_rep
from mptcpkit.lab.profiling.flamegraph import section_html
from mptcpkit.lab.profiling.marks import figure_samples
from mptcpkit.lab.profiling.perf import record_argv, script_argv
from mptcpkit.lab.profiling.storage import Profile, load_profiles, profiled_scenarios, save_profile
from mptcpkit.lab.store import open_store

FIXTURE = Path(__file__).parent / "fixtures" / "perf_script_mptcp_csum.txt"


def test_fold_captured_perf_script() -> None:
    stacks = folded.parse_perf_script(FIXTURE.read_text().splitlines())
    assert sum(stacks.values()) == FIXTURE.read_text().count("cpu-clock:")  # one stack per sample
    # Root first: command, user frame, syscall entry ... leaf; offsets gone.
    csum = [s for s in stacks if s.endswith(";csum_partial")]
    assert csum and all(s.startswith("python;") for s in csum)
    assert any(";tcp_v4_rcv;" in s and ";subflow_data_ready;" in s for s in csum)
    # A stripped library is named by its file, not lost as [unknown].
    assert stacks["python;[libcrypto.so.3]"] == 3
    assert not any("+0x" in s for s in stacks)
    idle = [s for s in stacks if folded.is_idle(s)]
    assert len(idle) == 1 and idle[0].startswith("swapper;") and stacks[idle[0]] == 3


def test_fold_edge_cases() -> None:
    text = [
        "kworker/0:1H-kb   123/123  [000]  1.0: cpu-clock: ",
        "\tffffffff81000000 foo+0x10 ([kernel.kallsyms])",
        "\t7f00 [unknown] ([unknown])",
        "\t7f01 [unknown] ([unknown])",
        "my comm 7 1.1: cpu-clock: ",  # no frames, no blank line before the next header
        "x 8 1.2: cpu-clock: ",
        "\tffff bar;baz (/lib/a b.so)",
    ]
    stacks = folded.parse_perf_script(text)
    assert stacks == Counter({"kworker/0:1H-kb;[unknown];foo": 1, "my_comm": 1, "x;bar:baz": 1})


def test_encode_roundtrip_and_text_format() -> None:
    stacks = folded.parse_perf_script(FIXTURE.read_text().splitlines())
    blob = folded.encode(stacks)
    assert folded.decode(blob) == stacks
    assert len(blob) < len(folded.to_text(stacks))  # compressed
    assert folded.from_text("a;b 3\n\na;c 1\n") == Counter({"a;b": 3, "a;c": 1})
    with pytest.raises(ValueError, match="line 1"):
        folded.from_text("no count here\n")


def _rep(csum: int, other: int = 900, idle: int = 50) -> dict[str, int]:
    return {
        "iperf3;entry;tcp_v4_rcv;subflow_data_ready;mptcp_subflow_data_available;skb_checksum;csum_partial": csum,
        "iperf3;entry;mptcp_sendmsg;_copy_from_iter": other,
        "iperf3;entry;mptcp_recvmsg;_copy_to_iter": 100,
        "swapper;do_idle;default_idle;pv_native_safe_halt": idle,
    }


def test_differential_finds_the_rise_with_confidence() -> None:
    base = [_rep(0, 900 + d) for d in (0, 20, -15)]
    new = [_rep(c, 900) for c in (110, 95, 120)]
    diff = differential("cpu", base, new)
    top = diff.self_changes[0]
    assert top.name == "csum_partial" and top.confident and top.method == "bootstrap"
    assert top.delta == pytest.approx(325 / (3 * 1000 + 325), abs=1e-9)
    assert top.ci_low > 0.05
    total = {c.name: c for c in diff.total_changes}
    assert total["mptcp_subflow_data_available"].delta > 0.05 and total["mptcp_subflow_data_available"].mptcp
    assert diff.path_changes[0].name.endswith("skb_checksum;csum_partial")
    assert diff.base_samples == 3000 + 5  # idle left out
    # With two repetitions a side the interval is the pooled binomial one, and says so.
    assert differential("cpu", base[:2], new[:2]).self_changes[0].method == "binomial"


def test_unchanged_profile_is_not_confident() -> None:
    reps = [_rep(c, o) for c, o in ((50, 900), (60, 880), (40, 920))]
    diff = differential("cpu", reps, [_rep(c, o) for c, o in ((55, 905), (45, 890), (58, 915))])
    assert not any(c.confident and abs(c.delta) > 0.01 for c in diff.self_changes)


def test_flame_tree_deltas() -> None:
    tree = flame_tree([_rep(0)], [_rep(100)])
    assert tree["value"] == 1100  # new's busy samples
    leaf = tree
    for name in _rep(0).__iter__().__next__().split(";"):
        leaf = next(c for c in leaf["children"] if c["name"] == name)
    assert leaf["name"] == "csum_partial" and leaf["delta"] == 100
    mptcp_nodes = []

    def walk(node: dict[str, object]) -> None:
        if node.get("mptcp"):
            mptcp_nodes.append(node["name"])
        for child in node.get("children", []):  # type: ignore[attr-defined]
            walk(child)

    walk(tree)
    assert {"mptcp_sendmsg", "mptcp_recvmsg", "subflow_data_ready"} <= set(mptcp_nodes)


def test_mptcp_names() -> None:
    assert is_mptcp("mptcp_sendmsg") and is_mptcp("__mptcp_push_pending") and is_mptcp("subflow_data_ready")
    assert not is_mptcp("tcp_sendmsg") and not is_mptcp("x_mptcp_y")


def test_reduce_counts_each_function_once_per_stack() -> None:
    shares = reduce_rep({"p;f;g;f": 10})
    assert shares.total_counts["f"] == 10 and shares.self_counts["f"] == 10 and shares.busy == 10


def test_profiled_samples_left_out_when_enough_remain() -> None:
    details = {"profiled": [True, False, False, False, True]}
    assert figure_samples([1, 2, 3, 4, 5], details) == [2, 3, 4]
    assert figure_samples([1, 2, 3], {"profiled": [True, True, False]}) == [1, 2, 3]  # too few left
    assert figure_samples([1, 2], {}) == [1, 2]


def test_run_options() -> None:
    assert run_options(False, None, None) is None
    assert run_options(True, None, None).frequency == 499  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="go with --profile"):
        run_options(False, 99, None)
    with pytest.raises(UsageError, match="between 1 and 20000"):
        run_options(True, 0, None)
    with pytest.raises(UsageError, match="not a file"):
        run_options(True, None, "/nonexistent/System.map")


def test_argv_builders() -> None:
    assert record_argv("perf", "o.data", event="cpu-clock", frequency=499, duration=2) == [
        "perf", "record", "-a", "-g", "-k", "mono", "-e", "cpu-clock", "-F", "499", "-o", "o.data", "--quiet",
        "--", "sleep", "2.000",
    ]  # fmt: skip
    assert script_argv("perf", "o.data", kallsyms="/boot/System.map")[-2:] == [
        "--kallsyms",
        "/boot/System.map",
    ]


def test_profiles_table_and_artifact(tmp_path: Path) -> None:
    with open_store(str(tmp_path / "r.db")) as store:
        run = store.create_run("x", {}, {})
        stacks = folded.parse_perf_script(FIXTURE.read_text().splitlines())
        profile = Profile(run.run_id, "cpu/bound", 0, "cpu-clock", 499, 2.5, stacks)
        path = save_profile(store, profile, artifacts=tmp_path / "art")
        save_profile(store, profile, artifacts=tmp_path / "art")  # upsert, not a second row
        (loaded,) = load_profiles(store, run.run_id)
        assert loaded.stacks == stacks and loaded.event == "cpu-clock" and loaded.seconds == 2.5
        assert profiled_scenarios(store, run.run_id) == {"cpu/bound": [0]}
    assert path == tmp_path / "art" / run.run_id / "cpu_bound-rep1.folded.gz"
    import gzip

    assert folded.from_text(gzip.decompress(path.read_bytes()).decode()) == stacks


def test_section_html_is_self_contained() -> None:
    diff = differential("cpu", [_rep(0)] * 3, [_rep(100)] * 3)
    html = section_html([diff], note="n")
    assert "flamegraph.default()" in html and "d3-flame-graph" in html and "<script src" not in html
    assert "mptcp_subflow_data_available" in html and "csum_partial" in html
    assert section_html([]) == ""


def test_scenario_file_profile_setting(tmp_path: Path) -> None:
    """`profile = true` in a scenario file turns profiling on for that scenario only, without --profile."""
    from mptcpkit.lab.profiling.session import Profiler
    from mptcpkit.lab.scenarios import build, load_scenario_file

    (tmp_path / "hot.toml").write_text('name = "hot"\nprofile = true\n')
    (tmp_path / "cold.toml").write_text('name = "cold"\n')
    hot = build(load_scenario_file(tmp_path / "hot.toml")[0])
    cold = build(load_scenario_file(tmp_path / "cold.toml")[0])
    notes: list[str] = []
    assert not Profiler.begin(None, notes.append, "netns", [cold]).enabled and notes == []
    profiler = Profiler.begin(None, notes.append, "ssh", [hot, cold])
    assert profiler.options.scenarios == frozenset({"hot"})
    assert notes == ["profiling: not supported on the ssh backend yet; the run goes on without profiles"]


def test_profiles_travel_in_run_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """How a VM guest hands its profiles to the host: the run JSON carries them, the host stores them."""
    monkeypatch.setenv("MPTCPKIT_PROFILES", str(tmp_path / "artifacts"))
    from mptcpkit.lab.profiling.storage import import_profiles, profiles_json

    stacks = Counter({"iperf3;mptcp_sendmsg;csum_partial": 7})
    with open_store(str(tmp_path / "guest.db")) as guest, open_store(str(tmp_path / "host.db")) as host:
        g = guest.create_run("g", {}, {})
        assert profiles_json(guest, g.run_id) == {}
        save_profile(guest, Profile(g.run_id, "s", 1, "cpu-clock", 499, 1.5, stacks), artifacts=tmp_path)
        items = profiles_json(guest, g.run_id)["profiles"]
        h = host.create_run("h", {}, {})
        assert import_profiles(host, h.run_id, items) == 1
        (p,) = load_profiles(host, h.run_id)
        assert p.stacks == stacks and p.rep == 1 and p.run_id == h.run_id


def test_other_processes_are_marked_and_left_out() -> None:
    lines = [
        "iperf3 100/101 1.0: cpu-clock: ",
        "\tffff csum_partial ([kernel.kallsyms])",
        "",
        "cc1 555/555 1.1: cpu-clock: ",
        "\tffff cc1_main (/usr/lib/gcc/cc1)",
        "",
        "swapper 0/0 1.2: cpu-clock: ",
        "\tffff net_rx_action ([kernel.kallsyms])",
        "",
    ]
    stacks = folded.parse_perf_script(lines, lab_pids={100})
    assert stacks == Counter({"iperf3;csum_partial": 1, "[other]cc1;cc1_main": 1, "swapper;net_rx_action": 1})
    assert folded.parse_perf_script(lines)["cc1;cc1_main"] == 1  # no pid set: everything is the lab's
    shares = reduce_rep(stacks)
    assert shares.busy == 2 and shares.other == 1 and "cc1_main" not in shares.self_counts
    diff = differential("s", [stacks], [stacks])
    assert diff.other_fraction == pytest.approx(2 / 6)
    assert all(c["name"] != "[other]cc1" for c in diff.flame.get("children", []))
