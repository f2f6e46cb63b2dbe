"""Salesforce Bulk API 2.0 jobs under way: which rows an ingest job holds, kept in the sync
store so that a run killed after the upload collects the job's results on the next run instead
of uploading the rows again (crm_sync/connectors/salesforce_bulk.py).

1. Once Salesforce created the job (state Open) and BEFORE its CSV is uploaded, one entry per
   row goes into `bulk_job_rows`, in its own durable transaction: sync, source key, job id and
   the digest of the record sent (a row that changed since is not the row the job holds).
2. The entry leaves the table in the transaction that records the row's outcome
   (`SyncStore.record_results` calls `settle`): its state, or its quarantine entry. A row whose
   job had not finished when the run gave up waiting (`IN_PROGRESS`) keeps its entry.
3. A run about to send rows first looks up their entries (`pending`): each job found is
   collected (polled to its end, its results read) and its rows get the job's outcomes;
   nothing of them is uploaded again. A job still Open (the run died before UploadComplete;
   the upload may be missing or cut short) is aborted: Salesforce processes nothing of an Open
   job, so its rows are simply sent again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Sequence

from crm_sync.state.backends import upsert

# The outcome of a row whose job was still being processed when the run stopped waiting: its
# entry stays, and the next run collects the job.
IN_PROGRESS = "BULK_JOB_IN_PROGRESS"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bulk_job_rows (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    job_id TEXT NOT NULL,         -- the Salesforce ingest job (750...) holding the row
    body_digest TEXT NOT NULL,    -- digest of the record as uploaded
    created_at REAL NOT NULL,     -- written before the upload
    PRIMARY KEY (sync, source_key)
);
"""

_REPLACE = upsert("bulk_job_rows", ("sync", "source_key", "job_id", "body_digest",
                                    "created_at"), key=2)


def create_table(backend, conn) -> None:
    """The store migration that adds the table (crm_sync/state/store_schema.py)."""
    conn.execute(backend.ddl(SCHEMA.strip().rstrip(";")))


def digest(body: bytes) -> str:
    """What tells the record uploaded from a changed one (not a security digest)."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


class BulkJobLog:
    """The bulk job entries of one sync in the sync store (SyncStore: not imported, the store
    imports this module)."""

    def __init__(self, store, sync: str):
        self.store, self.sync = store, sync

    def record(self, job_id: str, rows: Sequence[tuple[str, str]]) -> None:
        """(source key, body digest) of the rows about to be uploaded to `job_id`, committed
        and synced to disk before the upload leaves."""
        now = time.time()
        with self.store.transaction(durable=True, sync=self.sync) as conn:
            conn.executemany(_REPLACE, [(self.sync, str(key), job_id, body, now)
                                        for key, body in rows])

    def pending(self, keys: Iterable[str]) -> dict[str, tuple[str, str]]:
        """key -> (job id, body digest) of the given rows' open entries."""
        with self.store.connection() as conn:
            if conn.execute("SELECT 1 FROM bulk_job_rows WHERE sync = ? LIMIT 1",
                            (self.sync,)).fetchone() is None:
                return {}  # the common case: one lookup
            rows = conn.execute(
                "SELECT source_key, job_id, body_digest FROM bulk_job_rows WHERE sync = ? AND "
                "source_key IN (SELECT value FROM json_each(?))",
                (self.sync, _keys(keys))).fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def forget(self, job_id: str) -> None:
        """A job Salesforce no longer knows (deleted, older than its 7-day lifespan)."""
        with self.store.transaction(sync=self.sync) as conn:
            conn.execute("DELETE FROM bulk_job_rows WHERE sync = ? AND job_id = ?",
                         (self.sync, job_id))


def settle(conn, sync: str, succeeded: Sequence[str], quarantined: Sequence) -> None:
    """Inside `SyncStore.record_results`' transaction: the rows whose outcome is recorded leave
    the log (`quarantined`: QuarantineEntry values); a row whose job is still in progress
    keeps its entry."""
    if conn.execute("SELECT 1 FROM bulk_job_rows WHERE sync = ? LIMIT 1",
                    (sync,)).fetchone() is None:
        return
    known = [*succeeded, *(row.source_key for row in quarantined
                           if row.error_code != IN_PROGRESS)]
    conn.execute("DELETE FROM bulk_job_rows WHERE sync = ? AND source_key IN "
                 "(SELECT value FROM json_each(?))", (sync, _keys(known)))


def _keys(keys: Iterable) -> str:
    return json.dumps([str(k) for k in keys], ensure_ascii=False)
