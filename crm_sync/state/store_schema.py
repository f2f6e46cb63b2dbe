"""The sync store's tables, and its schema version: ordered migrations from an empty store (or
one made before versions were kept) to the current schema, run when a store is opened. Used
by crm_sync/state/store.py only; the write-ahead log (crm_sync/state/writeahead.py) and the
ownership rules (crm_sync/state/ownership.py) declare their own tables, created here with the rest.

The version is row `schema_version` of table `store_meta`, on both backends. Opening a store
at the current version costs one read; an older one is upgraded in place, data kept, inside
one write transaction holding the migration lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an
advisory lock, and its DDL is transactional too), so several processes opening a new store
at once wait for the first instead of racing it. A store made before versions were kept
(crm_sync up to 3002afe) is version 0: its migrations are written to find their work
possibly done already (a table or column that exists is kept).
"""

from __future__ import annotations

import re

from crm_sync.errors import StoreError
from crm_sync.state import links
from crm_sync.state import bulkjobs
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

# Columns added after the first release: (table, column, type), migrations 2 to 6.
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


_META = "CREATE TABLE IF NOT EXISTS store_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)"


def _statements(script: str) -> list[str]:
    """The statements of a script (each ends with `;` at the end of a line: comments may
    hold one mid-line)."""
    return [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", script) if s.strip()]


def _create_tables(backend, conn) -> None:
    """Migration 1: every table of the first versioned release (CREATE ... IF NOT EXISTS)."""
    for statement in _statements(_SCHEMA + writeahead.SCHEMA + ownership.SCHEMA + _LEASE_SCHEMA):
        conn.execute(backend.ddl(statement))


def _add_column(table: str, column: str, kind: str):
    def migrate(backend, conn) -> None:
        if column in backend.columns(conn, table):
            return  # (a store of before versions may have it)
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if (table, column) == ("quarantine", "path"):
            _move_paths_out_of_partition(conn)

    migrate.__doc__ = f"{table}.{column} {kind}"
    return migrate


# In order: migration N brings a store from version N - 1 to N. Append only; never edit one
# that has shipped (stores at its version exist).
MIGRATIONS = (_create_tables, *(_add_column(*added) for added in _ADDED_COLUMNS),
              links.create_links_table,  # (CREATE TABLE IF NOT EXISTS: in any order)
              # Salesforce Bulk API 2.0 jobs under way (crm_sync/state/bulkjobs.py)
              bulkjobs.create_table,
              # the digest of the source row as read whose outcome the state holds
              # (crm_sync/transform/unchanged.py: unchanged rows skip validation and planning)
              _add_column("sync_state", "source_digest", "TEXT"))
CURRENT_VERSION = len(MIGRATIONS)


def schema_version(backend, conn) -> int:
    """The store's schema version (0: empty, or made before versions were kept)."""
    if not backend.has_table(conn, "store_meta"):
        return 0
    row = conn.execute("SELECT value FROM store_meta WHERE name = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def upgrade(backend, upto: int = CURRENT_VERSION) -> int:
    """Bring the store to version `upto` (default: current); return the version it had."""
    with backend.connect() as conn:
        found = schema_version(backend, conn)
    if found == upto:
        return found
    with backend.transaction(migration=True) as conn:
        found = schema_version(backend, conn)  # again: another process may have done it
        if found > CURRENT_VERSION:
            raise StoreError(
                f"the sync store {backend.location.display} has schema version {found}, newer "
                f"than this crm_sync's ({CURRENT_VERSION}): upgrade crm_sync to use it")
        for migrate in MIGRATIONS[found:upto]:
            migrate(backend, conn)
        conn.execute(backend.ddl(_META))
        conn.execute("INSERT INTO store_meta (name, value) VALUES ('schema_version', ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                     (str(max(found, upto)),))
    return found


def _move_paths_out_of_partition(conn) -> None:
    """Stores from before `path`: their `partition` held 'replay' and 'mirror' for entries of
    those paths (their day unknown then: NULL now); every other entry came from a sync run."""
    conn.execute("UPDATE quarantine SET path = CASE WHEN partition IN ('replay', 'mirror') "
                 "THEN partition ELSE 'sync' END")
    conn.execute("UPDATE quarantine SET partition = NULL "
                 "WHERE partition IN ('replay', 'mirror')")
