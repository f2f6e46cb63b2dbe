"""Jobs, schedules and sensors generated from the sync spec. Schedules and sensors are off by
default; switch them on in the UI (Automation) or with `dagster schedule start`."""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg

from crm_sync.sources import SourceResource
from crm_sync.spec import Spec, SyncSpec


def sync_job(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=f"sync_{sync.name}",
        selection=dg.AssetSelection.assets(f"source_{sync.source}", f"validated_{sync.name}",
                                           sync.name),
        partitions_def=partitions,
        description=f"Extract, validate and upsert one day of `{sync.source}` into "
                    f"{sync.crm} `{sync.object}`.",
    )


def sync_schedule(sync: SyncSpec, job, partitions: dg.TimeWindowPartitionsDefinition
                  ) -> dg.ScheduleDefinition:
    def _requests(context: dg.ScheduleEvaluationContext):
        # Yesterday's partition (now complete) and today's (rows changed so far): change
        # detection makes the second look at yesterday cheap.
        now = context.scheduled_execution_time
        for moment in (now - timedelta(days=1), now):
            key = partitions.get_partition_key_for_timestamp(moment.timestamp())
            yield dg.RunRequest(run_key=f"{sync.name}:{key}:{now.isoformat()}", partition_key=key)

    return dg.ScheduleDefinition(
        name=f"{sync.name}_schedule",
        cron_schedule=sync.schedule,
        job=job,
        execution_fn=_requests,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Syncs yesterday's and today's `{sync.source}` rows to {sync.crm} "
                    f"({sync.schedule}).",
    )


def source_sensor(sync: SyncSpec, job, partitions: dg.PartitionsDefinition) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{sync.name}_on_source_change",
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Starts `{sync.name}` for every day of `{sync.source}` whose rows changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext, source: SourceResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        current = source.day_fingerprints(sync.source)
        valid_keys = set(partitions.get_partition_keys())
        changed = sorted(day for day, fp in current.items()
                         if seen.get(day) != fp and day in valid_keys)
        for day in changed:
            yield dg.RunRequest(run_key=f"{sync.name}:{day}:{current[day]}", partition_key=day)
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            yield dg.SkipReason(f"no day of `{sync.source}` changed")

    return _sensor


def build_automation(spec: Spec, partitions, synced: set[str]):
    """(jobs, schedules, sensors) for the syncs that have assets."""
    jobs, schedules, sensors = [], [], []
    for sync in spec.syncs:
        if sync.name not in synced:
            continue
        job = sync_job(sync, partitions)
        jobs.append(job)
        if sync.schedule:
            schedules.append(sync_schedule(sync, job, partitions))
        sensors.append(source_sensor(sync, job, partitions))
    return jobs, schedules, sensors
