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
