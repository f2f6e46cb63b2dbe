"""Jobs, schedules and sensors generated from the sync spec. Schedules and sensors are off by
default (switch them on in the UI, Automation, or with `dagster schedule start`), except the
quarantine's automation sensor, which only ever updates the quarantine asset."""


import json
from datetime import timedelta

import dagster as dg

from crm_sync.extract.connections import sync_source
from crm_sync.pipeline.alert_sensor import alert_sensor
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import Spec, SyncSpec
from crm_sync.pipeline.prefix import KeyPrefix, asset_key, prefixed_name
from crm_sync.pipeline.sync_steps import sync_asset_names


def sync_job(sync: SyncSpec, partitions: dg.PartitionsDefinition, prefix: KeyPrefix = ()):
    return dg.define_asset_job(
        name=prefixed_name(prefix, f"sync_{sync.name}"),
        selection=dg.AssetSelection.assets(*(asset_key(prefix, n)
                                             for n in sync_asset_names(sync))),
        partitions_def=partitions,
        description=f"Extract, validate and upsert one day of `{sync.source}` into "
                    f"{sync.crm} `{sync.object}`, then replay earlier transient failures"
                    + (" and delete the records of rows that left the source."
                       if sync.mode == "mirror" else "."),
    )


def sync_schedule(sync: SyncSpec, job, partitions: dg.DailyPartitionsDefinition,
                  prefix: KeyPrefix = ()) -> dg.ScheduleDefinition:
    def _requests(context: dg.ScheduleEvaluationContext):
        # Yesterday's partition (now complete) and today's (rows changed so far): change
        # detection makes the second look at yesterday cheap.
        now = context.scheduled_execution_time
        for moment in (now - timedelta(days=1), now):
            key = partitions.get_partition_key_for_timestamp(moment.timestamp())
            yield dg.RunRequest(run_key=f"{sync.name}:{key}:{now.isoformat()}", partition_key=key)

    return dg.ScheduleDefinition(
        name=prefixed_name(prefix, f"{sync.name}_schedule"),
        cron_schedule=sync.schedule,
        job=job,
        execution_fn=_requests,
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description=f"Syncs yesterday's and today's `{sync.source}` rows to {sync.crm} "
                    f"({sync.schedule}).",
    )


def source_sensor(sync: SyncSpec, job, partitions: dg.PartitionsDefinition,
                  prefix: KeyPrefix = ()) -> dg.SensorDefinition:
    @dg.sensor(
        name=prefixed_name(prefix, f"{sync.name}_on_source_change"),
        job=job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description=f"Starts `{sync.name}` for every day of `{sync.source}` whose rows changed.",
    )
    def _sensor(context: dg.SensorEvaluationContext, source: SourceResource):
        seen = json.loads(context.cursor) if context.cursor else {}
        current = sync_source(sync, source).day_fingerprints()
        valid_keys = set(partitions.get_partition_keys())
        changed = sorted(day for day, fp in current.items()
                         if seen.get(day) != fp and day in valid_keys)
        for day in changed:
            yield dg.RunRequest(run_key=f"{sync.name}:{day}:{current[day]}", partition_key=day)
        context.update_cursor(json.dumps(current, sort_keys=True))
        if not changed:
            yield dg.SkipReason(f"no day of `{sync.source}` changed")

    return _sensor


def quarantine_sensor(assets) -> list[dg.AutomationConditionSensorDefinition]:
    """The sensor that evaluates the quarantine asset's automation condition
    (quarantine_table.py), running by default: Dagster's own default automation sensor is
    stopped. `assets`: crm_sync's assets, prefixed or not; named after the quarantine's key
    (`crm_sync_quarantine_automation`, under a key prefix `team__crm_sync_quarantine_automation`),
    its only target: Dagster refuses two automation sensors on one asset (docs.dagster.io
    "Declarative Automation": AutomationConditionSensorDefinition). The sync jobs leave the
    quarantine out (one more step process per run, and per partition of a backfill): this
    sensor updates it once after the runs."""
    keys = [key for a in assets for key in a.keys if key.path[-1] == "quarantine"]
    return [dg.AutomationConditionSensorDefinition(
        name=prefixed_name(key.path[:-1], "crm_sync_quarantine_automation"),
        target=dg.AssetSelection.assets(key),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description=f"Updates `{key.to_user_string()}` after sync steps were materialized "
                    f"(a job, a backfill, an asset's page), once they are done: nothing else.",
    ) for key in keys]


def build_automation(spec: Spec, partitions, synced: set[str], prefix: KeyPrefix = ()):
    """(jobs, schedules, sensors) for the syncs that have assets; names and the jobs'
    selections under `prefix` (a CrmSync Component's key_prefix, crm_sync/pipeline/prefix.py)."""
    crms = {s.crm for s in spec.syncs if s.name in synced}
    jobs, schedules, sensors = [replay_job(spec, crms, prefix)], [], []
    for sync in spec.syncs:
        if sync.name not in synced:
            continue
        job = sync_job(sync, partitions, prefix)
        jobs.append(job)
        if sync.schedule:
            schedules.append(sync_schedule(sync, job, partitions, prefix))
        sensors.append(source_sensor(sync, job, partitions, prefix))
    sensors.append(alert_sensor((s.name for s in spec.syncs if s.name in synced), prefix))
    return jobs, schedules, sensors


class ReplayConfig(dg.Config):
    syncs: list[str] = []  # empty: every sync


def replay_job(spec: Spec, crms: set[str], prefix: KeyPrefix = ()) -> dg.JobDefinition:
    @dg.op(name=prefixed_name(prefix, "replay_quarantine_op"),  # op names: one per repository
           required_resource_keys={"source", "store", *crms},
           description="Send again the quarantined rows that failed transiently or whose "
                       "source row changed since; a row leaves the quarantine when it succeeds.")
    def replay_quarantine_op(context: dg.OpExecutionContext, config: ReplayConfig):
        from crm_sync.pipeline.failures import crm_failure
        from crm_sync.errors import FatalCrmError
        from crm_sync.load.replay import replay_sync

        store = context.resources.store.get()
        unknown = set(config.syncs) - {s.name for s in spec.syncs}
        if unknown:
            raise dg.Failure(f"replay_quarantine: no sync named {sorted(unknown)}")
        for sync in spec.syncs:
            if (config.syncs and sync.name not in config.syncs) or sync.crm not in crms:
                continue
            resource = getattr(context.resources, sync.crm)
            try:
                report = replay_sync(sync, context.resources.source, resource, store,
                                     log=context.log.info)
            except FatalCrmError as exc:  # one readable failure, no HTTP traceback
                raise crm_failure(sync, resource, exc) from None
            context.log.info(
                f"{sync.name}: {report.candidates} quarantined, {report.recovered} recovered, "
                f"{report.still_invalid} still invalid, {report.unchanged_permanent} unchanged "
                f"(permanent error, not resent), {report.gone} no longer in the source")
            context.add_output_metadata({
                f"{sync.name}_quarantined": report.candidates,
                f"{sync.name}_recovered": report.recovered,
            })

    @dg.job(name=prefixed_name(prefix, "replay_quarantine"),
            description="Replay the quarantine on demand (transient failures and changed rows).")
    def _job():
        replay_quarantine_op()

    return _job
