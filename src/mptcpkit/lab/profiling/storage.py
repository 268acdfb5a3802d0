"""Profiles in the results store (table `profiles`, schema v5) and as files on disk.

One row per profiled repetition: the folded stacks, gzip-compressed and base64-encoded in a TEXT column (the same
in SQLite and PostgreSQL; a 5 s CPU-bound repetition is ~10-30 kB). The same folded stacks are also written as
`<artifacts>/<run>/<scenario>-rep<N>.folded.gz`, readable by flamegraph.pl, inferno or speedscope.
"""

from __future__ import annotations

import gzip
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mptcpkit.lab.profiling import folded


@dataclass
class Profile:
    """The folded stacks of one profiled repetition."""

    run_id: str
    scenario: str
    rep: int
    event: str
    frequency: int
    seconds: float
    stacks: Counter[str] = field(default_factory=Counter)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())


def artifact_dir() -> Path:
    """$MPTCPKIT_PROFILES, else profiles/ beside the default per-user results database."""
    if os.environ.get("MPTCPKIT_PROFILES"):
        return Path(os.environ["MPTCPKIT_PROFILES"])
    from mptcpkit.lab.store.db import default_sqlite_path

    return default_sqlite_path().parent / "profiles"


def artifact_path(base: Path, profile: Profile) -> Path:
    scenario = re.sub(r"[^A-Za-z0-9_.-]", "_", profile.scenario)
    return base / profile.run_id / f"{scenario}-rep{profile.rep + 1}.folded.gz"


def save_profile(store: Any, profile: Profile, *, artifacts: Path | None = None) -> Path | None:
    """Store the profile with the run; write the artifact file. Returns the file (None if it could not be written)."""
    store.database.execute(
        "INSERT INTO profiles (run_id, scenario, rep, event, frequency, seconds, samples, folded) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, scenario, rep) DO UPDATE SET "
        "event = excluded.event, frequency = excluded.frequency, seconds = excluded.seconds, "
        "samples = excluded.samples, folded = excluded.folded",
        (
            profile.run_id,
            profile.scenario,
            int(profile.rep),
            profile.event,
            int(profile.frequency),
            float(profile.seconds),
            int(profile.samples),
            folded.encode(profile.stacks),
        ),
    )
    path = artifact_path(artifacts or artifact_dir(), profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(folded.to_text(profile.stacks).encode(), mtime=0))
    except OSError:
        return None
    return path


def load_profiles(store: Any, run_id: str, scenario: str | None = None) -> list[Profile]:
    sql = "SELECT run_id, scenario, rep, event, frequency, seconds, folded FROM profiles WHERE run_id = ?"
    params: list[Any] = [run_id]
    if scenario is not None:
        sql += " AND scenario = ?"
        params.append(scenario)
    rows = store.database.execute(sql + " ORDER BY scenario, rep", params)
    return [
        Profile(str(r[0]), str(r[1]), int(r[2]), str(r[3]), int(r[4]), float(r[5]), folded.decode(str(r[6])))
        for r in rows
    ]


def profiled_scenarios(store: Any, run_id: str) -> dict[str, list[int]]:
    """Scenario -> profiled repetition indexes (0-based) of one run."""
    found: dict[str, list[int]] = {}
    for scenario, rep in store.database.execute(
        "SELECT scenario, rep FROM profiles WHERE run_id = ? ORDER BY scenario, rep", (run_id,)
    ):
        found.setdefault(str(scenario), []).append(int(rep))
    return found


def to_json(profile: Profile) -> dict[str, Any]:
    """The profile in a run's JSON (how a VM guest hands its profiles back to the host)."""
    return {
        "scenario": profile.scenario,
        "rep": profile.rep,
        "event": profile.event,
        "frequency": profile.frequency,
        "seconds": profile.seconds,
        "folded": folded.encode(profile.stacks),
    }


def from_json(run_id: str, item: dict[str, Any]) -> Profile:
    return Profile(
        run_id,
        str(item["scenario"]),
        int(item["rep"]),
        str(item["event"]),
        int(item["frequency"]),
        float(item["seconds"]),
        folded.decode(str(item["folded"])),
    )


def profiles_json(store: Any, run_id: str) -> dict[str, Any]:
    """{"profiles": [...]} for a run's JSON when it has profiles, else {} (the JSON stays as it was)."""
    profiles = load_profiles(store, run_id)
    return {"profiles": [to_json(p) for p in profiles]} if profiles else {}


def import_profiles(store: Any, run_id: str, items: list[dict[str, Any]]) -> int:
    """Store the profiles a VM guest's run JSON carried, under the host's run id; returns how many."""
    for item in items:
        save_profile(store, from_json(run_id, item))
    return len(items)
