"""The sync store's SQLite file: its tables, the columns added to them since the first
release, and how a connection to it is opened (WAL mode, so that several processes, one per
partition in a backfill, read and write the same file). Used by crm_sync/state/store.py only; the
write-ahead log (crm_sync/state/writeahead.py) and the ownership rules (crm_sync/state/ownership.py)
declare their own tables, created here with the rest.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager

from crm_sync.state import ownership
from crm_sync.state import writeahead

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_state (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    crm_id TEXT,
    payload_hash TEXT NOT NULL,
    synced_at REAL NOT NULL,
    PRIMARY KEY (sync, source_key)
);
CREATE TABLE IF NOT EXISTS quarantine (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    partition TEXT,
    stage TEXT NOT NULL,          -- 'validation' or 'crm'
    error_code TEXT NOT NULL,
    rules TEXT,                   -- every rule the row broke, comma separated
    column_name TEXT,
    value TEXT,
    message TEXT NOT NULL,
    http_status INTEGER,
    attempts INTEGER,
    transient INTEGER NOT NULL DEFAULT 0,
    payload TEXT,
    raw TEXT,                     -- the CRM's answer when it could not be understood (truncated)
    quarantined_at REAL NOT NULL,
    claimed_by TEXT,              -- the run retrying this row right now (transient failures)
    claimed_at REAL,
    PRIMARY KEY (sync, source_key)
);
"""

# One run at a time per sync partition (crm_sync/state/lease.py): the run holding the lease renews
# `expires_at`; a crashed run's lease expires and another run may take it over.
_LEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS partition_lease (
    sync TEXT NOT NULL,
    partition TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (sync, partition)
);
"""

# Columns added after the first release: (table, column, type).
_ADDED_COLUMNS = (
    ("quarantine", "raw", "TEXT"),
    # sha256 of the unmasked payload the CRM refused (replay's change check; `payload` is
    # masked when the sync has sensitive fields)
    ("quarantine", "payload_digest", "TEXT"),
    # the source row's updated_at (UTC, ISO 8601) of what the CRM confirmed: an older row
    # never overwrites it
    ("sync_state", "updated_at", "TEXT"),
    # how many runs in a row a transient CRM failure was the row's outcome
    ("quarantine", "runs", "INTEGER"),
    # the step whose failure the entry is: 'sync', 'replay' or 'mirror' (crm_sync/state/quarantine.py;
    # `partition` is always the row's day)
    ("quarantine", "path", "TEXT"),
)


@contextmanager
def connect(path):
    """A connection in autocommit mode (each statement its own transaction unless BEGIN)."""
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=60000")
        conn.execute("PRAGMA synchronous=NORMAL")
        yield conn
    finally:
        conn.close()


def create_tables(conn: sqlite3.Connection) -> None:
    """Every table of the store, and the columns older stores lack."""
    conn.executescript(_SCHEMA + writeahead.SCHEMA + ownership.SCHEMA)
    _add_missing_columns(conn)
    conn.executescript(_LEASE_SCHEMA)


def _add_missing_columns(conn) -> None:
    """Stores created before a column existed get it (several processes may race to do so)."""
    for table, column, kind in _ADDED_COLUMNS:
        present = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if column in present:
            continue
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
            continue
        if (table, column) == ("quarantine", "path"):
            _move_paths_out_of_partition(conn)


def _move_paths_out_of_partition(conn) -> None:
    """Stores from before `path`: their `partition` held 'replay' and 'mirror' for entries of
    those paths (their day unknown then: NULL now); every other entry came from a sync run."""
    conn.execute("UPDATE quarantine SET path = CASE WHEN partition IN ('replay', 'mirror') "
                 "THEN partition ELSE 'sync' END")
    conn.execute("UPDATE quarantine SET partition = NULL "
                 "WHERE partition IN ('replay', 'mirror')")
