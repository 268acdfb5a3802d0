"""Fuzz the path manager's parsers with many cases: mptcpd.conf (text and bytes) and the netlink decoders.

    .venv/bin/python benchmarks/fuzz_pm.py [--cases 1000]

Each parser gets `--cases` hypothesis examples. A case passes when the parser returns, warns, or raises its one
documented error (UsageError for files, DecodeError for netlink); anything else is a traceback and counts as
a failure. Results go to benchmarks/results/fuzz_pm.json. (The tests run the same checks with fewer cases.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.netlink.test_fuzz import SEEDS, check  # noqa: E402
from tests.pm.fuzz_cases import CONF_BYTES, CONF_TEXT, check_conf  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def mutate(seed: bytes, edits: list[tuple[int, int]], keep: float) -> bytes:
    buf = bytearray(seed)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[: round(keep * len(buf))])


MUTATED = st.builds(
    mutate,
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=6),
    st.floats(0, 1),
)


def run(
    name: str, strategy: st.SearchStrategy[Any], fn: Callable[[Any], object], cases: int
) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(value: Any) -> None:
        try:
            outcomes[str(fn(value))] += 1
        except Exception:
            failures.append(traceback.format_exc(limit=3))

    t0 = time.perf_counter()
    one()
    return {
        "parser": name,
        "cases": sum(outcomes.values()) + len(failures),
        "outcomes": dict(outcomes),
        "tracebacks": len(failures),
        "first_traceback": failures[0] if failures else None,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=RESULTS / "fuzz_pm.json")
    args = ap.parse_args()
    results = [
        run(
            "mptcpd.conf text",
            CONF_TEXT.map(lambda t: ("[core]\n" + t).encode("utf-8", "surrogatepass")),
            check_conf,
            args.cases,
        ),
        run("mptcpd.conf bytes", CONF_BYTES, check_conf, args.cases),
        run("netlink garbage", st.binary(max_size=300), lambda b: check(b) or "ok", args.cases),
        run(
            "netlink mutated kernel messages",
            MUTATED,
            lambda b: check(b) or "ok",
            args.cases,
        ),
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "fuzz_pm", "results": results}, indent=1) + "\n")
    for r in results:
        print(f"{r['parser']:34s} cases {r['cases']:5d}  tracebacks {r['tracebacks']}  {r['seconds']} s")
    sys.exit(1 if any(r["tracebacks"] for r in results) else 0)


if __name__ == "__main__":
    main()
