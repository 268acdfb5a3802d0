"""Thin connection layer over SQLite (stdlib) and PostgreSQL (psycopg 3): one small interface for the store.

SQL is written once with `?` placeholders; the PostgreSQL side rewrites them to `%s`. Every statement runs in
autocommit mode unless inside `transaction()`, so a killed writer never leaves half a result behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from mptcpkit.errors import EnvironmentProblem, UsageError

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]


class Database(Protocol):
    dialect: Dialect
    where: str
    """Human-readable location for messages (path, or URL without password)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    def transaction(self) -> Any: ...

    def close(self) -> None: ...

    def to_db_time(self, value: datetime | None) -> Any: ...

    def from_db_time(self, value: Any) -> datetime | None: ...


def default_sqlite_path() -> Path:
    """$XDG_DATA_HOME/mptcpkit/results.db, i.e. ~/.local/share/mptcpkit/results.db by default."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mptcpkit" / "results.db"


def reconnect_budget() -> float:
    """Seconds a PostgreSQL writer keeps reconnecting before giving up ($MPTCPKIT_DB_RECONNECT_S, default 120)."""
    try:
        return max(0.0, float(os.environ.get("MPTCPKIT_DB_RECONNECT_S", "120")))
    except ValueError:
        return 120.0


def redact_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (for messages)."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


class SqliteDatabase:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.where = str(path)
        if path.is_dir():
            raise UsageError(f"results database {path} is a directory", hint="give a file path: results.db")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the directory of results database {path}: {exc.strerror}"
            raise UsageError(msg) from exc
        try:
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA busy_timeout = 30000")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()
        except sqlite3.DatabaseError as exc:
            raise UsageError(
                f"cannot open results database {path}: {exc}",
                hint="is it an mptcpkit SQLite file, readable and writable by you?",
            ) from exc
        if mode is None or str(mode[0]).lower() != "wal":
            raise EnvironmentProblem(
                f"results database {path}: SQLite refused WAL mode (got {mode})",
                hint="put the database on a local file system",
            )
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.execute("PRAGMA foreign_keys = ON")
        self._lock = threading.RLock()
        self._depth = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                return self._conn.execute(sql, tuple(params)).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _sqlite_problem(self.where, exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            outer = self._depth == 0
            if outer:
                self.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer and self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def to_db_time(self, value: datetime | None) -> Any:
        return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")

    def from_db_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        parsed = datetime.fromisoformat(str(value))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _sqlite_problem(where: str, exc: sqlite3.DatabaseError) -> Exception:
    text = str(exc)
    if "readonly" in text or "read-only" in text:
        return UsageError(f"results database {where} is read-only: {text}")
    if "not a database" in text or "malformed" in text:
        return UsageError(f"{where} is not a usable SQLite results database: {text}")
    if "locked" in text or "busy" in text:
        return EnvironmentProblem(f"results database {where} stayed locked by another process: {text}")
    return exc


class PostgresDatabase:
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.where = redact_url(url)
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - psycopg is a hard dependency
            raise EnvironmentProblem(
                "the PostgreSQL store needs psycopg 3: pip install 'psycopg[binary]'"
            ) from exc
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as exc:
            detail = " ".join(str(exc).split())
            raise EnvironmentProblem(
                f"cannot connect to PostgreSQL results database {self.where}: {detail}",
                hint="is the server up? are the URL, user and password right?",
            ) from exc
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"bad PostgreSQL URL {self.where}: {exc}") from exc
        self._url = url
        self._lock = threading.RLock()
        self._in_transaction = 0
        self.reconnects = 0
        """How often a lost connection was re-established (tests and the fleet worker read it)."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement; a lost connection is re-established and the statement retried (bounded).

        Outside a transaction every statement is one committed unit, so retrying it is safe; a retried INSERT
        whose first attempt did get in before the connection dropped meets a unique violation, which means
        "already written" and is not an error.
        """
        psycopg = self._psycopg
        with self._lock:
            deadline: float | None = None
            delay = 0.1
            while True:
                try:
                    cur = self._conn.execute(sql.replace("?", "%s"), tuple(params))  # type: ignore[call-overload]
                    return list(cur.fetchall()) if cur.description is not None else []
                except psycopg.errors.UniqueViolation:
                    if deadline is None:
                        raise
                    return []  # the attempt before the reconnect was committed
                except psycopg.OperationalError as exc:
                    detail = " ".join(str(exc).split())
                    now = time.monotonic()
                    deadline = deadline if deadline is not None else now + reconnect_budget()
                    if self._in_transaction or now >= deadline:
                        raise EnvironmentProblem(
                            f"PostgreSQL results database {self.where}: {detail}"
                        ) from exc
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    self._reconnect()

    def _reconnect(self) -> None:
        """A fresh connection in place of a broken one (a failed attempt leaves the broken one for the next)."""
        with contextlib.suppress(Exception):
            self._conn.close()
        with contextlib.suppress(self._psycopg.OperationalError):
            self._conn = self._psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            self.reconnects += 1

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            if self._conn.closed or self._conn.broken:
                self._reconnect()
            self._in_transaction += 1
            try:
                with self._conn.transaction():
                    yield
            finally:
                self._in_transaction -= 1

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def to_db_time(self, value: datetime | None) -> Any:
        return value

    def from_db_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, datetime):
            return value.astimezone(UTC)
        return datetime.fromisoformat(str(value))


def sqlite_path(url_or_path: str | None) -> Path | None:
    """The SQLite file `connect` would open, or None for a URL of a server database."""
    target = url_or_path if url_or_path else os.environ.get("MPTCPKIT_DB") or None
    if target is None:
        return default_sqlite_path()
    if target.startswith("sqlite:///"):
        return Path(target.removeprefix("sqlite://"))
    if "://" in target:
        return None
    return Path(target).expanduser()


def connect(url_or_path: str | None) -> Database:
    """None: $MPTCPKIT_DB or the per-user SQLite file; postgresql://...: PostgreSQL; else an SQLite path."""
    target = url_or_path if url_or_path else os.environ.get("MPTCPKIT_DB") or None
    if target is None:
        return SqliteDatabase(default_sqlite_path())
    if target.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(target)
    if target.startswith("sqlite:///"):
        return SqliteDatabase(Path(target.removeprefix("sqlite://")))
    if "://" in target:
        raise UsageError(
            f"unsupported results database URL {redact_url(target)}",
            hint="use a file path (SQLite) or postgresql://user@host/dbname",
        )
    return SqliteDatabase(Path(target).expanduser())
