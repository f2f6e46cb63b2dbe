"""Where the sync store lives: a SQLite file (the embedded default) or a PostgreSQL database,
and everything that differs between the two. crm_sync/state/store.py and its helpers write
their SQL once, in SQLite's spelling of the portable subset (`?` placeholders, key lists as
`json_each(?)` of one JSON array, `INSERT ... ON CONFLICT ... DO UPDATE`, no `rowid`, no
`INSERT OR REPLACE`); a PostgreSQL connection translates the two spellings that differ
(`_pg_sql`), and sends an executemany of many inserts or upserts as COPY (crm_sync/state/
pg_bulk.py). The rest is here: connecting, the write transaction, DDL types, table lookups.

A location is a SQLite path, a `sqlite:///path` URL, or a SQLAlchemy PostgreSQL URL
(`postgresql+psycopg://user@host:5432/db`, `postgresql://` too), parsed with
`sqlalchemy.engine.make_url`. The password, when the URL holds one, is shown as `***` in every
text crm_sync produces (`Location.display`); better, it stays out of the URL (libpq's
PGPASSWORD or ~/.pgpass: psycopg reads both).

Write transactions serialise as SQLite's BEGIN IMMEDIATE does, which the leases, ownership
claims, quarantine claims and the write-ahead log's compare-and-set rest on: on PostgreSQL each
one takes a transaction-scoped advisory lock first (`PostgresBackend.transaction`).
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from crm_sync.errors import StoreError, StoreUnreachable
from crm_sync.state import pg_bulk

SQLITE, POSTGRESQL = "sqlite", "postgresql"

# Advisory lock keys (two int4: namespace, key): one per sync for write transactions, one for
# the whole store (a write that names no sync, and schema migrations).
_LOCK_SPACE, _SYNC_SPACE = 0x63724D53, 0x63724D54  # "crMS", "crMT"
_WHOLE_STORE, _MIGRATION = 0, 1


@dataclass(frozen=True)
class Location:
    kind: str  # SQLITE or POSTGRESQL
    path: Path | None = None  # the SQLite file
    url: object = None  # the PostgreSQL sqlalchemy.engine.URL (holds the password, if any)

    @property
    def display(self) -> str:
        """What crm_sync shows of the location: the path, or the URL without its password."""
        if self.kind == SQLITE:
            return str(self.path)
        return self.url.render_as_string(hide_password=True)

    @property
    def connect_string(self) -> str:
        """The location whole (the password too): what `parse` reads back."""
        if self.kind == SQLITE:
            return str(self.path)
        return self.url.render_as_string(hide_password=False)

    def __repr__(self) -> str:
        return f"Location({self.display!r})"


def is_url(value: str | os.PathLike) -> bool:
    return "://" in os.fspath(value)


def parse(value: str | os.PathLike) -> Location:
    """A SQLite path, a sqlite:/// URL or a PostgreSQL URL; anything else: StoreError."""
    text = os.fspath(value)
    if not is_url(text):
        return Location(SQLITE, path=Path(text))
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(text)
    except ArgumentError:
        raise StoreError(f"the sync store location is not a valid URL: {_scheme(text)}://... "
                         f"(a SQLite path, sqlite:///path or postgresql+psycopg://...)") from None
    backend = url.get_backend_name()
    if backend == SQLITE and url.database and url.database != ":memory:":
        return Location(SQLITE, path=Path(url.database))
    if backend == POSTGRESQL and url.drivername in ("postgresql", "postgresql+psycopg"):
        return Location(POSTGRESQL, url=url.set(drivername="postgresql+psycopg"))
    raise StoreError(f"unsupported sync store URL {url.render_as_string(hide_password=True)}: "
                     f"use a SQLite path, sqlite:///path or postgresql+psycopg://user@host/db")


def _scheme(text: str) -> str:
    return text.partition("://")[0]


def upsert(table: str, columns, key: int, reset=()) -> str:
    """Portable `INSERT OR REPLACE` (both backends): insert the row, or overwrite every column
    of the row with the same primary key (its first `key` columns); the `reset` columns, not
    given, go back to NULL as a replaced row's would."""
    update = [f"{c} = excluded.{c}" for c in columns[key:]] + [f"{c} = NULL" for c in reset]
    # (table and columns are this package's constants, never input; values are parameters)
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # nosec B608
            f"({', '.join('?' for _ in columns)}) ON CONFLICT ({', '.join(columns[:key])}) "
            f"DO UPDATE SET {', '.join(update)}")


