"""The sync store: per-sync state (CRM ids, payload hashes) and the quarantine, in one SQLite file
(the default) or one PostgreSQL database (crm_sync/state/backends.py).

SQLite in WAL mode lets several processes (one per partition in a backfill) read and write the
same file; PostgreSQL lets them run on several machines. Every write is one short transaction,
so a crashed run never leaves the store half-written. Users query it with the sqlite3 CLI,
pandas or DuckDB (`ATTACH 'file' (TYPE sqlite)`), or with SQL in their own PostgreSQL.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import replace
import pandas as pd

from crm_sync import paths
from crm_sync.state import backends
from crm_sync.state import links as link_table
from crm_sync.state import bulkjobs
from crm_sync.state import ownership
from crm_sync.state import store_schema
from crm_sync.state import writeahead
from crm_sync.state.quarantine import MIRROR, QuarantineEntry, masked_all

QUARANTINE_COLUMNS = [
    "sync", "source_key", "partition", "stage", "error_code", "rules", "column_name", "value",
    "message", "http_status", "attempts", "transient", "payload", "raw", "quarantined_at",
    "runs", "payload_digest", "path",
]

# Transient CRM failures that are the row's own doing rather than the CRM's state: Brevo accepts
# the record and then holds no such record (an attribute value it drops without a word). Such
# a row becomes permanent after the sync's `max_unconfirmed_runs` (settle_unconfirmed).
UNCONFIRMED_CODES = ("NOT_CONFIRMED",)

# How much of a CRM answer the quarantine keeps (`raw`).
RAW_LIMIT = 2000

# A claim older than this is considered abandoned (its run crashed) and can be taken again.
CLAIM_TIMEOUT_SECONDS = 3600


def default_store_path() -> str:
    """$CRM_SYNC_STORE, else .crm_sync/crm_sync.sqlite in the project (crm_sync/paths.py)."""
    return paths.store_location()


class SyncStore:
    """Thin, transactional access to the state and quarantine tables. `location`: a SQLite
    path, a sqlite:/// URL or a PostgreSQL URL (crm_sync/state/backends.py)."""

    def __init__(self, location: str | os.PathLike):
        self.location = backends.parse(location)
        self.path = self.location.path  # the SQLite file (None on PostgreSQL)
        self.backend = backends.open_backend(self.location)
        self.errors = self.backend.errors  # what a failing statement raises
        store_schema.upgrade(self.backend)

    def __repr__(self) -> str:
        return f"SyncStore({self.location.display!r})"

    def connect_string(self) -> str:
        """The location whole, its password included: for a child process's SyncStore, never
        for a log (that is `display`)."""
        return self.location.connect_string

    @property
    def display(self) -> str:
        """Where the store is, as crm_sync shows it (a URL without its password)."""
        return self.location.display

    def connection(self):
        """A connection to the store in autocommit mode: for reads, and writes of one
        statement (several statements that must hold together: `transaction`)."""
        return self.backend.connect()

    def transaction(self, durable: bool = False, sync: str | None = None):
        """One write transaction, serialised with every other one of `sync` (None: of the
        store), in every process. `durable`: its COMMIT is on disk before it returns, so it
        survives a power loss too (the write-ahead log of creates needs that)."""
        return self.backend.transaction(durable=durable, sync=sync)

    def query(self, sql: str, params: Sequence = ()) -> pd.DataFrame:
        """A read-only query of the store as a frame, on either backend (SQLite's spelling:
        `?` placeholders). For tests and tools; crm_sync itself uses the methods."""
        with self.connection() as conn:
            return _frame(conn, sql, params)

    # -- state -------------------------------------------------------------------------------
    def get_state(self, sync: str, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        """source_key -> (crm_id, payload_hash) for the keys that were synced before."""
        # The keys travel as one JSON array (json_each): one statement, no temporary table.
        wanted = json.dumps([str(k) for k in keys], ensure_ascii=False)
        with self.connection() as conn:
            return {key: (crm_id, digest) for key, crm_id, digest in conn.execute(
                "SELECT source_key, crm_id, payload_hash FROM sync_state WHERE sync = ? AND "
                "source_key IN (SELECT value FROM json_each(?))", (sync, wanted)).fetchall()}

    def source_digests(self, sync: str, keys: Iterable[str]) -> dict[str, str]:
        """source_key -> the digest of the source row whose outcome the state holds
        (crm_sync/transform/unchanged.py), for the keys that have one and no quarantine entry."""
        wanted = json.dumps([str(k) for k in keys], ensure_ascii=False)
        with self.connection() as conn:
            return dict(conn.execute(
                "SELECT s.source_key, s.source_digest FROM sync_state s WHERE s.sync = ? AND "
                "s.source_digest IS NOT NULL AND s.source_key IN (SELECT value FROM "
                "json_each(?)) AND NOT EXISTS (SELECT 1 FROM quarantine q WHERE q.sync = "
                "s.sync AND q.source_key = s.source_key)", (sync, wanted)).fetchall())

    def get_links(self, sync: str, keys: Iterable[str]) -> dict:
        """(source key, association) -> (target key, target CRM id) recorded for `keys`."""
        with self.connection() as conn:
            return link_table.read(conn, sync, keys)

    def links_frame(self, sync: str | None = None) -> pd.DataFrame:
        if sync:
            return self.query("SELECT * FROM sync_links WHERE sync = ? ORDER BY source_key, "
                              "association", (sync,))
        return self.query("SELECT * FROM sync_links ORDER BY sync, source_key, association")

    def state_frame(self, sync: str | None = None) -> pd.DataFrame:
        if sync:
            return self.query("SELECT * FROM sync_state WHERE sync = ?", (sync,))
        return self.query("SELECT * FROM sync_state")

    def claim_for_sending(self, sync: str, run: str,
                          rows: list[tuple[str, str | None, str | None]],
                          take: bool = True) -> list[ownership.Verdict]:
        """Per (source key, version, matching value) about to be sent: send it, or not
        (another key owns the CRM record; a newer version was sent), or wait (another run is
        sending the key now). Atomic across processes (crm_sync/state/ownership.py)."""
        if not take:
            with self.connection() as conn:
                return ownership.claim(conn, sync, run, rows, take=False)
        with self.transaction(sync=sync) as conn:
            return ownership.claim(conn, sync, run, rows)

    def release_sending(self, sync: str, run: str) -> None:
        with self.transaction(sync=sync) as conn:
            ownership.release(conn, sync, run)

    def forget(self, sync: str, keys: Iterable[str]) -> int:
        """In one transaction, drop the state (and any quarantine entry) of source keys whose
        CRM record is gone (mirror deletes); return how many state rows were dropped."""
        keys = [str(key) for key in keys]
        wanted = json.dumps(keys, ensure_ascii=False)
        with self.transaction(sync=sync) as conn:
            dropped = conn.execute("DELETE FROM sync_state WHERE sync = ? AND source_key IN "
                                   "(SELECT value FROM json_each(?))", (sync, wanted)).rowcount
            conn.execute("DELETE FROM quarantine WHERE sync = ? AND source_key IN "
                         "(SELECT value FROM json_each(?))", (sync, wanted))
            ownership.forget(conn, sync, keys)
            link_table.forget(conn, sync, keys)
        return dropped

    # -- quarantine --------------------------------------------------------------------------
    def record_results(
        self,
        sync: str,
        succeeded: Sequence[str],
        quarantined: Sequence[QuarantineEntry],
        state_rows: Sequence[tuple[str, str | None, str]] = (),
        versions: dict[str, str] | None = None,
        run: str | None = None,
        links: Sequence[link_table.LinkRow] = (),
        source_digests: dict[str, str] | None = None,
    ) -> None:
        """In one transaction: rows that went through leave the quarantine, failed rows enter it
        (replacing their earlier entry: one entry per source row), and confirmed rows' state is
        written. One transaction means a crash leaves either all of it or none of it.
        Superleap creates whose outcome is now known leave the write-ahead log in it too.
        `versions`: source key -> the updated_at of what the CRM confirmed (a state's version
        never goes back); `run`: the run whose claims to be sending these rows end here.
        Each entry is masked here, the one place entries enter the store (crm_sync/state/quarantine.py):
        sensitive values never reach the file. `links`: the associations of confirmed rows
        (crm_sync/state/links.py), written with their state. `source_digests`: the source
        digests (crm_sync/transform/unchanged.py) of rows confirmed or found unchanged."""
        now = time.time()
        quarantined = masked_all(quarantined)
        with self.transaction(sync=sync) as conn:
            quarantined = _count_runs(conn, sync, quarantined)
            writeahead.settle(conn, sync, succeeded, quarantined)
            bulkjobs.settle(conn, sync, succeeded, quarantined)
            if succeeded and conn.execute("SELECT 1 FROM quarantine WHERE sync = ? LIMIT 1",
                                          (sync,)).fetchone() is not None:
                # (an empty quarantine, the usual case, is not searched key by key)
                conn.execute(
                    "DELETE FROM quarantine WHERE sync = ? AND source_key IN "
                    "(SELECT value FROM json_each(?))",
                    (sync, json.dumps([str(k) for k in succeeded], ensure_ascii=False)),
                )
            conn.executemany(_REPLACE_QUARANTINE,
                             [_quarantine_row(sync, row, now) for row in quarantined])
            versions, source_digests = versions or {}, source_digests or {}
            conn.executemany(
                _UPSERT_STATE,
                # in key order: neighbouring rows share index pages (fewer pages written)
                sorted(((sync, key, crm_id, digest, now, versions.get(key),
                         source_digests.get(key)) for key, crm_id, digest in state_rows),
                       key=lambda row: str(row[1])),
            )
            _write_source_digests(conn, sync, source_digests, state_rows, quarantined)
            if links:
                link_table.write(conn, sync, links, now)
            if run is not None:
                ownership.settle(conn, sync, run,
                                 [*succeeded, *(q.source_key for q in quarantined)])

    def settle_unconfirmed(self, sync: str, max_runs: int) -> int:
        """Rows that ended unconfirmed (UNCONFIRMED_CODES) in `max_runs` runs in a row: their
        entry becomes permanent, saying so, and no later run resends them unless the row
        changes at the source (or its partition is run again). Returns how many."""
        codes = json.dumps(list(UNCONFIRMED_CODES))
        with self.transaction(sync=sync) as conn:
            return conn.execute(
                "UPDATE quarantine SET transient = 0, message = 'never confirmed after ' || runs "
                "|| ' runs, so it is no longer resent automatically (fix the row at the source: "
                "a changed row is sent again; or run its partition again): ' || message "
                "WHERE sync = ? AND stage = 'crm' AND transient = 1 AND runs >= ? AND "
                "COALESCE(path, '') != ? AND error_code IN (SELECT value FROM json_each(?))",
                (sync, max_runs, MIRROR, codes)).rowcount

    def drop_quarantined(self, sync: str, error_code: str, keep: Iterable[str]) -> int:
        """Drop the sync's quarantine entries with `error_code` except those of `keep` (the
        entries a full look at the source found again); return how many were dropped."""
        with self.transaction(sync=sync) as conn:
            return conn.execute(
                "DELETE FROM quarantine WHERE sync = ? AND error_code = ? AND source_key NOT IN "
                "(SELECT value FROM json_each(?))",
                (sync, error_code, json.dumps([str(k) for k in keep], ensure_ascii=False)),
            ).rowcount

    def claim_transient(self, sync: str, claimant: str, limit: int = 10_000,
                        before: float | None = None) -> list[str]:
        """Atomically take the sync's transient failures (quarantined before `before`) for one
        run to retry, so that two runs started at once (a backfill) never resend the same row."""
        now = time.time()
        before = now if before is None else before
        with self.transaction(sync=sync) as conn:
            rows = conn.execute(  # (skip_locked: the backend's constant clause)
                "UPDATE quarantine SET claimed_by = ?, claimed_at = ? WHERE sync = ? AND "  # nosec B608
                "source_key IN (SELECT source_key FROM quarantine WHERE sync = ? AND "
                "transient = 1 AND quarantined_at < ? AND (claimed_by IS NULL OR claimed_at < ?)"
                f" LIMIT ?{self.backend.skip_locked}) RETURNING source_key",
                (claimant, now, sync, sync, before, now - CLAIM_TIMEOUT_SECONDS, limit),
            ).fetchall()
        return [r[0] for r in rows]

    def release_claims(self, sync: str, claimant: str) -> None:
        with self.transaction(sync=sync) as conn:
            conn.execute("UPDATE quarantine SET claimed_by = NULL, claimed_at = NULL "
                         "WHERE sync = ? AND claimed_by = ?", (sync, claimant))

    def quarantine_frame(self, sync: str | None = None,
                         partition: str | None = None) -> pd.DataFrame:
        if sync and partition is not None:  # one partition's entries (a run's metadata)
            return self.query("SELECT * FROM quarantine WHERE sync = ? AND partition = ? "
                              "ORDER BY sync, source_key", (sync, partition))
        if sync:
            return self.query("SELECT * FROM quarantine WHERE sync = ? "
                              "ORDER BY sync, source_key", (sync,))
        return self.query("SELECT * FROM quarantine ORDER BY sync, source_key")

    def quarantine_counts(self) -> pd.DataFrame:
        return self.query("SELECT sync, stage, error_code, COUNT(*) AS rows FROM quarantine "
                          "GROUP BY sync, stage, error_code ORDER BY sync, stage, error_code")

    # -- partition leases (crm_sync/state/lease.py) --------------------------------------------------
    def take_lease(self, sync: str, partition: str, owner: str, seconds: float) -> dict | None:
        """Take the lease of a sync partition for `seconds` (free, expired, or already this
        owner's); None when taken, else the live lease of another run (owner, acquired_at,
        expires_at). Read and write in one write transaction (SQLite's BEGIN IMMEDIATE,
        PostgreSQL's advisory lock of the sync): two runs never both take it."""
        now = time.time()
        with self.transaction(sync=sync) as conn:
            row = conn.execute("SELECT owner, acquired_at, expires_at FROM partition_lease "
                               "WHERE sync = ? AND partition = ?", (sync, partition)).fetchone()
            if row is not None and row[0] != owner and row[2] > now:
                return {"owner": row[0], "acquired_at": row[1], "expires_at": row[2]}
            acquired = row[1] if row is not None and row[0] == owner else now
            conn.execute(backends.upsert("partition_lease",
                                         ("sync", "partition", "owner", "acquired_at",
                                          "expires_at"), key=2),
                         (sync, partition, owner, acquired, now + seconds))
        return None

    def renew_lease(self, sync: str, partition: str, owner: str, seconds: float) -> bool:
        """Extend `owner`'s lease; False when it is no longer theirs (expired and taken)."""
        with self.transaction(sync=sync) as conn:
            return conn.execute("UPDATE partition_lease SET expires_at = ? WHERE sync = ? AND "
                                "partition = ? AND owner = ?",
                                (time.time() + seconds, sync, partition, owner)).rowcount == 1

    def release_lease(self, sync: str, partition: str, owner: str) -> None:
        with self.transaction(sync=sync) as conn:
            conn.execute("DELETE FROM partition_lease WHERE sync = ? AND partition = ? AND "
                         "owner = ?", (sync, partition, owner))

    def lease_holder(self, sync: str, partition: str) -> dict | None:
        """The live lease of a sync partition (owner, acquired_at, expires_at), if any."""
        with self.connection() as conn:
            row = conn.execute("SELECT owner, acquired_at, expires_at FROM partition_lease "
                               "WHERE sync = ? AND partition = ? AND expires_at > ?",
                               (sync, partition, time.time())).fetchone()
        return None if row is None else dict(zip(("owner", "acquired_at", "expires_at"), row))


# One entry per source row: a new one replaces the row's earlier entry whole (its claim too).
_REPLACE_QUARANTINE = backends.upsert("quarantine", QUARANTINE_COLUMNS, key=2,
                                      reset=("claimed_by", "claimed_at"))


# A confirmed row's state. Its CRM id stays when the CRM did not say it again, and the newest
# version confirmed stays (an older row confirmed later does not make the state say older).
_UPSERT_STATE = (
    "INSERT INTO sync_state (sync, source_key, crm_id, payload_hash, synced_at, updated_at, "
    "source_digest) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sync, source_key) DO UPDATE SET "
    "crm_id = COALESCE(excluded.crm_id, sync_state.crm_id), payload_hash = "
    "excluded.payload_hash, synced_at = excluded.synced_at, source_digest = "
    "excluded.source_digest, updated_at = CASE WHEN sync_state.updated_at IS NULL OR "
    "excluded.updated_at > sync_state.updated_at THEN excluded.updated_at "
    "ELSE sync_state.updated_at END")


def _frame(conn, sql: str, params: Sequence = ()) -> pd.DataFrame:
    """What pandas.read_sql_query builds (DataFrame.from_records, coerce_float), from either
    backend's cursor."""
    cursor = conn.execute(sql, tuple(params))
    columns = [d[0] for d in cursor.description]
    return pd.DataFrame.from_records(cursor.fetchall(), columns=columns, coerce_float=True)


def _write_source_digests(conn, sync: str, digests: dict[str, str], state_rows,
                          quarantined: Sequence[QuarantineEntry]) -> None:
    """The source digests of rows found unchanged (their state is not rewritten); quarantined
    rows lose theirs (crm_sync/transform/unchanged.py)."""
    written = {str(key) for key, _, _ in state_rows}
    conn.executemany("UPDATE sync_state SET source_digest = ? WHERE sync = ? AND source_key = ?",
                     sorted(((digest, sync, str(key)) for key, digest in digests.items()
                             if str(key) not in written), key=lambda row: row[2]))
    if quarantined:
        conn.execute("UPDATE sync_state SET source_digest = NULL WHERE sync = ? AND source_key "
                     "IN (SELECT value FROM json_each(?))", (sync, json.dumps(
                         [str(q.source_key) for q in quarantined], ensure_ascii=False)))


def _count_runs(conn, sync: str,
                quarantined: Sequence[QuarantineEntry]) -> Sequence[QuarantineEntry]:
    """Each transient CRM failure with how many runs in a row it has been the row's outcome
    (`runs`): one more than its entry's when that entry is the same failure, else 1."""
    repeating = [row for row in quarantined if row.stage == "crm" and row.transient]
    if not repeating:
        return quarantined
    keys = json.dumps([row.source_key for row in repeating], ensure_ascii=False)
    before = {(key, code): runs for key, code, runs in conn.execute(
        "SELECT source_key, error_code, runs FROM quarantine WHERE sync = ? AND stage = 'crm' "
        "AND runs IS NOT NULL AND source_key IN (SELECT value FROM json_each(?))", (sync, keys))}
    return [replace(row, runs=before.get((row.source_key, row.error_code), 0) + 1)
            if row.stage == "crm" and row.transient else row
            for row in quarantined]


def _quarantine_row(sync: str, row: QuarantineEntry, now: float) -> tuple:
    values = {
        "sync": sync,
        "source_key": str(row.source_key),
        "partition": row.partition,
        "stage": row.stage,
        "error_code": row.error_code,
        "rules": row.rules or row.error_code,
        "column_name": row.column_name,
        "value": None if row.value is None else str(row.value)[:1000],
        "message": row.message,
        "http_status": row.http_status,
        "attempts": row.attempts,
        "transient": int(bool(row.transient)),
        "payload": row.payload_text(),
        "raw": None if row.raw is None else str(row.raw)[:RAW_LIMIT],
        "quarantined_at": now,
        "runs": row.runs,
        "payload_digest": row.payload_digest,
        "path": row.path,
    }
    return tuple(values[c] for c in QUARANTINE_COLUMNS)
