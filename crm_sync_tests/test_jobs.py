"""Schedules and sensors: off by default, and they ask for the right partitions."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from crm_sync.definitions import build_definitions
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT


def test_every_sync_has_a_job_a_stopped_schedule_and_a_stopped_sensor():
    defs = build_definitions()
    job = defs.resolve_job_def("sync_leads_to_superleap")
    assert {k.path[-1] for k in job.asset_layer.executable_asset_keys} >= {
        "source_leads", "validated_leads_to_superleap", "leads_to_superleap"}
    schedule = defs.resolve_schedule_def("leads_to_superleap_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert schedule.cron_schedule == "0 2 * * *"
    sensor = defs.resolve_sensor_def("leads_to_superleap_on_source_change")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED


def test_schedule_requests_yesterday_and_today():
    defs = build_definitions()
    schedule = defs.resolve_schedule_def("leads_to_superleap_schedule")
    moment = datetime(2026, 11, 5, 2, 0, tzinfo=timezone.utc)
    with dg.build_schedule_context(scheduled_execution_time=moment,
                                   repository_def=defs.get_repository_def()) as context:
        result = schedule.evaluate_tick(context)
    assert sorted(r.partition_key for r in result.run_requests) == ["2026-11-04", "2026-11-05"]


def test_sensor_starts_only_the_days_whose_rows_changed(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(PROJECT_ROOT / "data" / "leads.csv", data / "leads.csv")
    defs = build_definitions()
    sensor = defs.resolve_sensor_def("leads_to_superleap_on_source_change")
    source = SourceResource(data_dir=str(data))
    repo = defs.get_repository_def()

    with dg.build_sensor_context(resources={"source": source}, repository_def=repo) as context:
        first = sensor.evaluate_tick(context)
    assert len(first.run_requests) == 7  # every day is new
    cursor = first.cursor

    leads = pd.read_csv(data / "leads.csv", dtype=str, keep_default_na=False)
    day3 = leads["updated_at"].str.startswith("2026-11-03")
    leads.loc[leads.index[day3][0], "status"] = "lost"
    leads.to_csv(data / "leads.csv", index=False)
    with dg.build_sensor_context(cursor=cursor, resources={"source": source},
                                 repository_def=repo) as context:
        second = sensor.evaluate_tick(context)
    assert [r.partition_key for r in second.run_requests] == ["2026-11-03"]
    with dg.build_sensor_context(cursor=second.cursor, resources={"source": source},
                                 repository_def=repo) as context:
        third = sensor.evaluate_tick(context)
    assert third.run_requests == []
