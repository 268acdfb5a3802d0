"""Lab test fixtures: a real, throwaway PostgreSQL server for the shared results store.

`pg_server` (session): initdb's a cluster in a temporary directory with Debian's /usr/lib/postgresql/*/bin
binaries (as the `postgres` user when the tests run as root), listening only on a unix socket, and stops it at
the end. `pg_url` (per test): a fresh empty database on that server, dropped after the test, as a
postgresql:// URL that `open_store()` accepts.
"""

from __future__ import annotations

import glob
import os
import pwd
import random
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class PgServer:
    socket_dir: str
    port: int
    user: str

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}&port={self.port}"


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    return Path(found[-1]).parent if found else None


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries missing (/usr/lib/postgresql/*/bin): apt-get install postgresql"
        )
    owner: str | None = None
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server as")
        owner = "postgres"
        user = "postgres"
    else:
        user = pwd.getpwuid(os.geteuid()).pw_name
    base = tempfile.mkdtemp(prefix="mkt-pg-")
    if owner is not None:
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, log = os.path.join(base, "data"), os.path.join(base, "server.log")
    port = random.randint(20000, 60000)
    started = False
    try:
        subprocess.run(
            _as_owner(
                [str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", user, "-E", "UTF8", "--no-sync"],
                owner,
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-c listen_addresses='' -k {base} -p {port} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_owner(
                [str(bindir / "pg_ctl"), "-D", data, "-l", log, "-w", "-t", "60", "-o", opts, "start"], owner
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        started = True
        yield PgServer(socket_dir=base, port=port, user=user)
    except subprocess.CalledProcessError as exc:
        tail = Path(log).read_text()[-2000:] if os.path.exists(log) else ""
        raise RuntimeError(f"throwaway PostgreSQL failed: {exc.stderr!r}\n{tail}") from exc
    finally:
        if started:
            subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", data, "-m", "immediate", "-w", "stop"], owner),
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards), as a postgresql:// URL."""
    import psycopg

    name = f"mkt_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield pg_server.url(name)
    finally:
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
