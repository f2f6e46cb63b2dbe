"""Write-ahead log of non-idempotent creates (Superleap): what is about to be sent, before it is.

Superleap's bulk_upsert creates a record for every value without an `id` and has no idempotency
key. A create whose answer is lost (the connection drops after Superleap committed, crm_sync is
killed with the request in flight) must therefore never be resent blind: the record would exist
twice. So:

1. Before a batch holding creates is sent, one entry per create goes into the `write_ahead`
   table of the sync store, in its own committed transaction: sync, source key, batch id, the
   record's `external_id` (JSON text; what the record can be found by) and `sent_at`.
2. The entry leaves the table in the transaction that records the row's known outcome
   (`SyncStore.record_results`): its state with the CRM id, or a rejection Superleap answered.
   A transient failure (timeout, dropped connection, unreadable answer) keeps it: the outcome is
   unknown.
3. When a row is about to be created and an entry of an earlier attempt is still there, the
   connector looks the record up by `external_id` first (Superleap's Filter Object Data API):
   found, it adopts the record's id and sends the row as an update of that record; not found
   (and the request cannot still be in progress: the CRM answered it, with an error or an
   unreadable body, or it was sent longer than the settle time ago), it creates the row; not
   found but possibly in progress, or the lookup failed, the row fails transient and a later
   run decides. A row with no `external_id` cannot be looked up: it fails with
   `CREATE_OUTCOME_UNKNOWN`, permanent, and a person checks Superleap (docs/guarantees.md).
4. Logging is a compare-and-set against other runs (`WriteAheadLog.log`): a create is refused
   when, since this run read the log and the state, another run logged the row (its create is
   open: the row fails transient) or recorded its CRM id (the row becomes an update of that
   record). Two runs holding the same new row never both create it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

from crm_sync.state.backends import upsert

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

    from crm_sync.state.quarantine import QuarantineEntry

UNKNOWN_OUTCOME = "CREATE_OUTCOME_UNKNOWN"

SCHEMA = """
CREATE TABLE IF NOT EXISTS write_ahead (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    match_value TEXT,             -- JSON text of the record's external_id (NULL: none sent)
    sent_at REAL NOT NULL,        -- written before the request left
    answered_at REAL,             -- the CRM answered (an error, an unreadable body): no longer
                                  -- in progress; NULL: no answer (timeout, drop, crash)
    PRIMARY KEY (sync, source_key)
);
"""


# A new entry replaces the row's earlier one whole (answered_at back to NULL).
_REPLACE = upsert("write_ahead", ("sync", "source_key", "batch_id", "match_value", "sent_at"),
                  key=2, reset=("answered_at",))


class Store(Protocol):
    """What the log needs of the sync store (crm_sync/state/store.py's SyncStore; not imported: the
    store imports this module)."""

    def transaction(self, durable: bool = False,
                    sync: str | None = None) -> AbstractContextManager[sqlite3.Connection]:
        ...

    def connection(self) -> AbstractContextManager[sqlite3.Connection]:
        ...


def token(value) -> str | None:
    """The canonical JSON text of a matching value (types kept: 7 and "7" differ)."""
    if value is None:
        return None
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class Pending:
    source_key: str
    batch_id: str
    match_value: str | None  # token() of the external_id sent
    sent_at: float
    answered_at: float | None = None

    def maybe_in_progress(self, now: float, settle_seconds: float) -> bool:
        """Could the CRM still be processing the request? Not once it answered; else until
        `settle_seconds` after it was sent."""
        return self.answered_at is None and now - self.sent_at < settle_seconds


class WriteAheadLog:
    """The write-ahead entries of one sync in the sync store."""

    def __init__(self, store: Store, sync: str):
        self.store, self.sync = store, sync

    def log(self, entries: Sequence[tuple[str, object]],
            seen: Mapping[str, str] | None = None) -> tuple[str, dict[str, Refused]]:
        """Record (source key, external_id value) of creates about to be sent, in a committed
        transaction of its own; return the batch id and the creates refused.

        A compare-and-set against other runs: `seen` maps the keys whose open entry the caller
        read (and settled: looked up, not found) to that entry's batch id. A create is refused
        when the row now has an open entry the caller did not see (another run logged it since)
        or a recorded CRM id (another run created it and recorded its outcome since the caller
        read the state). Check and write hold the store's write lock of the sync (SQLite's
        BEGIN IMMEDIATE, PostgreSQL's advisory lock: crm_sync/state/backends.py)."""
        batch_id, now, seen = uuid.uuid4().hex, time.time(), seen or {}
        # Synced to disk before the request leaves: not even a power loss can forget it.
        with self.store.transaction(durable=True, sync=self.sync) as conn:
            refused = _refused(conn, self.sync, [str(key) for key, _ in entries], seen)
            conn.executemany(
                _REPLACE,
                [(self.sync, str(key), batch_id, token(value), now) for key, value in entries
                 if str(key) not in refused])
        return batch_id, refused

    def answered(self, keys: Sequence[str]) -> None:
        """The CRM answered the request of these (still open) creates, with an error or an
        unreadable body: it is not processing them any more."""
        with self.store.transaction(sync=self.sync) as conn:
            conn.execute("UPDATE write_ahead SET answered_at = ? WHERE sync = ? AND source_key "
                         "IN (SELECT value FROM json_each(?))", (time.time(), self.sync,
                                                                 _keys(keys)))

    def pending(self, keys: Iterable[str] | None = None) -> dict[str, Pending]:
        """The entries still open (of `keys`, or all of the sync's)."""
        with self.store.connection() as conn:  # literal queries (bandit B608)
            if keys is None:
                rows = conn.execute(
                    "SELECT source_key, batch_id, match_value, sent_at, answered_at "
                    "FROM write_ahead WHERE sync = ?", (self.sync,)).fetchall()
            else:
                rows = conn.execute(
                    "SELECT source_key, batch_id, match_value, sent_at, answered_at "
                    "FROM write_ahead WHERE sync = ? AND source_key IN "
                    "(SELECT value FROM json_each(?))", (self.sync, _keys(keys))).fetchall()
        return {r[0]: Pending(*r) for r in rows}


