"""SQLite storage of the sandbox: the records each emulated CRM holds, and request counters.

A file (not memory) so the sandbox survives a restart and two processes see the same data.
Handlers run on the event loop and call this synchronously: SQLite calls are short, and one
writer at a time is exactly what a real CRM's consistency looks like to a client.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    crm TEXT NOT NULL, object TEXT NOT NULL, id TEXT NOT NULL,
    data TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
    PRIMARY KEY (crm, object, id)
);
-- Brevo's read pages records in creation order, which is the order of their integer ids.
CREATE INDEX IF NOT EXISTS records_by_number ON records (crm, object, CAST(id AS INTEGER));
CREATE TABLE IF NOT EXISTS unique_values (
    crm TEXT NOT NULL, object TEXT NOT NULL, prop TEXT NOT NULL, value TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (crm, object, prop, value)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
-- Links between records (HubSpot's associations): one row per direction and type.
CREATE TABLE IF NOT EXISTS associations (
    crm TEXT NOT NULL, from_object TEXT NOT NULL, from_id TEXT NOT NULL,
    to_object TEXT NOT NULL, to_id TEXT NOT NULL, category TEXT NOT NULL,
    type_id INTEGER NOT NULL,
    PRIMARY KEY (crm, from_object, from_id, to_object, to_id, category, type_id)
);
CREATE INDEX IF NOT EXISTS associations_to ON associations (crm, to_object, to_id);
CREATE TABLE IF NOT EXISTS processes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, crm TEXT NOT NULL, data TEXT NOT NULL
);
"""


class SandboxDB:
    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._conn.executescript(_SCHEMA)

    def transaction(self):
        return _Tx(self)

    # -- records -----------------------------------------------------------------------------
    def get(self, crm: str, obj: str, record_id: str) -> dict | None:
        row = self._conn.execute(
            "SELECT data FROM records WHERE crm=? AND object=? AND id=?", (crm, obj, record_id)
        ).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, crm: str, obj: str, record_id: str, data: dict, now_ms: int) -> None:
        self._conn.execute(
            "INSERT INTO records (crm, object, id, data, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (crm, object, id) DO UPDATE SET "
            "data = excluded.data, updated_at = excluded.updated_at",
            (crm, obj, record_id, json.dumps(data, ensure_ascii=False), now_ms, now_ms),
        )

    def delete(self, crm: str, obj: str, record_id: str) -> bool:
        cur = self._conn.execute(
            "DELETE FROM records WHERE crm=? AND object=? AND id=?", (crm, obj, record_id)
        )
        self._conn.execute(
            "DELETE FROM unique_values WHERE crm=? AND object=? AND id=?", (crm, obj, record_id)
        )
        self._conn.execute(  # a deleted record keeps no links, in either direction
            "DELETE FROM associations WHERE crm=? AND ((from_object=? AND from_id=?) OR "
            "(to_object=? AND to_id=?))", (crm, obj, record_id, obj, record_id))
        return cur.rowcount > 0

    def list(self, crm: str, obj: str) -> list[dict]:
        return [
            json.loads(r[0])
            for r in self._conn.execute(
                "SELECT data FROM records WHERE crm=? AND object=? ORDER BY created_at, id",
                (crm, obj),
            )
        ]

    def page(self, crm: str, obj: str, limit: int, offset: int,
             descending: bool = False) -> list[dict]:
        """One page of an object's records in the order of their integer ids (the index above
        serves it: a page costs its own rows, not a sort of the whole object)."""
        order = "DESC" if descending else "ASC"
        return [
            json.loads(r[0])
            for r in self._conn.execute(
                "SELECT data FROM records WHERE crm=? AND object=? "  # nosec B608  # fixed order
                f"ORDER BY CAST(id AS INTEGER) {order} LIMIT ? OFFSET ?",
                (crm, obj, limit, offset),
            )
        ]

    def count(self, crm: str, obj: str) -> int:
        return self._conn.execute(
            "SELECT COUNT(*) FROM records WHERE crm=? AND object=?", (crm, obj)
        ).fetchone()[0]

    # -- unique property index (HubSpot idProperty, Salesforce external id, Brevo ext_id) ----
    def find_unique(self, crm: str, obj: str, prop: str, value: str) -> str | None:
        row = self._conn.execute(
            "SELECT id FROM unique_values WHERE crm=? AND object=? AND prop=? AND value=?",
            (crm, obj, prop, value),
        ).fetchone()
        return row[0] if row else None

    def set_unique(self, crm: str, obj: str, prop: str, value: str, record_id: str) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO unique_values VALUES (?, ?, ?, ?, ?)",
            (crm, obj, prop, value, record_id),
        )

    # -- associations (links between records) ------------------------------------------------
    def link(self, crm: str, from_object: str, from_id: str, to_object: str, to_id: str,
             category: str, type_id: int) -> bool:
        """Store one directed link; False when it was there already."""
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO associations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (crm, from_object, from_id, to_object, to_id, category, type_id))
        return cur.rowcount > 0

    def unlink(self, crm: str, from_object: str, from_id: str, to_object: str, to_id: str,
               type_key: tuple[str, int] | None = None) -> int:
        """Remove the links from one record to another: every type, or the (category,
        type_id) given; how many."""
        sql = ("DELETE FROM associations WHERE crm=? AND from_object=? AND from_id=? AND "
               "to_object=? AND to_id=?")
        args: tuple = (crm, from_object, from_id, to_object, to_id)
        if type_key is not None:
            sql, args = sql + " AND category=? AND type_id=?", args + tuple(type_key)
        return self._conn.execute(sql, args).rowcount

    def links(self, crm: str, from_object: str, from_id: str | None = None,
              to_object: str | None = None) -> list[tuple[str, str, str, str, int]]:
        """(from_id, to_object, to_id, category, type_id) of a record's (or an object's)
        links, in a stable order."""
        sql = ("SELECT from_id, to_object, to_id, category, type_id FROM associations "
               "WHERE crm=? AND from_object=?")
        args: list = [crm, from_object]
        if from_id is not None:
            sql += " AND from_id=?"
            args.append(from_id)
        if to_object is not None:
            sql += " AND to_object=?"
            args.append(to_object)
        return list(self._conn.execute(sql + " ORDER BY from_id, to_object, to_id, type_id",
                                       args))

    # -- counters and processes --------------------------------------------------------------
    def bump(self, name: str, by: int = 1) -> None:
        self._conn.execute(
            "INSERT INTO counters VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )

    def counters(self) -> dict[str, int]:
        return dict(self._conn.execute("SELECT name, value FROM counters ORDER BY name"))

    def new_process(self, crm: str, data: dict) -> int:
        cur = self._conn.execute(
            "INSERT INTO processes (crm, data) VALUES (?, ?)", (crm, json.dumps(data))
        )
        return cur.lastrowid

    def get_process(self, process_id: int) -> dict | None:
        row = self._conn.execute("SELECT data FROM processes WHERE id=?", (process_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def update_process(self, process_id: int, data: dict) -> None:
        self._conn.execute(
            "UPDATE processes SET data=? WHERE id=?", (json.dumps(data), process_id)
        )

    def reset(self) -> None:
        with self._lock:
            for table in ("records", "unique_values", "associations", "counters", "processes"):
                self._conn.execute(f"DELETE FROM {table}")  # nosec B608  # fixed table names


class _Tx:
    """A write transaction: all of a request's changes land together or not at all."""

    def __init__(self, db: SandboxDB):
        self.db = db

    def __enter__(self):
        self.db._lock.acquire()
        self.db._conn.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        try:
            self.db._conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.db._lock.release()
        return False