def open_backend(location: Location) -> SqliteBackend | PostgresBackend:
    if location.kind == SQLITE:
        return SqliteBackend(location)
    return PostgresBackend(location)


def _use_wal(conn: sqlite3.Connection, seconds: float = 60.0) -> None:
    """Put the file in WAL mode (a property of the file: set once, kept). Processes that open
    a new store at the same moment race to switch it, and SQLite can answer a loser `database
    is locked` at once, without waiting on busy_timeout (seen in
    test_concurrent_first_opens_of_a_new_store_all_succeed): it asks again until the file is
    WAL, for at most `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class SqliteBackend:
    """One SQLite file in WAL mode: several processes read and write it; BEGIN IMMEDIATE takes
    the file's one write lock, so write transactions run one at a time."""

    kind = SQLITE
    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    skip_locked = ""  # (no row locks: the transaction holds the whole file)

    def __init__(self, location: Location):
        self.location = location
        location.path.parent.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in autocommit mode (each statement its own transaction unless BEGIN)."""
        conn = sqlite3.connect(self.location.path, timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout=60000")
            _use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self, durable: bool = False, sync: str | None = None, migration=False):
        """`durable`: the COMMIT is synced to disk (synchronous=FULL). `sync`, `migration`:
        (SQLite has one lock for the whole file)."""
        with self.connect() as conn:
            if durable:
                conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @staticmethod
    def ddl(statement: str) -> str:
        return statement

    @staticmethod
    def has_table(conn, table: str) -> bool:
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                            (table,)).fetchone() is not None

    @staticmethod
    def columns(conn, table: str) -> set[str]:
        return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}


class PostgresBackend:
    """A PostgreSQL database through psycopg 3, with a small pool of connections per process.

    The write lock. Every write transaction takes `pg_advisory_xact_lock` on its sync (and a
    shared lock on the whole store) before its first read, and holds it to COMMIT/ROLLBACK.
    Per sync rather than one global lock: every invariant the store keeps is within one sync
    (all tables are keyed by sync first, and each write transaction names its sync), so two
    syncs never need to wait for each other, while two runs of one sync serialise exactly as
    on SQLite. A hash collision of two sync names only makes them wait for each other.
    Isolation is READ COMMITTED on purpose: each statement sees every transaction committed
    before it, including the one that held the lock last (REPEATABLE READ would keep the
    snapshot taken before the wait). Row locks (`FOR UPDATE SKIP LOCKED` on the quarantine
    claims) come on top, for the day a finer lock replaces the per-sync one.
    """

    kind = POSTGRESQL
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, location: Location):
        import psycopg

        self.location, self.errors = location, (psycopg.Error, StoreUnreachable)
        self._pool = _pool(location.url)

    @contextmanager
    def connect(self) -> Iterator[_PgConnection]:
        """A pooled connection in autocommit mode."""
        with self._pool.connection() as raw:
            yield _PgConnection(raw)

    @contextmanager
    def transaction(self, durable: bool = False, sync: str | None = None, migration=False):
        """A write transaction holding the advisory lock of `sync` (None: of the whole store;
        `migration`: the schema's). `durable`: its COMMIT waits for the WAL flush
        (synchronous_commit = on, whatever the server's default)."""
        with self.connect() as conn, conn.raw.transaction():
            if durable:
                conn.execute("SET LOCAL synchronous_commit = on")
            if migration:
                conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, _MIGRATION))
            elif sync is None:
                conn.execute("SELECT pg_advisory_xact_lock(?, ?)", (_LOCK_SPACE, _WHOLE_STORE))
            else:
                conn.execute("SELECT pg_advisory_xact_lock_shared(?, ?), "
                             "pg_advisory_xact_lock(?, hashtext(?))",
                             (_LOCK_SPACE, _WHOLE_STORE, _SYNC_SPACE, sync))
            yield conn

    @staticmethod
    def ddl(statement: str) -> str:
        # REAL is float4 on PostgreSQL (about 7 digits: a Unix time would lose its seconds)
        return re.sub(r"\bREAL\b", "DOUBLE PRECISION", statement)

    @staticmethod
    def has_table(conn, table: str) -> bool:
        return conn.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is not None

    @staticmethod
    def columns(conn, table: str) -> set[str]:
        return {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND "
            "table_schema = current_schema()", (table,))}


