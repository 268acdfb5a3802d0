"""The lab's results database: SQLite by default, PostgreSQL by URL so a team shares one store.

store = open_store(None)                 # $MPTCPKIT_DB or ~/.local/share/mptcpkit/results.db
run = store.create_run("v6.18-rc1", environment, config)
store.add_result(Result(run.run_id, "balanced-10-10", "goodput", "Mbit/s", "higher", [18.9, 19.0, 18.8]))
store.finish_run(run.run_id, "complete")
"""

from mptcpkit.lab.store.db import default_sqlite_path
from mptcpkit.lab.store.model import (
    ENVIRONMENT_KEY_FIELDS,
    Direction,
    ProcessRef,
    Result,
    Run,
    RunStatus,
    Series,
    environment_key,
)
from mptcpkit.lab.store.schema import LATEST_VERSION
from mptcpkit.lab.store.store import Store, open_store, result_to_json, run_to_json

__all__ = [
    "ENVIRONMENT_KEY_FIELDS",
    "LATEST_VERSION",
    "Direction",
    "ProcessRef",
    "Result",
    "Run",
    "RunStatus",
    "Series",
    "Store",
    "default_sqlite_path",
    "environment_key",
    "open_store",
    "result_to_json",
    "run_to_json",
]
