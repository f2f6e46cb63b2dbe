"""A throwaway PostgreSQL server for the tests and the benchmark (`crm-sync bench`'s store
section): `initdb` and `pg_ctl` on a temporary directory, listening on a free port of 127.0.0.1
only, stopped (and its files removed) at the end.

Debian's `postgresql` packages (installed by `.ci/run`) put the programs under
/usr/lib/postgresql/<version>/bin. The server refuses to run as root, so as root (CI) it runs
as Debian's `postgres` user. No server programs: `postgres_server` raises FileNotFoundError; the
tests that need one are then skipped with the reason, except under `CI=true`, where that is a
failure (CI must test both store backends), and the benchmark's store section says so.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import tempfile
import subprocess  # nosec B404 - fixed argument lists, no shell
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "crm_sync_test"


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for one database of the server."""
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def dsn(self, database: str = "postgres") -> str:
        """The same as a libpq connection string (psycopg.connect, dagster-postgres)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; its name."""
        import psycopg

        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the connections still open to it (a test's pool)."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_bin_dir() -> Path | None:
    """The directory of `initdb`/`pg_ctl`: on PATH, else Debian's newest version."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parent.parent.name))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_server_user(directory: Path) -> list[str]:
    """The command prefix that runs a server program (as `postgres` when we are root)."""
    if os.geteuid() != 0:
        return []
    account = pwd.getpwnam("postgres")
    for path in (directory, *directory.rglob("*")):
        os.chown(path, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a server in a new temporary directory; stop it and remove the directory when the
    block ends. (Not under pytest's tmp_path: its parents are private to root, so the
    `postgres` user could not reach them.)"""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server programs (initdb, pg_ctl): "
                                "install Debian's `postgresql` package")
    directory = Path(tempfile.mkdtemp(prefix="crm_sync_pg_"))
    directory.chmod(0o755)  # nosec B103 - the server user must enter it; trust auth is 127.0.0.1 only
    try:
        with _running(bin_dir, directory) as server:
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _running(bin_dir: Path, directory: Path) -> Iterator[PostgresServer]:
    prefix = _as_server_user(directory)
    data, port = directory / "data", _free_port()
    subprocess.run(  # nosec B603
        [*prefix, str(bin_dir / "initdb"), "-D", str(data), "-U", SUPERUSER,
         "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True, capture_output=True)
    # Only 127.0.0.1; the socket lives in our directory, not /var/run.
    options = f"-h 127.0.0.1 -p {port} -k {directory} -c fsync=on -c max_connections=200"
    subprocess.run(  # nosec B603
        [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"),
         "-o", options, "-w", "-t", "60", "start"],
        check=True, capture_output=True)
    try:
        yield PostgresServer("127.0.0.1", port, SUPERUSER)
    finally:
        subprocess.run(  # nosec B603
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
            check=False, capture_output=True)
