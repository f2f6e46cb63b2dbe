"""The demo command: every sync of the bundled data, twice, with the same end state."""

from __future__ import annotations

import json
import os
import sqlite3

import pytest

from crm_sync.devtools.demo import run_demo


def _records(db) -> dict[tuple[str, str], int]:
    with sqlite3.connect(db) as conn:
        return {(crm, obj): n for crm, obj, n in conn.execute(
            "SELECT crm, object, COUNT(*) FROM records GROUP BY crm, object")}


@pytest.mark.slow  # minutes: every partition of every sync, twice (CI runs it: make test-slow)
@pytest.mark.timeout(900)
def test_demo_twice_gives_the_same_end_state(tmp_path, capsys):
    saved = dict(os.environ)
    try:
        first = run_demo(tmp_path)
        records_after_first = _records(tmp_path / "sandbox.sqlite")
        second = run_demo(tmp_path)
        records_after_second = _records(tmp_path / "sandbox.sqlite")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = capsys.readouterr().out
    assert "rows_read" in out and "quarantined" in out

    assert records_after_first == records_after_second  # nothing duplicated
    for row in first:
        assert row["rows_read"] > 0
        assert row["created"] + row["updated"] + row["unchanged"] + row["quarantined"] == \
            row["rows_read"]
        # Every `created` is one new CRM record; updates never add records.
        assert records_after_first.get((row["crm"], row["object"]), 0) == row["created"]
    for row in second:
        assert row["created"] == 0
        assert row["unchanged"] == row["rows_read"] - row["quarantined"]
    # The bundled relationships: contacts to companies (HubSpot), projects to clients (Brevo),
    # Contacts to Accounts (Salesforce); each counted once, when its record was first sent.
    linked = {row["sync"]: row["linked"] for row in first}
    assert all(linked[s] > 0 for s in ("contacts_to_hubspot", "projects_to_brevo",
                                       "contacts_to_salesforce")), linked
    assert all(row["linked"] == 0 for row in second), second


def _few_rows(tmp_path, monkeypatch, lines: int = 4) -> None:
    """A few rows of each bundled table (keeps a run short), as $CRM_SYNC_DATA_DIR."""
    from crm_sync.spec import PROJECT_ROOT

    data = tmp_path / "data"
    data.mkdir()
    for csv in (PROJECT_ROOT / "data").glob("*.csv"):
        (data / csv.name).write_text("".join(csv.read_text().splitlines(keepends=True)[:lines]))
    monkeypatch.setenv("CRM_SYNC_DATA_DIR", str(data))


def test_the_demo_passes_its_resources_and_leaves_the_environment_unchanged(tmp_path,
                                                                           monkeypatch):
    _few_rows(tmp_path, monkeypatch)
    before = dict(os.environ)
    summary = run_demo(tmp_path / "demo")
    assert dict(os.environ) == before  # no token, store, data or base URL variable written
    assert sum(row["rows_read"] for row in summary) > 0
    assert (tmp_path / "demo" / "crm_sync.sqlite").exists()  # the store it was given


@pytest.mark.slow  # tens of seconds: a whole demo / a fresh venv / dg dev (CI runs it)
def test_the_demo_twice_on_postgresql_sends_nothing_the_second_time(tmp_path, monkeypatch,
                                                                    postgres, postgres_url):
    """CRM_SYNC_STORE=postgresql+psycopg://...: the demo's store is that database, and its
    quarantine a table a plain PostgreSQL client reads."""
    import psycopg

    _few_rows(tmp_path, monkeypatch, lines=40)
    monkeypatch.setenv("CRM_SYNC_STORE", postgres_url)
    first = run_demo(tmp_path / "demo")
    second = run_demo(tmp_path / "demo")
    assert not (tmp_path / "demo" / "crm_sync.sqlite").exists()
    assert sum(row["created"] for row in first) > 0
    assert all(row["created"] == row["updated"] == 0 for row in second), second
    assert [row["quarantined"] for row in second] == [row["quarantined"] for row in first]
    with psycopg.connect(postgres.dsn(postgres_url.rsplit("/", 1)[1])) as conn:
        held = conn.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    assert held == sum(row["quarantined"] for row in first)


