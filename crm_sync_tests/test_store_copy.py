"""`crm-sync store copy SOURCE DESTINATION` (crm_sync/state/store_copy.py): a SQLite store moved
to PostgreSQL keeps what it knew, so the first run there sends nothing again (without the copy,
Superleap creates every lead a second time); a destination in use is refused; a failure on the
way leaves the destination empty; no password is printed. Real databases: SQLite files, the
session's PostgreSQL server (conftest.py), and the sandbox over HTTP."""

from __future__ import annotations

import sqlite3

import pytest

from crm_sync.cli import main
from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.state import store_copy
from crm_sync.state.store import SyncStore
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_demo import _few_rows  # a few rows of each bundled table

SYNC, DAY = "leads_to_superleap", "2026-11-01"
SECRET = "s3cr3t-Copy-Pa55"


def _superleap_run(monkeypatch, store: str) -> dict:
    """One partition of the bundled leads_to_superleap sync into `store`; its summary row."""
    monkeypatch.setenv("CRM_SYNC_STORE", store)
    [row] = sync_partitions([DAY], syncs=[SYNC], log=lambda *_: None)
    assert row["partitions_ok"] == 1, row
    return row


def _counts(store: SyncStore) -> dict[str, int]:
    with store.connection() as conn:
        return {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # nosec B608
                for t in store_copy.COPIED}


def _fill(store: SyncStore, n: int, since="1.5") -> None:
    """n rows in every copied table (`since`: the value of sending.since, REAL NOT NULL)."""
    with store.transaction() as conn:
        for i in range(n):
            key = f"K-{i:03d}"
            conn.execute("INSERT INTO sync_state (sync, source_key, crm_id, payload_hash, "
                         "synced_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (SYNC, key, f"sl-{i}", f"h{i}", 1_700_000_000.25 + i, "2026-11-01"))
            conn.execute("INSERT INTO quarantine (sync, source_key, stage, error_code, message, "
                         "quarantined_at, transient, payload) VALUES (?, ?, 'crm', 'E', 'm', "
                         "?, 1, ?)", (SYNC, key, 1.0 + i, '{"name": "é"}'))
            conn.execute("INSERT INTO write_ahead (sync, source_key, batch_id, sent_at) "
                         "VALUES (?, ?, 'b1', ?)", (SYNC, key, 2.0))
            conn.execute("INSERT INTO matching_owners (sync, matching_digest, source_key, "
                         "claimed_at) VALUES (?, ?, ?, 3.0)", (SYNC, f"d{i}", key))
            conn.execute("INSERT INTO sending (sync, source_key, updated_at, run, since) "
                         "VALUES (?, ?, 'u', 'r', ?)", (SYNC, key, since))
            conn.execute("INSERT INTO sync_links (sync, source_key, association, target_key, "
                         "target_crm_id, linked_at) VALUES (?, ?, 'company', ?, ?, 4.5)",
                         (SYNC, key, f"CO-{i}", f"c-{i}"))


def _rows(store: SyncStore, table: str) -> list[tuple]:
    with store.connection() as conn:
        columns = ", ".join(sorted(store.backend.columns(conn, table)))
        return sorted(tuple(r) for r in conn.execute(f"SELECT {columns} FROM {table}"))  # nosec B608


# -- (a) the defect the command prevents ---------------------------------------------------------
def test_a_copied_store_sends_nothing_again_and_an_empty_one_creates_every_lead_twice(
        sandbox, postgres, pg_database, postgres_url, tmp_path, monkeypatch, capsys):
    _few_rows(tmp_path, monkeypatch, lines=25)
    sqlite_store = str(tmp_path / "old.sqlite")
    first = _superleap_run(monkeypatch, sqlite_store)
    leads = len(stored(sandbox, "superleap", "lead"))
    assert first["created"] == leads > 0

    assert main(["store", "copy", sqlite_store, postgres_url]) == 0
    out = capsys.readouterr().out
    state_rows = _counts(SyncStore(sqlite_store))["sync_state"]
    assert f"sync_state: {state_rows} rows copied" in out and "verified" in out
    again = _superleap_run(monkeypatch, postgres_url)
    assert again["created"] == again["updated"] == 0
    assert again["unchanged"] == first["created"] + first["updated"]
    assert len(stored(sandbox, "superleap", "lead")) == leads

    # The contrast: the same run on an empty PostgreSQL store (no copy) creates them again.
    fresh = _superleap_run(monkeypatch, postgres.url(pg_database()))
    assert fresh["created"] == leads
    assert len(stored(sandbox, "superleap", "lead")) == 2 * leads


def test_every_row_and_value_is_copied_in_chunks_and_back(postgres_url, tmp_path,
                                                          monkeypatch):
    monkeypatch.setattr(store_copy, "CHUNK_ROWS", 3)
    writes = []
    write = store_copy._write_chunk
    monkeypatch.setattr(store_copy, "_write_chunk",
                        lambda conn, table, columns, rows: (writes.append(len(rows)),
                                                           write(conn, table, columns, rows)))
    source = SyncStore(tmp_path / "old.sqlite")
    _fill(source, 10)
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), postgres_url]) == 0
    assert max(writes) == 3 and sum(writes) == 60  # 10 rows x 6 tables, 3 at a time
    back = tmp_path / "back.sqlite"  # and PostgreSQL -> SQLite: the same rows again
    assert main(["store", "copy", postgres_url, str(back)]) == 0
    pg, again = SyncStore(postgres_url), SyncStore(back)
    for table in store_copy.COPIED:
        assert _rows(again, table) == _rows(source, table), table
        assert len(_rows(pg, table)) == 10