class _PgConnection:
    """A psycopg connection with sqlite3's `execute`/`executemany` and SQLite's spelling."""

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, params=()):
        return self.raw.execute(_pg_sql(sql), [_pg_value(v) for v in params])

    def executemany(self, sql: str, rows):
        """Row by row, as sqlite3's; an INSERT (or upsert) of many rows as COPY
        (crm_sync/state/pg_bulk.py: the same result, a fraction of the time)."""
        cursor = self.raw.cursor()
        rows = [[_pg_value(v) for v in row] for row in rows]
        bulk = pg_bulk.parse(sql) if rows and len(rows) >= pg_bulk.THRESHOLD else None
        if bulk is not None:
            pg_bulk.write(self.raw, bulk, rows)
        elif rows:
            cursor.executemany(_pg_sql(sql), rows)
        return cursor

    def script(self, statements: list[str]) -> None:
        for statement in statements:
            self.raw.execute(statement)


# `x IN (SELECT value FROM json_each(?))`, the store's "x is one of these keys": on PostgreSQL
# `x = ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))`. The array is built once (an
# InitPlan) and the keys are looked up in the (sync, key) index. Written as IN (SELECT ...),
# PostgreSQL plans a semi-join; on a table it has no statistics for yet (the `sending` claims of
# a run, just written) it estimates one row and picks a nested loop that expands the JSON
# array again for every row: 10,000 keys took 47 s (EXPLAIN ANALYZE: "Rows Removed by Join
# Filter: 49995000"), where this takes 0.3 s (BENCHMARKS.md, "Round 2").
# (`NOT IN (SELECT ...)` is left as it is: PostgreSQL hashes that subquery.)
_KEY_LIST = re.compile(r"(?<!NOT )\bIN\s*\(SELECT value FROM json_each\(\?\)\)")


@lru_cache(maxsize=512)
def _pg_sql(sql: str) -> str:
    """SQLite's spelling -> PostgreSQL's: a JSON array of keys is expanded by
    jsonb_array_elements_text (its column is also named `value`), `IN` one of them as `=
    ANY(ARRAY(...))` (above); `?` becomes `%s`."""
    sql = _KEY_LIST.sub("= ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))", sql)
    sql = sql.replace("json_each(?)", "jsonb_array_elements_text(?::jsonb)")
    return sql.replace("%", "%%").replace("?", "%s")


def _pg_value(value):
    # PostgreSQL text cannot hold NUL (SQLite's can): an unreadable CRM answer may.
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class _Pool:
    """A few idle connections kept per process. A forked child starts with none: it must not
    use its parent's sockets, nor close them (closing says goodbye to the server for the
    parent), so it keeps them, untouched, until it exits."""

    KEEP = 4

    def __init__(self, url):
        self.url, self._idle, self._lock, self._pid = url, [], threading.Lock(), os.getpid()
        self._parents: list = []

    @contextmanager
    def connection(self):
        conn = self._take() or self._connect()
        try:
            yield conn
        finally:
            self._give(conn)

    def _take(self):
        with self._lock:
            if self._pid != os.getpid():
                self._parents.extend(self._idle)
                self._idle, self._pid = [], os.getpid()
            return self._idle.pop() if self._idle else None

    def _give(self, conn) -> None:
        from psycopg.pq import TransactionStatus

        reusable = not conn.closed and conn.info.transaction_status == TransactionStatus.IDLE
        with self._lock:
            if reusable and self._pid == os.getpid() and len(self._idle) < self.KEEP:
                self._idle.append(conn)
                return
        conn.close()

    def _connect(self):
        import psycopg

        args = self.url.translate_connect_args(username="user", database="dbname")
        try:
            conn = psycopg.connect(**{"connect_timeout": 30, **args, **dict(self.url.query)},
                                   autocommit=True)
        except psycopg.OperationalError as exc:
            raise StoreUnreachable(self._failure(exc, args.get("password"))) from None
        # BEGIN ISOLATION LEVEL READ COMMITTED, whatever the server's default (see the class)
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

    def _failure(self, exc, password: str | None) -> str:
        url = self.url
        reason = " ".join(str(exc).split())
        if password:
            reason = reason.replace(password, "***")
        return (f"cannot connect to the sync store's PostgreSQL server at "
                f"{url.host or 'localhost'}:{url.port or 5432}, database {url.database!r} as "
                f"user {url.username!r} ({url.render_as_string(hide_password=True)}): {reason}")


_POOLS: dict[str, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool(url) -> _Pool:
    key = url.render_as_string(hide_password=False)
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = _Pool(url)
        return _POOLS[key]
