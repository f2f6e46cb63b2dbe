"""Key lists on the PostgreSQL store (crm_sync/state/backends.py, `_pg_sql`): the store's "key is
one of these" (`IN (SELECT value FROM json_each(?))`, one JSON array) must expand the array once,
whatever PostgreSQL knows of the table. Before, on a table without statistics (a run's `sending`
claims, just written) PostgreSQL planned a nested loop that expanded the array again for every
row: recording a chunk of 10,000 rows took 40 s of the 54 s upsert (BENCHMARKS.md, Round 2)."""

from __future__ import annotations

import json

import psycopg
import pytest

from crm_sync.state import ownership
from crm_sync.state.store import SyncStore

SYNC = "leads_to_superleap"
KEYS = [f"L{i:06d}" for i in range(2000)]


@pytest.fixture
def pg_store(postgres_url) -> SyncStore:
    return SyncStore(postgres_url)


def _claimed(store: SyncStore) -> str:
    run = ownership.new_run()
    verdicts = store.claim_for_sending(SYNC, run, [(k, "2026-11-01T00:00:00.000000Z", None)
                                                   for k in KEYS])
    assert {v.kind for v in verdicts} == {ownership.SEND}
    return run


def test_the_key_array_is_expanded_once_on_a_table_without_statistics(pg_store):
    run = _claimed(pg_store)
    with pg_store.backend.connect() as conn, conn.raw.transaction():
        plan = [row[0] for row in conn.execute(  # (ANALYZE runs the DELETE: rolled back)
            "EXPLAIN ANALYZE DELETE FROM sending WHERE sync = ? AND run = ? AND source_key IN "
            "(SELECT value FROM json_each(?))", (SYNC, run, json.dumps(KEYS)))]
        raise psycopg.Rollback()
    expanding = [line for line in plan
                 if "jsonb_array_elements_text" in line or "ProjectSet" in line]
    assert expanding and all("loops=1)" in line for line in expanding), "\n".join(plan)
    assert not any("Rows Removed by Join Filter" in line for line in plan), "\n".join(plan)
    assert len(pg_store.query("SELECT * FROM sending WHERE sync = ?", (SYNC,))) == len(KEYS)


def test_recording_the_rows_ends_every_claim_and_writes_every_state(pg_store):
    run = _claimed(pg_store)
    pg_store.record_results(SYNC, KEYS, [], [(k, f"id-{k}", "h") for k in KEYS], run=run)
    assert pg_store.query("SELECT * FROM sending WHERE sync = ?", (SYNC,)).empty
    state = pg_store.get_state(SYNC, [*KEYS[:3], "unknown", KEYS[0]])
    assert state == {k: (f"id-{k}", "h") for k in KEYS[:3]}
    assert len(pg_store.get_state(SYNC, KEYS)) == len(KEYS)
    assert pg_store.get_state(SYNC, []) == {}