@pytest.mark.slow  # tens of seconds: a whole demo / a fresh venv / dg dev (CI runs it)
def test_the_demo_links_projects_to_their_companies_and_counts_the_links(tmp_path, monkeypatch):
    import pandas as pd

    _few_rows(tmp_path, monkeypatch, lines=12)
    data = tmp_path / "data"
    companies = pd.read_csv(data / "companies.csv", dtype=str, keep_default_na=False)
    projects = pd.read_csv(data / "projects.csv", dtype=str, keep_default_na=False)
    # every project of a company the file holds (cyclically), one with none, one with a
    # company no table holds
    projects["company_id"] = [companies["company_id"][i % len(companies)]
                              for i in range(len(projects))]
    projects.loc[0, "company_id"], projects.loc[1, "company_id"] = "", "CO-9999999"
    projects.to_csv(data / "projects.csv", index=False)
    first = {row["sync"]: row for row in run_demo(tmp_path / "demo")}
    db = tmp_path / "demo" / "sandbox.sqlite"
    records = _records(db)
    with sqlite3.connect(db) as conn:
        stored = {(obj, rid): json.loads(body) for obj, rid, body in conn.execute(
            "SELECT object, id, data FROM records WHERE crm = 'brevo'")}
    ext = {(obj, rid): body["identifiers"]["ext_id"] for (obj, rid), body in stored.items()}
    linked = {ext[("project", rid)]: {ext[("client", str(i))] for i in ids}
              for (obj, rid), body in stored.items() if obj == "project"
              for ids in [body.get("associations", {}).get("client", [])] if ids}
    wanted = dict(zip(projects["project_id"], projects["company_id"]))
    assert linked and all(targets == {wanted[key]} for key, targets in linked.items())
    sent = {body["identifiers"]["ext_id"] for (obj, _), body in stored.items() if obj == "project"}
    clients = {body["identifiers"]["ext_id"] for (obj, _), body in stored.items()
               if obj == "client"}
    assert set(linked) == {key for key in sent if wanted[key] in clients}
    assert projects["project_id"][1] not in sent  # its company is in no table: quarantined
    assert first["projects_to_brevo"]["linked"] == len(linked)
    for row in first.values():
        assert row["created"] + row["updated"] + row["unchanged"] + row["quarantined"] == \
            row["rows_read"]
        assert records.get((row["crm"], row["object"]), 0) == row["created"]
    second = run_demo(tmp_path / "demo")
    assert all(row["created"] == 0 and row["linked"] == 0 for row in second), second


@pytest.mark.slow  # tens of seconds: a whole demo / a fresh venv / dg dev (CI runs it)
def test_the_demos_runs_and_materializations_are_in_the_instance_of_dagster_home(
        tmp_path, monkeypatch):
    """`make demo` then `crm-sync ui`: the demo's runs are recorded in the instance of
    $DAGSTER_HOME (what the UI opens), under the code location's asset keys, and its frames
    under DAGSTER_HOME/storage, where the UI's own runs find them."""
    import dagster as dg

    from crm_sync.definitions import defs
    from crm_sync.devtools.demo import demo_files, partitions_with_data
    from crm_sync.spec import load_spec

    _few_rows(tmp_path, monkeypatch, lines=12)
    home = tmp_path / "dagster_home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    summary = run_demo(tmp_path / "demo")
    assert not (tmp_path / "demo" / "dagster_home").exists()  # $DAGSTER_HOME wins
    partitions = set(partitions_with_data(load_spec(demo_files()[0]), tmp_path / "data"))
    assert partitions

    location_keys = {key for key in defs.resolve_asset_graph().get_all_asset_keys()}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs and all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
        assert all(run.tags.get("crm_sync/source") == "demo" for run in runs)
        assert {run.job_name for run in runs} == \
            {f"sync_{row['sync']}" for row in summary} | {"refresh_quarantine"}
        for name in ("contacts_to_hubspot", "leads_to_superleap", "quarantine"):
            key = dg.AssetKey(name)
            assert key in location_keys  # the same key as the code location's asset
            event = instance.get_latest_materialization_event(key)
            assert event is not None, name
        recorded = instance.get_materialized_partitions(dg.AssetKey("contacts_to_hubspot"))
        assert recorded == partitions
    # the validated frames, where Dagster's default IO manager of this instance keeps them
    day = sorted(partitions)[0]
    assert (home / "storage" / "validated_contacts_to_hubspot" / day).is_file()
