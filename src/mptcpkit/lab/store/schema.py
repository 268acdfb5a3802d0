"""Schema versions and migrations of the results database.

The version lives in `PRAGMA user_version` (SQLite) or the one-row table `schema_version` (PostgreSQL).
Each migration moves the schema from version N-1 to N inside one transaction; a database newer than this
code is refused rather than guessed at. Add a migration at the end of MIGRATIONS, never edit an old one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from mptcpkit.errors import UsageError
from mptcpkit.lab.store.db import Database
from mptcpkit.lab.store.model import environment_key

#: Serialises concurrent first opens of one PostgreSQL database (any constant unique to mptcpkit).
_PG_LOCK_KEY = 0x6D707463


@dataclass(frozen=True)
class Migration:
    version: int
    what: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]
    after: Callable[[Database], None] | None = None
    """Data fix-up run after the DDL, in the same transaction."""


def _v1(dialect: str) -> tuple[str, ...]:
    ident = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    boolean = "INTEGER" if dialect == "sqlite" else "BOOLEAN"
    time = "TEXT" if dialect == "sqlite" else "TIMESTAMPTZ"
    return (
        f"""CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            label TEXT,
            started_at {time} NOT NULL,
            finished_at {time},
            status TEXT NOT NULL,
            environment TEXT NOT NULL,
            config TEXT NOT NULL)""",
        "CREATE INDEX runs_label ON runs (label, started_at)",
        "CREATE INDEX runs_started ON runs (started_at)",
        f"""CREATE TABLE results (
            id {ident},
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            scenario TEXT NOT NULL,
            metric TEXT NOT NULL,
            unit TEXT NOT NULL,
            direction TEXT NOT NULL,
            samples TEXT NOT NULL,
            expected {real},
            score {real},
            passed {boolean} NOT NULL,
            rule TEXT NOT NULL,
            details TEXT NOT NULL,
            UNIQUE (run_id, scenario, metric))""",
        "CREATE INDEX results_metric ON results (scenario, metric)",
    )


def _v2(dialect: str) -> tuple[str, ...]:
    ident = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    return (
        f"""CREATE TABLE series (
            id {ident},
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            scenario TEXT NOT NULL,
            rep INTEGER NOT NULL,
            name TEXT NOT NULL,
            interval_s {real} NOT NULL,
            vals TEXT NOT NULL,
            UNIQUE (run_id, scenario, rep, name))""",
        "ALTER TABLE runs ADD COLUMN owner_host TEXT",
        "ALTER TABLE runs ADD COLUMN owner_boot_id TEXT",
        f"ALTER TABLE runs ADD COLUMN owner_pid {big}",
        f"ALTER TABLE runs ADD COLUMN owner_start {big}",
        "ALTER TABLE runs ADD COLUMN env_key TEXT",
        "CREATE INDEX runs_env_key ON runs (env_key, started_at)",
    )


def _backfill_env_key(db: Database) -> None:
    for run_id, env in db.execute("SELECT run_id, environment FROM runs"):
        db.execute("UPDATE runs SET env_key = ? WHERE run_id = ?", (environment_key(json.loads(env)), run_id))


def _v3(dialect: str) -> tuple[str, ...]:
    # Sweeps: each case of a [matrix] scenario is stored under its own name ("unequal[subflows=4]"), so
    # compare and history work per case; these columns say which sweep it belongs to and its parameters (JSON).
    return (
        "ALTER TABLE results ADD COLUMN sweep TEXT",
        "ALTER TABLE results ADD COLUMN params TEXT",
        "CREATE INDEX results_sweep ON results (sweep, metric)",
    )


def _v5(dialect: str) -> tuple[str, ...]:
    ident = "INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite" else "BIGSERIAL PRIMARY KEY"
    real = "REAL" if dialect == "sqlite" else "DOUBLE PRECISION"
    big = "INTEGER" if dialect == "sqlite" else "BIGINT"
    return (
        f"""CREATE TABLE profiles (
            id {ident},
            run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
            scenario TEXT NOT NULL,
            rep INTEGER NOT NULL,
            event TEXT NOT NULL,
            frequency INTEGER NOT NULL,
            seconds {real} NOT NULL,
            samples {big} NOT NULL,
            folded TEXT NOT NULL,
            UNIQUE (run_id, scenario, rep))""",
    )


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "runs and results", _v1("sqlite"), _v1("postgresql")),
    Migration(
        2,
        "time series, writer process, environment key",
        _v2("sqlite"),
        _v2("postgresql"),
        after=_backfill_env_key,
    ),
    Migration(3, "sweep case parameters", _v3("sqlite"), _v3("postgresql")),
    # v4 is reserved for cost; the coordinator renumbers if needed.
    Migration(5, "CPU profiles (folded stacks) of profiled repetitions", _v5("sqlite"), _v5("postgresql")),
)
LATEST_VERSION = MIGRATIONS[-1].version


def current_version(db: Database) -> int:
    if db.dialect == "sqlite":
        return int(db.execute("PRAGMA user_version")[0][0])
    # An MVCC read of the catalog, not to_regclass (whose cache missed a table another migrator had just
    # committed while this one waited for the lock: concurrent first users then both created "runs").
    exists = db.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema() AND tablename = 'schema_version')"
    )[0][0]
    if not exists:
        return 0
    rows = db.execute("SELECT version FROM schema_version")
    return int(rows[0][0]) if rows else 0


def _set_version(db: Database, version: int) -> None:
    if db.dialect == "sqlite":
        db.execute(f"PRAGMA user_version = {int(version)}")
    else:
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))


def _check_not_newer(db: Database, found: int) -> None:
    if found > LATEST_VERSION:
        raise UsageError(
            f"results database {db.where} has schema version {found}, newer than this mptcpkit "
            f"understands ({LATEST_VERSION})",
            hint="upgrade mptcpkit, or use another database with --db",
        )


def migrate(db: Database, target: int = LATEST_VERSION) -> int:
    """Bring the schema up to `target` (default: latest); returns the version found before migrating.

    An up-to-date database is only read, so read-only files and read-only PostgreSQL roles open fine.
    """
    found = current_version(db)
    _check_not_newer(db, found)
    if found >= target:
        return found
    with db.transaction():
        if db.dialect == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_PG_LOCK_KEY,))
        found = current_version(db)  # another process may have migrated meanwhile
        _check_not_newer(db, found)
        if found == 0 and db.dialect == "sqlite" and db.execute("SELECT count(*) FROM sqlite_master")[0][0]:
            raise UsageError(
                f"{db.where} is an SQLite database but not an mptcpkit results database",
                hint="choose another file with --db",
            )
        for migration in MIGRATIONS:
            if found < migration.version <= target:
                for statement in getattr(migration, db.dialect):
                    db.execute(statement)
                if migration.after is not None:
                    migration.after(db)
                _set_version(db, migration.version)
    return found
