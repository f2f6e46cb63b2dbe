"""Bulk writes on the PostgreSQL store (crm_sync/state/pg_bulk.py): an executemany of an INSERT or
upsert of `THRESHOLD` rows or more goes through COPY and one INSERT ... SELECT per round, and
must leave exactly what executemany row by row leaves, and what SQLite's path leaves: duplicate
keys in one batch (the second row of a key sees the first one's result), values COPY's text
format has to escape, NULLs, failures that must roll back whole."""

from __future__ import annotations

import psycopg
import pytest

from crm_sync.state import backends, bulkjobs, links, ownership, pg_bulk, store as store_module
from crm_sync.state import writeahead
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.state.store import SyncStore
from crm_sync.state.writeahead import WriteAheadLog

SYNC = "leads_to_superleap"
N = pg_bulk.THRESHOLD + 70  # a batch over the threshold
AWKWARD = ["tab\there", "line\nbreak", "cr\rlf\r\n", "back\\slash", "\\N", "\\.", "\\t",
           "", " ", "naïve café", "日本語", "emoji 🙂", "e\u0301", "quote ' \" ;", "%s %(x)s"]
LEASE = backends.upsert("partition_lease", ("sync", "partition", "owner", "acquired_at",
                                            "expires_at"), key=2)


@pytest.fixture
def stores(tmp_path, postgres_url, pg_database, postgres):
    """The same operations go to: SQLite, PostgreSQL (COPY), PostgreSQL with executemany."""
    return {"sqlite": SyncStore(tmp_path / "s.sqlite"), "copy": SyncStore(postgres_url),
            "executemany": SyncStore(postgres.url(pg_database()))}


@pytest.fixture
def copies(monkeypatch) -> list[str]:
    """The COPY statements pg_bulk sends (a test sees the path it means to test was taken)."""
    sent: list[str] = []
    copy = pg_bulk._copy

    def spy(raw, statement, rows):
        sent.append(statement)
        return copy(raw, statement, rows)

    monkeypatch.setattr(pg_bulk, "_copy", spy)
    return sent


def _each(stores, monkeypatch, write) -> None:
    """write(store) on every store, executemany forced on the third."""
    for name, store in stores.items():
        with monkeypatch.context() as patch:
            if name == "executemany":
                patch.setattr(pg_bulk, "THRESHOLD", 10**9)
            write(store)


def _table(store: SyncStore, table: str, drop=()) -> list[tuple]:
    frame = store.query(f"SELECT * FROM {table}").drop(columns=list(drop))  # nosec B608
    frame = frame.astype(object).where(frame.notna(), None)
    return sorted(tuple(row) for row in frame.itertuples(index=False))


def test_duplicate_keys_in_one_batch_end_as_executemany_row_by_row_leaves_them(
        stores, copies, monkeypatch):
    keys = [f"L{i:04d}" for i in range(N)]
    # L0001 three times: a CRM id, then none (COALESCE keeps the first), then a newer hash;
    # L0002 twice, far apart. Keeping only the last row of a key would lose L0001's id.
    rows = [(k, f"id-{k}", "h1") for k in keys]
    rows[5:5] = [("L0001", None, "h2")]
    rows += [("L0002", "id-second", "h9"), ("L0001", None, "h3")]

    def write(store):
        store.record_results(SYNC, [], [], rows, versions={"L0001": "2026-11-02"})
    _each(stores, monkeypatch, write)
    assert copies == ["COPY _bulk_sync_state FROM STDIN"]  # with each row's round
    tables = {name: _table(store, "sync_state", drop=["synced_at"])
              for name, store in stores.items()}
    assert tables["copy"] == tables["executemany"] == tables["sqlite"]
    state = stores["copy"].get_state(SYNC, ["L0001", "L0002", "L0003"])
    assert state == {"L0001": ("id-L0001", "h3"), "L0002": ("id-second", "h9"),
                     "L0003": ("id-L0003", "h1")}
    assert len(tables["copy"]) == N


