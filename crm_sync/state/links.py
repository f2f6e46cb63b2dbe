"""The links recorded per record (spec `associations:`, issue 17): table `sync_links`.

One row per (sync, source key, association): the target row's source key and the CRM id of
the target record the CRM confirmed this record linked to. The runner (crm_sync/load/links.py)
reads it to know what to unlink when a row's target changes or goes, and writes it in the
transaction that records the row's state (`SyncStore.record_results`): the links and the state
of a record never disagree after a crash. Created by migration `create_links_table`
(crm_sync/state/store_schema.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from crm_sync.state.backends import upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS sync_links (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    association TEXT NOT NULL,    -- the association's name in the spec
    target_key TEXT NOT NULL,     -- the target row's source key (of the association's sync)
    target_crm_id TEXT,           -- the target record's CRM id when it was linked
    linked_at REAL NOT NULL,
    PRIMARY KEY (sync, source_key, association)
);
"""

_REPLACE = upsert("sync_links", ("sync", "source_key", "association", "target_key",
                                 "target_crm_id", "linked_at"), key=3)

# (source key, association, target key or None: no link any more, target CRM id)
LinkRow = tuple[str, str, str | None, str | None]


def create_links_table(backend, conn) -> None:
    """Migration: table sync_links (links recorded per record)."""
    conn.execute(backend.ddl(SCHEMA.strip().rstrip(";")))


def read(conn, sync: str, keys: Iterable[str]) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(source key, association) -> (target key, target CRM id) recorded for `keys`."""
    wanted = json.dumps([str(k) for k in keys], ensure_ascii=False)
    return {(key, name): (target, crm_id) for key, name, target, crm_id in conn.execute(
        "SELECT source_key, association, target_key, target_crm_id FROM sync_links WHERE "
        "sync = ? AND source_key IN (SELECT value FROM json_each(?))", (sync, wanted))}


def write(conn, sync: str, rows: Sequence[LinkRow], now: float) -> None:
    """Record the links of records the CRM confirmed (a None target: the link is gone)."""
    gone = [(sync, key, name) for key, name, target, _ in rows if target is None]
    if gone:
        conn.executemany("DELETE FROM sync_links WHERE sync = ? AND source_key = ? AND "
                         "association = ?", gone)
    kept = [(sync, key, name, target, crm_id, now) for key, name, target, crm_id in rows
            if target is not None]
    if kept:
        conn.executemany(_REPLACE, kept)


def forget(conn, sync: str, keys: Sequence[str]) -> None:
    """The links of records that are gone (mirror deletes)."""
    conn.execute("DELETE FROM sync_links WHERE sync = ? AND source_key IN "
                 "(SELECT value FROM json_each(?))", (sync, json.dumps(list(keys))))
