"""Table `sync_links` of the sync store (crm_sync/state/links.py), on SQLite and PostgreSQL: the
links of confirmed rows written with their state, replaced, removed, forgotten with the record,
and the migration that adds it to a store of the version before."""

from __future__ import annotations

from crm_sync.state import backends, store_schema
from crm_sync.state.links import create_links_table
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.state.store import SyncStore
from crm_sync_tests.conftest import BACKENDS

STORE_BACKENDS = BACKENDS
SYNC = "projects_to_brevo"


def _links(store: SyncStore) -> list[tuple]:
    frame = store.links_frame(SYNC)
    return [tuple(r) for r in frame[["source_key", "association", "target_key",
                                     "target_crm_id"]].itertuples(index=False)]


def test_links_are_written_with_the_state_replaced_and_removed(store):
    store.record_results(SYNC, ["PR-1", "PR-2"], [], [("PR-1", "11", "h1"), ("PR-2", "12", "h2")],
                         links=[("PR-1", "client", "CO-1", "101"),
                                ("PR-2", "client", "CO-2", "102"),
                                ("PR-2", "vendor", "V-1", "201")])
    assert _links(store) == [("PR-1", "client", "CO-1", "101"), ("PR-2", "client", "CO-2", "102"),
                             ("PR-2", "vendor", "V-1", "201")]
    assert store.get_links(SYNC, ["PR-2", "PR-9"]) == {("PR-2", "client"): ("CO-2", "102"),
                                                      ("PR-2", "vendor"): ("V-1", "201")}
    # PR-1 now links CO-3; PR-2's vendor link is gone (its column emptied)
    store.record_results(SYNC, ["PR-1", "PR-2"], [], [("PR-1", "11", "h3"), ("PR-2", "12", "h4")],
                         links=[("PR-1", "client", "CO-3", "103"), ("PR-2", "vendor", None, None)])
    assert _links(store) == [("PR-1", "client", "CO-3", "103"), ("PR-2", "client", "CO-2", "102")]
    assert store.get_links("another_sync", ["PR-1"]) == {}
    assert store.forget(SYNC, ["PR-1"]) == 1  # the record is gone: so are its links
    assert _links(store) == [("PR-2", "client", "CO-2", "102")]


def test_a_failed_transaction_writes_no_link(store):
    bad = QuarantineEntry("PR-1", "crm", "X", "m")
    try:
        store.record_results(SYNC, ["PR-1"], [bad], [("PR-1", "11", None)],  # NOT NULL hash
                             links=[("PR-1", "client", "CO-1", "101")])
    except store.errors:
        pass
    else:
        raise AssertionError("a NULL payload hash must fail the transaction")
    assert _links(store) == [] and store.state_frame(SYNC).empty


def test_the_migration_adds_the_table_to_a_store_of_the_version_before(store_url):
    backend = backends.open_backend(backends.parse(store_url))
    before = store_schema.MIGRATIONS.index(create_links_table)  # the version without it
    store_schema.upgrade(backend, upto=before)
    with backend.connect() as conn:
        assert not backend.has_table(conn, "sync_links")
    store = SyncStore(store_url)
    with store.connection() as conn:
        assert backend.has_table(conn, "sync_links")
        assert store_schema.schema_version(store.backend, conn) == store_schema.CURRENT_VERSION
        # CREATE TABLE IF NOT EXISTS: run again (another order of migrations at a merge), a no-op
    with store.transaction() as conn:
        create_links_table(store.backend, conn)
    store.record_results(SYNC, ["PR-1"], [], [("PR-1", "11", "h")],
                         links=[("PR-1", "client", "CO-1", "101")])
    assert _links(store) == [("PR-1", "client", "CO-1", "101")]