def test_duplicate_creates_in_one_write_ahead_batch_keep_the_last_entry(stores, copies,
                                                                        monkeypatch):
    entries = [(f"L{i:04d}", {"external_id": f"x{i}"}) for i in range(N)]
    entries += [("L0007", {"external_id": "again"}), ("L0007", {"external_id": "last"})]
    _each(stores, monkeypatch, lambda store: WriteAheadLog(store, SYNC).log(entries))
    assert copies
    assert {name: WriteAheadLog(store, SYNC).pending(["L0007"])["L0007"].match_value
            for name, store in stores.items()} == dict.fromkeys(stores, '{"external_id":"last"}')
    tables = [_table(store, "write_ahead", drop=["batch_id", "sent_at"])
              for store in stores.values()]
    assert tables[0] == tables[1] == tables[2] and len(tables[0]) == N


def test_keys_equal_as_text_are_one_key_as_they_are_row_by_row(stores, copies, monkeypatch):
    rows = [(i, f"id-{i}", "h1") for i in range(N)] + [(str(N - 1), None, "h2")]
    _each(stores, monkeypatch, lambda store: store.record_results(SYNC, [], [], rows))
    assert copies == ["COPY _bulk_sync_state FROM STDIN"]
    for store in stores.values():
        assert len(store.state_frame(SYNC)) == N
        assert store.get_state(SYNC, [str(N - 1)]) == {str(N - 1): (f"id-{N - 1}", "h2")}


def test_a_batch_under_the_threshold_stays_on_executemany_and_both_write_the_same(
        postgres_url, copies):
    store = SyncStore(postgres_url)
    for size in (pg_bulk.THRESHOLD - 1, pg_bulk.THRESHOLD):
        run = ownership.new_run()
        rows = [(f"K{size}-{i}", "2026-11-01T00:00:00.000000Z", None) for i in range(size)]
        store.claim_for_sending(SYNC, run, rows)
        claimed = store.query("SELECT source_key FROM sending WHERE run = ?", (run,))
        assert sorted(claimed.source_key) == sorted(k for k, _, _ in rows)
    assert len(copies) == 1 and copies[0].startswith("COPY _bulk_sending (")  # the second only