@dataclass(frozen=True)
class Refused:
    """A create `WriteAheadLog.log` refused: another run got to the row first."""
    batch_id: str | None = None  # its create is open (in flight, or its outcome unknown)
    crm_id: str | None = None  # it created (or found) the record and recorded its id


def _refused(conn: sqlite3.Connection, sync: str, keys: list[str],
             seen: Mapping[str, str]) -> dict[str, Refused]:
    wanted = _keys(keys)
    recorded = dict(conn.execute(
        "SELECT source_key, crm_id FROM sync_state WHERE sync = ? AND crm_id IS NOT NULL AND "
        "source_key IN (SELECT value FROM json_each(?))", (sync, wanted)).fetchall())
    opened = dict(conn.execute(
        "SELECT source_key, batch_id FROM write_ahead WHERE sync = ? AND source_key IN "
        "(SELECT value FROM json_each(?))", (sync, wanted)).fetchall())
    refused = {key: Refused(crm_id=crm_id) for key, crm_id in recorded.items()}
    refused.update((key, Refused(batch_id=batch)) for key, batch in opened.items()
                   if key not in refused and seen.get(key) != batch)
    return refused


def settle(conn: sqlite3.Connection, sync: str, succeeded: Sequence[str],
           quarantined: Sequence[QuarantineEntry]) -> None:
    """Inside `SyncStore.record_results`' transaction: close the entries of rows whose outcome
    is now known (confirmed, or rejected by the CRM). Transient failures stay open."""
    if conn.execute("SELECT 1 FROM write_ahead WHERE sync = ? LIMIT 1", (sync,)).fetchone() is None:
        return  # nothing open for this sync: the common case costs one lookup
    known = [*succeeded, *(row.source_key for row in quarantined
                           if row.stage == "crm" and not row.transient
                           and row.error_code != UNKNOWN_OUTCOME)]
    conn.execute("DELETE FROM write_ahead WHERE sync = ? AND source_key IN "
                 "(SELECT value FROM json_each(?))", (sync, _keys(known)))


def _keys(keys: Iterable) -> str:
    return json.dumps([str(k) for k in keys], ensure_ascii=False)
