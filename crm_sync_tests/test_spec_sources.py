"""Sources configured in the spec (issue 16, item 5): a `connections:` block (here a SQLite
database by SQLAlchemy URL from an environment variable, a real database), a sync's `source:`
as a table or a SQL query of a connection, and `cursor_column:` for the daily partitions,
through the real pipeline (Dagster, the sandbox over HTTP)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from crm_sync.definitions import build_resources
from crm_sync.errors import SourceError, SpecError
from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

SYNC = "leads_to_superleap"
ENV = "CRM_SYNC_TEST_WAREHOUSE_URL"


def _lead(key: str, stamp: str, column: str = "updated_at", **values) -> dict:
    return {"lead_id": key, "superleap_id": None, "name": f"Name {key}",
            "email": f"{key.lower()}@example.com", "phone": None, "status": "new",
            "source": "web", column: stamp, **values}


def _database(tmp_path: Path, table: str, rows: list[dict]) -> str:
    """A SQLite database file holding `rows` as `table`; its SQLAlchemy URL."""
    url = f"sqlite:///{tmp_path / 'warehouse.sqlite'}"
    engine = sa.create_engine(url)
    pd.DataFrame(rows).to_sql(table, engine, index=False, if_exists="replace")
    engine.dispose()
    return url


def _spec(tmp_path: Path, source, connections: dict | None = None, **extra):
    """The bundled Superleap lead sync reading `source`, with a `connections:` block."""
    base = bundled_raw()
    sync = next(s for s in base["syncs"] if s["name"] == SYNC)
    sync = {**sync, "schedule": None, "source": source, **extra}
    raw = {"start_date": base["start_date"], "syncs": [sync],
           "connections": connections if connections is not None
           else {"warehouse": {"url": {"env": ENV}}}}
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path), path


def _in_crm(sandbox) -> set[str]:
    return {r["external_id"] for r in stored(sandbox, "superleap", "lead")}


def _sync(spec, day: str) -> list[dict]:
    """One partition of every sync of `spec`, as `crm-sync sync` runs it."""
    summary = sync_partitions([day], spec=spec, log=lambda _: None)
    assert all(row["partitions_failed"] == 0 for row in summary), summary
    return summary


def test_a_connection_by_url_from_the_environment_syncs_one_partition(
        sandbox, store, tmp_path, monkeypatch):
    url = _database(tmp_path, "crm_leads", [
        _lead("W1", "2026-11-02 09:00:00"), _lead("W2", "2026-11-02 17:30:00"),
        _lead("W3", "2026-11-03 08:00:00")])
    monkeypatch.setenv(ENV, url)
    spec, path = _spec(tmp_path, {"connection": "warehouse", "table": "crm_leads"})
    sync = spec.sync(SYNC)
    assert sync.source_asset == "source_warehouse_crm_leads"
    # the spec keeps the variable's name, not its value
    assert url not in sync.model_dump_json() and url not in spec.model_dump_json()
    [row] = _sync(spec, "2026-11-02")
    assert (row["sync"], row["partitions_ok"], row["partitions_failed"]) == (SYNC, 1, 0)
    assert (row["rows_read"], row["quarantined"]) == (2, 0)
    assert _in_crm(sandbox) == {"W1", "W2"}


def test_a_query_source_is_read_as_the_sync_asset(sandbox, store, tmp_path, monkeypatch):
    rows = [_lead("Q1", "2026-11-02 09:00:00"), _lead("Q2", "2026-11-02 10:00:00", status="lost"),
            _lead("Q3", "2026-11-02 11:00:00")]
    monkeypatch.setenv(ENV, _database(tmp_path, "all_leads", rows))
    spec, _ = _spec(tmp_path, {"connection": "warehouse",
                               "query": "SELECT * FROM all_leads WHERE status <> 'lost'"})
    assert spec.sync(SYNC).source_asset == f"source_{SYNC}"
    assert f"source_{SYNC}" in {a.key.path[-1] for a in build_assets(spec)}
    _sync(spec, "2026-11-02")
    assert _in_crm(sandbox) == {"Q1", "Q3"}


def test_cursor_column_puts_rows_in_the_day_of_that_column(sandbox, store, tmp_path,
                                                           monkeypatch):
    # `updated_at` says another day than `modified`: the partitions follow `modified`
    rows = [_lead("C1", "2026-11-02 09:00:00", column="modified", updated_at="2026-11-05"),
            _lead("C2", "2026-11-03 09:00:00", column="modified", updated_at="2026-11-02"),
            _lead("C3", "2026-11-02 23:59:00", column="modified", updated_at="2026-11-02")]
    monkeypatch.setenv(ENV, _database(tmp_path, "leads", rows))
    spec, _ = _spec(tmp_path, {"connection": "warehouse", "table": "leads"},
                    cursor_column="modified")
    _sync(spec, "2026-11-02")
    assert _in_crm(sandbox) == {"C1", "C3"}
    _sync(spec, "2026-11-03")
    assert _in_crm(sandbox) == {"C1", "C2", "C3"}


def test_a_query_on_a_duckdb_file_connection(sandbox, store, tmp_path, monkeypatch):
    import duckdb

    path = tmp_path / "lake.duckdb"
    frame = pd.DataFrame([_lead("K1", "2026-11-02 09:00:00"), _lead("K2", "2026-11-02 10:00:00"),
                          _lead("K3", "2026-11-04 10:00:00")])
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE people AS SELECT * FROM frame")
    monkeypatch.setenv("CRM_SYNC_TEST_LAKE", str(tmp_path))
    spec, _ = _spec(tmp_path, {"connection": "lake",
                               "query": "SELECT * FROM people WHERE lead_id <> 'K2'"},
                    connections={"lake": {"duckdb": "${CRM_SYNC_TEST_LAKE}/lake.duckdb"}})
    _sync(spec, "2026-11-02")
    assert _in_crm(sandbox) == {"K1"}


def test_cursor_column_of_a_table_in_the_default_source(sandbox, store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame([_lead("F1", "2026-11-04T10:00:00Z", column="modified"),
                  _lead("F2", "2026-11-05T10:00:00Z", column="modified")]).to_csv(
        data / "leads.csv", index=False)
    spec, _ = _spec(tmp_path, "leads", connections={}, cursor_column="modified")
    assert spec.sync(SYNC).source_asset == "source_leads_by_modified"
    assets = [a for a in build_assets(spec)
              if a.key.path[-1] in {"source_leads_by_modified", f"validated_{SYNC}", SYNC}]
    from crm_sync.extract.sources import SourceResource

    dg.materialize(assets, partition_key="2026-11-04",
                   resources={**build_resources(), "source": SourceResource(data_dir=str(data))})
    assert _in_crm(sandbox) == {"F1"}


def test_a_database_that_cannot_be_opened_keeps_the_driver_message(tmp_path, monkeypatch):
    from crm_sync.extract.connections import open_connection

    # a SQLite file that cannot be opened (its folder does not exist): the driver says why
    url = f"sqlite:///{tmp_path}/no/such/folder/db.sqlite"
    monkeypatch.setenv(ENV, url)
    spec, _ = _spec(tmp_path, {"connection": "warehouse", "table": "leads"})
    resource = open_connection("warehouse", spec.sync(SYNC).connection)
    with pytest.raises(SourceError) as caught:
        resource.read_partition("leads", pd.Timestamp("2026-11-02", tz="UTC"),
                                pd.Timestamp("2026-11-03", tz="UTC"))
    text = str(caught.value)
    assert "OperationalError: unable to open database file" in text  # sqlite3's own words
    assert url not in text


def test_a_password_in_a_url_sqlite_refuses_is_not_in_the_error(tmp_path, monkeypatch):
    from crm_sync.extract.connections import open_connection

    secret = "s3cr3t-Pa55word"  # nosec B105  # a test value
    monkeypatch.setenv(ENV, f"sqlite://admin:{secret}@/{tmp_path}/db.sqlite")
    spec, _ = _spec(tmp_path, {"connection": "warehouse", "table": "leads"})
    with pytest.raises(SourceError) as caught:
        open_connection("warehouse", spec.sync(SYNC).connection).read_partition(
            "leads", pd.Timestamp("2026-11-02", tz="UTC"), pd.Timestamp("2026-11-03", tz="UTC"))
    text = str(caught.value)
    assert "Invalid SQLite URL" in text  # SQLAlchemy's words
    assert secret not in text


def test_a_bad_url_password_is_never_in_the_error(tmp_path, monkeypatch):
    from crm_sync.extract.sources import SourceResource

    secret = "hunter2-very-secret"  # nosec B105  # a test value
    url = f"nosuchdriver://admin:{secret}@127.0.0.1:1/warehouse"
    with pytest.raises(SourceError) as caught:
        SourceResource(url=url).read_partition("leads", pd.Timestamp("2026-11-02", tz="UTC"),
                                               pd.Timestamp("2026-11-03", tz="UTC"))
    text = str(caught.value)
    assert "nosuchdriver" in text  # what SQLAlchemy says: no such dialect
    assert secret not in text


def test_a_missing_table_keeps_the_driver_message(tmp_path):
    from crm_sync.extract.sources import SourceResource

    url = _database(tmp_path, "other", [_lead("X", "2026-11-02")])
    with pytest.raises(SourceError) as caught:
        SourceResource(url=url).read_partition("leads", pd.Timestamp("2026-11-02", tz="UTC"),
                                               pd.Timestamp("2026-11-03", tz="UTC"))
    assert "no such table: leads" in str(caught.value)
    assert "OperationalError" in str(caught.value)


def test_an_unset_variable_names_it(tmp_path, monkeypatch):
    from crm_sync.extract.connections import open_connection

    monkeypatch.delenv(ENV, raising=False)
    spec, _ = _spec(tmp_path, {"connection": "warehouse", "table": "leads"},
                    connections={"warehouse": {"url": "sqlite:///${" + ENV + "}"}})
    with pytest.raises(SourceError, match=ENV):
        open_connection("warehouse", spec.sync(SYNC).connection)


def test_an_unknown_connection_is_a_spec_error_naming_the_sync(tmp_path):
    with pytest.raises(SpecError) as caught:
        _spec(tmp_path, {"connection": "warehous", "table": "leads"})
    assert SYNC in str(caught.value) and "warehous" in str(caught.value)


def test_a_connection_takes_one_location(tmp_path):
    with pytest.raises(SpecError, match="exactly one of duckdb, folder, url"):
        _spec(tmp_path, {"connection": "warehouse", "table": "leads"},
              connections={"warehouse": {"url": "sqlite://", "folder": "data"}})


def test_the_bundled_spec_reads_the_default_source_unchanged():
    spec = bundled_unlinked()
    assert spec.connections == {}
    for sync in spec.syncs:
        assert sync.source_connection is None and sync.cursor_column == "updated_at"
        assert sync.source_asset == f"source_{sync.source}"


def test_replay_mirror_and_sensor_reads_follow_the_sync_source(tmp_path, monkeypatch):
    """What replay (read_keys), mirror (all_keys) and the sensor (day_fingerprints) read for a
    query source by `modified`: the query's rows, by the cursor column's day."""
    from crm_sync.extract.connections import sync_source
    from crm_sync.extract.sources import SourceResource

    rows = [_lead("R1", "2026-11-02 09:00:00", column="modified", updated_at="2026-11-09"),
            _lead("R2", "2026-11-03 09:00:00", column="modified", updated_at="2026-11-09"),
            _lead("R3", None, column="modified", updated_at="2026-11-09", status="lost")]
    monkeypatch.setenv(ENV, _database(tmp_path, "all_leads", rows))
    spec, _ = _spec(tmp_path, {"connection": "warehouse",
                               "query": "SELECT * FROM all_leads WHERE lead_id <> 'R2'"},
                    cursor_column="modified")
    source = sync_source(spec.sync(SYNC), SourceResource())
    assert source.all_keys("lead_id") == {"R1", "R3"}
    keys = source.read_keys("lead_id", ["R1", "R2", "R3"])
    assert dict(zip(keys["lead_id"], keys["_no_partition"])) == {"R1": False, "R3": True}
    assert list(keys.loc[keys["lead_id"] == "R1", "updated_at"]) == ["2026-11-02 09:00:00"]
    assert set(source.day_fingerprints()) == {"2026-11-02"}