def test_values_copy_must_escape_nulls_and_unicode_arrive_as_executemany_sends_them(
        stores, copies, monkeypatch):
    entries = [QuarantineEntry(source_key=f"Q{i:04d}\t{AWKWARD[i % len(AWKWARD)]}",
                               stage="crm", error_code="E", partition=None,
                               message=AWKWARD[i % len(AWKWARD)],
                               value=AWKWARD[(i + 1) % len(AWKWARD)] if i % 3 else None,
                               raw="nul\x00inside" if i == 4 else None,
                               payload={"v": AWKWARD[i % len(AWKWARD)], "n": None},
                               http_status=500 if i % 2 else None, attempts=i)
               for i in range(N)]
    _each(stores, monkeypatch, lambda store: store.record_results(SYNC, [], entries))
    assert copies
    tables = {name: _table(store, "quarantine", drop=["quarantined_at"])
              for name, store in stores.items()}
    assert tables["copy"] == tables["executemany"]
    # SQLite text holds NUL, PostgreSQL's cannot (backends._pg_value: U+FFFD), on both paths
    lite = [tuple(v.replace("\x00", "\ufffd") if isinstance(v, str) else v for v in row)
            for row in tables["sqlite"]]
    assert tables["copy"] == lite
    got = stores["copy"].quarantine_frame(SYNC)
    assert set(got.message) == set(AWKWARD) and got.value.isna().sum() == -(-N // 3)
    assert got.raw.dropna().tolist() == ["nul\ufffdinside"]


def test_floats_and_integers_arrive_exactly(stores, copies, monkeypatch):
    floats = [1 / 3, 0.1 + 0.2, 1e-300, 1.7976931348623157e308, 1_800_000_000.123456, -0.0]
    rows = [(SYNC, f"p{i}", "o", floats[i % len(floats)], i) for i in range(N)]

    def write(store):
        with store.transaction(sync=SYNC) as conn:
            conn.executemany(LEASE, rows)
    _each(stores, monkeypatch, write)
    assert copies
    tables = [_table(store, "partition_lease") for store in stores.values()]
    assert tables[0] == tables[1] == tables[2]
    assert sorted(tables[1]) == sorted((s, p, o, float(a), float(e)) for s, p, o, a, e in rows)


def test_a_bulk_write_outside_a_transaction_is_written_whole(postgres_url, copies):
    store = SyncStore(postgres_url)
    with store.connection() as conn:
        conn.executemany(LEASE, [(SYNC, f"p{i}", "o", 1.0, 2.0) for i in range(N)])
    assert copies and len(store.query("SELECT * FROM partition_lease")) == N


def test_a_failing_bulk_write_rolls_back_whole_and_the_connection_writes_again(
        stores, copies, monkeypatch):
    bad = [(SYNC, f"p{i}", "o", 1.0, 2.0) for i in range(N)]
    bad[N // 2] = (SYNC, "p-bad", None, 1.0, 2.0)  # owner NOT NULL
    errors = {}
    for name in ("copy", "executemany"):
        with monkeypatch.context() as patch:
            if name == "executemany":
                patch.setattr(pg_bulk, "THRESHOLD", 10**9)
            with pytest.raises(psycopg.Error) as failure:
                with stores[name].transaction(sync=SYNC) as conn:
                    conn.executemany(LEASE, bad)
            errors[name] = type(failure.value)
    assert errors["copy"] is errors["executemany"] is psycopg.errors.NotNullViolation
    store = stores["copy"]
    assert store.query("SELECT * FROM partition_lease").empty
    # The pooled connection is reused: no temporary table is left behind, and two bulk
    # writes of one table in one transaction each get their own.
    with store.transaction(sync=SYNC) as conn:
        conn.executemany(LEASE, [(SYNC, f"p{i}", "o", 1.0, 2.0) for i in range(N)])
        conn.executemany(LEASE, [(SYNC, f"p{i}", "o2", 1.0, 3.0) for i in range(N)])
    assert set(store.query("SELECT owner FROM partition_lease").owner) == {"o2"}
    assert len(copies) >= 3


def test_a_plain_insert_with_a_duplicate_key_fails_as_row_by_row_and_writes_nothing(
        postgres_url, copies):
    store = SyncStore(postgres_url)
    insert = "INSERT INTO sending (sync, source_key, updated_at, run, since) VALUES (?, ?, ?, ?, ?)"
    rows = [(SYNC, f"k{i}", "v", "r", 1.0) for i in range(N)] + [(SYNC, "k3", "v", "r", 1.0)]
    with pytest.raises(psycopg.errors.UniqueViolation):
        with store.transaction(sync=SYNC) as conn:
            conn.executemany(insert, rows)
    assert copies == ["COPY sending (sync, source_key, updated_at, run, since) FROM STDIN"]
    assert store.query("SELECT * FROM sending").empty


def test_every_bulk_statement_of_the_store_takes_the_copy_path():
    statements = [ownership._REPLACE_SENDING, ownership._REPLACE_OWNER, writeahead._REPLACE,
                  links._REPLACE, bulkjobs._REPLACE, store_module._REPLACE_QUARANTINE,
                  store_module._UPSERT_STATE, LEASE]
    parsed = [pg_bulk.parse(sql) for sql in statements]
    assert all(parsed), [sql for sql, bulk in zip(statements, parsed) if bulk is None]
    state = pg_bulk.parse(store_module._UPSERT_STATE)
    assert (state.table, state.key) == ("sync_state", (0, 1))
    assert state.conflict.startswith("ON CONFLICT (sync, source_key) DO UPDATE SET crm_id")


def test_the_conflict_clause_is_sent_as_written():
    sql = ("INSERT INTO t (a,\n b) VALUES (?,\n ?)\n ON CONFLICT (a) DO UPDATE SET b = "
           "'x  y' || excluded.b")
    bulk = pg_bulk.parse(sql)
    assert (bulk.columns, bulk.key) == (("a", "b"), (0,))
    assert bulk.conflict == "ON CONFLICT (a) DO UPDATE SET b = 'x  y' || excluded.b"


@pytest.mark.parametrize("sql", [
    "UPDATE sync_state SET source_digest = ? WHERE sync = ? AND source_key = ?",
    "DELETE FROM sending WHERE sync = ? AND source_key = ?",
    "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = ?",
    "INSERT INTO t (a, b) VALUES (?, 1)",
    "INSERT INTO t (a, b) VALUES (?)",
    "INSERT INTO t (a, b) SELECT a, b FROM u",
    "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (c) DO NOTHING",
    "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT DO NOTHING",
])
def test_statements_copy_cannot_do_stay_on_executemany(sql):
    assert pg_bulk.parse(sql) is None
