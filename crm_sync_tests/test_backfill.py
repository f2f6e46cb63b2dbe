"""Backfills: a two-day backfill from the CLI, an incremental rerun that sends only the changed
rows, and two partitions run at once in separate processes against one store."""

from __future__ import annotations

import multiprocessing
import os
import shutil

import pandas as pd
import pytest

from crm_sync.pipeline.in_process import day_range
from crm_sync.cli import main
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

DAYS = ["2026-11-02", "2026-11-03"]


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A copy of the bundled leads the test may edit; the source resource reads it."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(PROJECT_ROOT / "data" / "leads.csv", data / "leads.csv")
    monkeypatch.setenv("CRM_SYNC_DATA_DIR", str(data))
    return data


def _valid_keys(frame: pd.DataFrame) -> set[str]:
    sync = bundled_unlinked().sync("leads_to_superleap")
    days = frame[frame["updated_at"].str[:10].isin(DAYS)]
    return set(validate_partition(sync, days).valid["_key"])


def _requests(sandbox) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get("requests total", 0)


def test_day_range_is_inclusive_and_ordered():
    assert day_range("2026-11-01", "2026-11-03") == ["2026-11-01", "2026-11-02", "2026-11-03"]
    with pytest.raises(ValueError):
        day_range("2026-11-03", "2026-11-01")


def test_backfill_then_incremental_run_sends_only_changed_rows(sandbox, store, data_dir,
                                                               capsys):
    assert main(["backfill", "leads_to_superleap", "--start", DAYS[0], "--end", DAYS[1]]) == 0
    leads = pd.read_csv(data_dir / "leads.csv", dtype=str, keep_default_na=False)
    valid = _valid_keys(leads)
    records = stored(sandbox, "superleap", "lead")
    assert {r["external_id"] for r in records} == valid  # exactly those two days' good rows
    assert "leads_to_superleap" in capsys.readouterr().out

    # Change 1% of the two days' valid rows, keeping their updated_at day.
    changed = sorted(valid)[:: 100]
    leads.loc[leads["lead_id"].isin(changed), "status"] = "customer-" + leads["lead_id"]
    leads.to_csv(data_dir / "leads.csv", index=False)
    before = _requests(sandbox)
    assert main(["backfill", "leads_to_superleap", "--start", DAYS[0], "--end", DAYS[1]]) == 0
    after = stored(sandbox, "superleap", "lead")
    assert len(after) == len(records)  # updated in place, nothing created
    assert sorted(r["external_id"] for r in after if r["status"].startswith("customer-")) == \
        changed
    # One bulk_upsert per day holding changed rows (batch size 100 > changed rows per day).
    changed_days = leads[leads["lead_id"].isin(changed)]["updated_at"].str[:10].nunique()
    assert _requests(sandbox) - before == changed_days
    state = store.state_frame("leads_to_superleap")
    assert set(state["source_key"]) == valid


def _run_partition(day: str, env: dict) -> None:
    os.environ.update(env)
    from crm_sync.pipeline.in_process import sync_partitions

    sync_partitions([day], syncs=["leads_to_superleap"], log=lambda *_: None)


def test_two_partitions_at_once_in_separate_processes(sandbox, store, data_dir):
    env = {k: v for k, v in os.environ.items() if k.startswith(("CRM_SYNC", "SUPERLEAP"))}
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_run_partition, args=(day, env)) for day in DAYS]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=240)
        assert worker.exitcode == 0
    leads = pd.read_csv(data_dir / "leads.csv", dtype=str, keep_default_na=False)
    valid = _valid_keys(leads)
    assert {r["external_id"] for r in stored(sandbox, "superleap", "lead")} == valid
    assert set(store.state_frame("leads_to_superleap")["source_key"]) == valid
    days = leads[leads["updated_at"].str[:10].isin(DAYS)]
    quarantined = set(store.quarantine_frame("leads_to_superleap")["source_key"])
    assert quarantined == set(days["lead_id"]) - valid


def _runs_in(home):
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs()


def test_backfill_without_a_token_says_so_and_runs_nothing(sandbox, store, data_dir,
                                                          tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUBSPOT_TOKEN")
    code = main(["backfill", "leads_to_superleap", "contacts_to_hubspot",
                 "--start", DAYS[0], "--end", DAYS[1]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert ("crm-sync backfill: HUBSPOT_TOKEN is not set; set it to your HubSpot token, or "
            "run with --sandbox to sync into the local sandbox") in err
    assert "daemon" not in err and "webserver" not in err
    assert stored(sandbox, "superleap", "lead") == []  # checked before any partition ran
    assert not (tmp_path / "home").exists() or not _runs_in(tmp_path / "home")


def test_backfill_with_an_unreachable_crm_says_so_and_runs_nothing(sandbox, store, data_dir,
                                                                  tmp_path, monkeypatch,
                                                                  capsys):
    from crm_sync.sandbox.server import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("SUPERLEAP_BASE_URL", closed)
    code = main(["backfill", "leads_to_superleap", "--start", DAYS[0], "--end", DAYS[1]])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"crm-sync backfill: cannot reach Superleap at {closed} (" in err
    assert "start the CRM (crm-sync sandbox), check SUPERLEAP_BASE_URL, or pass --sandbox" in err
    assert store.state_frame("leads_to_superleap").empty


def test_backfill_with_sandbox_runs_in_the_instance_of_dagster_home(data_dir, tmp_path,
                                                                   monkeypatch, capsys):
    """--sandbox: its own sandbox, on the database `crm-sync ui` uses, with the sandbox's
    tokens (none set here, the CRM's address pointing nowhere); the runs are in the UI's
    instance, tagged and named after their sync, with their materializations."""
    import sqlite3

    import dagster as dg

    from crm_sync.sandbox.server import free_port

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "syncs.yaml", project / "syncs.yaml")
    monkeypatch.chdir(project)  # the project: its .crm_sync/ holds the sandbox database
    home = tmp_path / "home"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("SUPERLEAP_TOKEN")
    monkeypatch.setenv("SUPERLEAP_BASE_URL", f"http://127.0.0.1:{free_port()}")
    code = main(["backfill", "leads_to_superleap", "--start", DAYS[0], "--end", DAYS[1],
                 "--sandbox"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "leads_to_superleap" in out and "partitions_ok" in out
    leads = pd.read_csv(data_dir / "leads.csv", dtype=str, keep_default_na=False)
    with sqlite3.connect(project / ".crm_sync" / "sandbox.sqlite") as conn:
        sent = {row[0] for row in conn.execute(
            "SELECT json_extract(data, '$.external_id') FROM records WHERE crm = 'superleap'")}
    assert sent == _valid_keys(leads)

    runs = _runs_in(home)
    syncs = [run for run in runs if run.job_name == "sync_leads_to_superleap"]
    assert sorted(run.tags["dagster/partition"] for run in syncs) == DAYS
    assert all(run.tags["crm_sync/source"] == "cli-backfill" for run in runs)
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for name in ("leads_to_superleap", "validated_leads_to_superleap"):
            assert instance.get_materialized_partitions(dg.AssetKey(name)) == set(DAYS)
        assert instance.get_latest_materialization_event(dg.AssetKey("quarantine")) is not None
