"""The sync store's backends (crm_sync/state/backends.py) and its schema versions
(crm_sync/state/store_schema.py): locations, the password kept out of every text, the write
lock across processes on PostgreSQL, durable commits, and upgrades in place."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import psycopg
import pytest

from crm_sync.errors import StoreError, StoreUnreachable
from crm_sync.state import backends, store_schema
from crm_sync.state.ownership import SEND
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.state.store import SyncStore
from crm_sync_tests.conftest import BACKENDS
from crm_sync_tests.bundled_spec import bundled_unlinked

FORK = multiprocessing.get_context("fork")
FIXTURE = Path(__file__).parent / "store_fixtures" / "store_3002afe.sql"
SECRET = "s3cr3t-Pa55word"
SYNC = "leads_to_superleap"


# -- locations -----------------------------------------------------------------------------------
def test_a_path_a_sqlite_url_and_postgresql_urls_are_understood(tmp_path):
    assert backends.parse(tmp_path / "a.sqlite") == backends.Location("sqlite", tmp_path / "a.sqlite")
    assert backends.parse(f"sqlite:///{tmp_path}/b.sqlite").path == tmp_path / "b.sqlite"
    for url in ("postgresql://u@db:5433/crm", "postgresql+psycopg://u@db:5433/crm"):
        where = backends.parse(url)
        assert (where.kind, where.url.host, where.url.port, where.url.database) == \
            ("postgresql", "db", 5433, "crm")
        assert where.url.drivername == "postgresql+psycopg"
    for bad in ("mysql://u@db/crm", "postgresql+psycopg2://u@db/crm", "sqlite://"):
        with pytest.raises(StoreError, match="unsupported sync store URL"):
            backends.parse(bad)


def test_the_password_never_shows(postgres):
    url = f"postgresql+psycopg://crm_sync:{SECRET}@127.0.0.1:1/crm"  # nothing listens on port 1
    where = backends.parse(url)
    shown = f"{where} {where!r} {where.display}"
    assert SECRET not in shown and "crm_sync:***@127.0.0.1:1/crm" in where.display
    with pytest.raises(StoreUnreachable) as failure:
        SyncStore(url)
    text = f"{failure.value} {failure.value!r} {failure.value.__cause__!r}"
    assert SECRET not in text
    assert "127.0.0.1:1" in text and "'crm'" in text and "'crm_sync'" in text
    # A real server refusing the password: the driver's reason, without it.
    with psycopg.connect(postgres.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE pw_user LOGIN PASSWORD '{SECRET}'")
    refused = f"postgresql+psycopg://pw_user:{SECRET}@{postgres.host}:{postgres.port}/nodb"
    with pytest.raises(StoreUnreachable) as failure:
        SyncStore(refused)
    assert SECRET not in str(failure.value) and "nodb" in str(failure.value)


def test_the_store_and_its_resource_show_the_url_without_its_password(postgres_url):
    from crm_sync.pipeline.assets import _where

    with_password = postgres_url.replace("crm_sync_test@", f"crm_sync_test:{SECRET}@")
    store = SyncStore(with_password)  # trust authentication: the password is not checked
    assert store.path is None and SECRET not in f"{store!r} {store.display} {_where(store)}"
    assert store.connect_string() == with_password  # (for a child process, never shown)


def test_a_pipeline_store_url_from_the_environment_stays_an_env_var(postgres_url, monkeypatch):
    from crm_sync.project import build_resources

    import dagster as dg

    monkeypatch.setenv("CRM_SYNC_STORE", postgres_url)
    resource = build_resources()["store"]
    assert isinstance(resource.path, dg.EnvVar) and resource.path == "CRM_SYNC_STORE"
    assert resource.get().display == postgres_url


# -- PostgreSQL: types, durability, the write lock -----------------------------------------------
def test_timestamps_keep_their_fraction_of_a_second(postgres_url):
    store = SyncStore(postgres_url)
    store.take_lease(SYNC, "2026-11-01", "me", seconds=0.123456)
    lease = store.lease_holder(SYNC, "2026-11-01")
    assert lease["expires_at"] - lease["acquired_at"] == pytest.approx(0.123456, abs=1e-6)
    kinds = store.query("SELECT data_type FROM information_schema.columns WHERE column_name "
                        "IN ('expires_at', 'quarantined_at', 'sent_at', 'synced_at')")
    assert set(kinds["data_type"]) == {"double precision"}


def test_a_durable_transaction_commits_synchronously_whatever_the_default(postgres,
                                                                          postgres_url):
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres.dsn(database), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" SET synchronous_commit = off')
    store = SyncStore(postgres_url)
    with store.transaction(sync=SYNC) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
    with store.transaction(durable=True, sync=SYNC) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"


def test_write_transactions_of_one_sync_wait_for_each_other_and_not_for_other_syncs(
        postgres_url):
    store = SyncStore(postgres_url)
    holding, release, order = threading.Event(), threading.Event(), []

    def hold():
        with store.transaction(sync="a"):
            holding.set()
            release.wait(10)
            order.append("a released")

    def write(sync: str):
        with store.transaction(sync=sync):
            order.append(f"{sync} written")

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(10)
    same, other = threading.Thread(target=write, args=("a",)), threading.Thread(target=write,
                                                                                args=("b",))
    same.start(), other.start()
    other.join(10)
    time.sleep(0.3)
    assert order == ["b written"]  # the other sync did not wait; the same sync does
    release.set()
    for thread in (holder, same):
        thread.join(10)
    assert order == ["b written", "a released", "a written"]


ITEMS = 40
RACERS = 6


def _race(location: str, start_at: float, out: str) -> None:
    """One racing process: take every lease, claim every transient row (one at a time) and
    claim every key for sending; write down what it won."""
    store = SyncStore(location)
    run, won = f"{os.getpid()}:racer", {"lease": [], "transient": [], "sending": []}
    while time.time() < start_at:
        pass
    for i in range(ITEMS):
        if store.take_lease(SYNC, f"p{i}", run, seconds=600) is None:
            won["lease"].append(i)
        verdict, = store.claim_for_sending(SYNC, run, [(f"K{i}", "2026-11-01T00:00:00Z",
                                                        f"digest-{i}")])
        if verdict.kind == SEND:
            won["sending"].append(i)
        won["transient"].extend(store.claim_transient(SYNC, run, limit=1))
    while claimed := store.claim_transient(SYNC, run, limit=1):
        won["transient"].extend(claimed)
    Path(out).write_text(json.dumps(won))


def test_racing_processes_win_each_lease_claim_and_transient_row_exactly_once(postgres_url,
                                                                              tmp_path):
    """Fails without the write lock (checked by removing it: leases and sending claims were
    won twice)."""
    store = SyncStore(postgres_url)
    store.record_results(SYNC, [], [QuarantineEntry(f"T{i}", "crm", "HTTP_503", "503",
                                                    transient=True) for i in range(ITEMS)])
    time.sleep(0.01)  # (claimed: quarantined before the claim)
    start_at, outs = time.time() + 1.0, [tmp_path / f"racer-{n}.json" for n in range(RACERS)]
    racers = [FORK.Process(target=_race, args=(postgres_url, start_at, str(out)))
              for out in outs]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(120)
    assert [racer.exitcode for racer in racers] == [0] * RACERS
    won = [json.loads(out.read_text()) for out in outs]
    expected = {"lease": list(range(ITEMS)), "sending": list(range(ITEMS)),
                "transient": sorted(f"T{i}" for i in range(ITEMS))}
    winners = {kind: sorted(item for w in won for item in w[kind]) for kind in expected}
    wrong = {kind: len(winners[kind]) - len(set(winners[kind])) for kind in expected
             if winners[kind] != expected[kind]}
    assert not wrong, f"items won more than once (or never), by kind: {wrong}"


def _open(location: str, start_at: float) -> None:
    while time.time() < start_at:
        pass
    SyncStore(location)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_concurrent_first_opens_of_a_new_store_all_succeed(store_url):
    start_at = time.time() + 1.0
    openers = [FORK.Process(target=_open, args=(store_url, start_at)) for _ in range(RACERS)]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(60)
    assert [opener.exitcode for opener in openers] == [0] * RACERS
    store = SyncStore(store_url)
    with store.connection() as conn:
        assert store_schema.schema_version(store.backend, conn) == store_schema.CURRENT_VERSION


# -- versions and upgrades -----------------------------------------------------------------------
def test_a_store_made_by_the_code_before_versions_upgrades_in_place(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(FIXTURE.read_text())
    store = SyncStore(path)
    assert store.query("SELECT value FROM store_meta")["value"].tolist() == \
        [str(store_schema.CURRENT_VERSION)]
    state = store.state_frame(SYNC).to_dict("records")
    assert [(r["source_key"], r["crm_id"], r["updated_at"]) for r in state] == \
        [("LD-1", "sl-1", "2026-11-01T10:00:00Z")]
    entry = store.quarantine_frame(SYNC).iloc[0]
    assert (entry["source_key"], entry["path"], entry["runs"], entry["transient"]) == \
        ("LD-2", "sync", 1, 1)
    assert store.query("SELECT owner FROM partition_lease")["owner"].tolist() == \
        ["run old (pid 1 on here)"]  # (expired by now: written when the fixture was made)
    from crm_sync.state.writeahead import WriteAheadLog

    assert WriteAheadLog(store, SYNC).pending()["LD-3"].match_value == '"LD-3"'
    assert store.claim_transient(SYNC, "me", before=time.time() + 1) == ["LD-2"]


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("version", [1, 3])
def test_a_store_at_an_older_version_opens_at_the_current_one(store_url, version):
    backend = backends.open_backend(backends.parse(store_url))
    assert store_schema.upgrade(backend, upto=version) == 0
    with backend.transaction() as conn:
        assert "path" not in backend.columns(conn, "quarantine")
        conn.execute("INSERT INTO quarantine (sync, source_key, partition, stage, error_code, "
                     "message, quarantined_at) VALUES (?, 'a', 'replay', 'crm', 'X', 'm', 0)",
                     (SYNC,))
        conn.execute("INSERT INTO sync_state (sync, source_key, crm_id, payload_hash, "
                     "synced_at) VALUES (?, 'b', 'id-b', 'h', 1.5)", (SYNC,))
    store = SyncStore(store_url)
    with store.connection() as conn:
        assert store_schema.schema_version(store.backend, conn) == store_schema.CURRENT_VERSION
    entry = store.quarantine_frame(SYNC).iloc[0]
    assert (entry["source_key"], entry["path"], entry["partition"]) == ("a", "replay", None)
    assert store.get_state(SYNC, ["b"]) == {"b": ("id-b", "h")}
    assert store_schema.upgrade(store.backend) == store_schema.CURRENT_VERSION  # idempotent


def test_a_store_newer_than_this_code_is_refused_with_a_message(store):
    with store.transaction() as conn:
        conn.execute("UPDATE store_meta SET value = '999' WHERE name = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 999, newer than this crm_sync"):
        SyncStore(store.path)


def test_a_dagster_run_on_a_store_url_with_a_password_writes_it_nowhere(postgres_url, tmp_path,
                                                                        monkeypatch, caplog):
    """As test_security.py checks tokens: every event of the runs and every file of the
    instance, a run that works and one whose store is unreachable."""
    import dagster as dg
    from dagster._serdes import serialize_value

    from crm_sync.pipeline.assets import build_assets
    from crm_sync.project import build_resources
    from crm_sync.spec import load_spec

    [asset] = [a for a in build_assets(bundled_unlinked()) if a.key.path[-1] == "quarantine"]
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    texts = []
    for url in (postgres_url.replace("crm_sync_test@", f"crm_sync_test:{SECRET}@"),
                f"postgresql+psycopg://crm_sync:{SECRET}@127.0.0.1:1/crm"):
        monkeypatch.setenv("CRM_SYNC_STORE", url)
        result = dg.materialize([asset], resources=build_resources(), instance=instance,
                                raise_on_error=False)
        texts += [serialize_value(event) for event in result.all_events]
    assert result.success is False and "127.0.0.1:1" in " ".join(texts)  # (the failure named)
    texts += [str(record) for record in instance.get_event_records(
        dg.EventRecordsFilter(dg.DagsterEventType.RUN_FAILURE))]
    texts += [path.read_text(errors="replace") for path in (tmp_path / "dagster_home").rglob("*")
              if path.is_file() and path.suffix != ".db"]
    texts += [path.read_bytes().decode(errors="replace")
              for path in (tmp_path / "dagster_home").rglob("*.db")]
    texts.append(caplog.text)
    assert not [text for text in texts if SECRET in text]


def test_a_schema_named_in_the_url_holds_the_tables(postgres, postgres_url):
    with psycopg.connect(postgres.dsn(postgres_url.rsplit("/", 1)[1]), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA crm_sync")
    store = SyncStore(f"{postgres_url}?options=-csearch_path%3Dcrm_sync")
    store.take_lease(SYNC, "2026-11-01", "me", seconds=60)
    tables = store.query("SELECT table_schema, table_name FROM information_schema.tables "
                         "WHERE table_name = 'partition_lease'")
    assert tables.values.tolist() == [["crm_sync", "partition_lease"]]