def test_the_copied_tables_and_the_skipped_ones_are_every_table_of_the_store(tmp_path):
    SyncStore(tmp_path / "s.sqlite")
    with sqlite3.connect(tmp_path / "s.sqlite") as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == set(store_copy.COPIED) | set(store_copy.NOT_COPIED)


# -- (b) a destination in use is refused -------------------------------------------------------------
def test_a_destination_holding_rows_is_refused_and_left_unchanged(postgres_url, tmp_path,
                                                                  capsys):
    source = SyncStore(tmp_path / "old.sqlite")
    _fill(source, 4)
    destination = SyncStore(postgres_url)
    _fill(destination, 1)
    before = {t: _rows(destination, t) for t in store_copy.COPIED}
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), postgres_url]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "not empty" in err and "sync_state: 1" in err
    assert {t: _rows(destination, t) for t in store_copy.COPIED} == before


def test_a_live_lease_in_the_destination_is_refused_too(tmp_path, capsys):
    SyncStore(tmp_path / "old.sqlite")
    destination = SyncStore(tmp_path / "new.sqlite")
    assert destination.take_lease(SYNC, DAY, "some-run", 60) is None  # taken: no holder
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), str(tmp_path / "new.sqlite")]) == 2
    assert "partition_lease: 1" in capsys.readouterr().err


def test_a_missing_source_or_one_store_twice_is_refused(tmp_path, capsys, monkeypatch):
    missing = tmp_path / "nowhere.sqlite"
    assert main(["store", "copy", str(missing), str(tmp_path / "new.sqlite")]) == 2
    assert "no sync store at" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "new.sqlite").exists()
    SyncStore(tmp_path / "one.sqlite")
    monkeypatch.setenv("CRM_SYNC_STORE", str(tmp_path / "one.sqlite"))  # the default destination
    assert main(["store", "copy", str(tmp_path / "one.sqlite")]) == 2
    assert "the same store" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # however it is spelled
    assert main(["store", "copy", "one.sqlite", f"sqlite:///{tmp_path}/one.sqlite"]) == 2
    assert "the same store" in capsys.readouterr().err


# -- (c) all or nothing ------------------------------------------------------------------------------
def test_a_row_the_destination_refuses_rolls_the_whole_copy_back(postgres_url, tmp_path,
                                                                  capsys):
    """SQLite keeps text in a REAL column; PostgreSQL refuses it, in the last table copied,
    after every other table's rows were written."""
    source = SyncStore(tmp_path / "old.sqlite")
    _fill(source, 5, since="not a time")
    assert list(store_copy.COPIED)[-1] == "sending"
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), postgres_url]) == 1
    captured = capsys.readouterr()
    assert "sync_state: 5 rows copied" in captured.out  # written, then rolled back
    assert "failed, the destination is unchanged" in captured.err
    assert set(_counts(SyncStore(postgres_url)).values()) == {0}


@pytest.mark.parametrize("destination", ["sqlite", "postgresql"])
def test_a_chunk_writer_failing_midway_leaves_the_destination_empty(destination, tmp_path,
                                                                    monkeypatch, request):
    target = (request.getfixturevalue("postgres_url") if destination == "postgresql"
              else str(tmp_path / "new.sqlite"))
    monkeypatch.setattr(store_copy, "CHUNK_ROWS", 2)
    _fill(SyncStore(tmp_path / "old.sqlite"), 6)
    write, calls = store_copy._write_chunk, []

    def failing(conn, table, columns, rows):
        calls.append(table)
        if len(calls) == 7:  # sync_state's 3 chunks, quarantine's 3, then write_ahead's first
            raise sqlite3.OperationalError("disk I/O error (simulated)")
        write(conn, table, columns, rows)

    monkeypatch.setattr(store_copy, "_write_chunk", failing)
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), target]) == 1
    assert calls[-1] == "write_ahead"
    assert set(_counts(SyncStore(target)).values()) == {0}
    # and once the cause is gone, the copy goes through into the same (still empty) store
    monkeypatch.setattr(store_copy, "_write_chunk", write)
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), target]) == 0
    assert set(_counts(SyncStore(target)).values()) == {6}


# -- (d) no password in the output -----------------------------------------------------------------
def test_the_output_names_no_password(postgres_url, tmp_path, capsys):
    with_password = postgres_url.replace("@", f":{SECRET}@", 1)  # trust auth: any password
    _fill(SyncStore(tmp_path / "old.sqlite"), 2)
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), with_password]) == 0
    assert main(["store", "copy", str(tmp_path / "old.sqlite"), with_password]) == 2  # refused
    _fill(SyncStore(tmp_path / "bad.sqlite"), 1, since="not a time")
    empty_again = SyncStore(with_password)
    with empty_again.transaction() as conn:
        for table in store_copy.COPIED:
            conn.execute(f"DELETE FROM {table}")  # nosec B608
    assert main(["store", "copy", str(tmp_path / "bad.sqlite"), with_password]) == 1  # failed
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert SECRET not in text
    assert text.count(":***@") >= 3 and "sync_state: 2 rows copied" in captured.out
