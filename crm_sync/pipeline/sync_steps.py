"""The steps of one sync and their run config, defined once:

    source_<table> -> validated_<sync> -> <sync> (upsert) -> <sync>_replay [-> <sync>_mirror]

`<sync>_replay` sends again the rows that earlier runs lost to transient failures
(crm_sync/load/replay.py); `<sync>_mirror`, only for `mode: mirror`, deletes the CRM records of rows
that left the source (crm_sync/load/mirror.py). Both read the source table through the `source`
resource (by key / the whole table, not the partition's frame), so the graph shows the source
as a dependency of theirs. A failed upsert stage fails its step: the steps after it do not run.
Each step holds the sync partition's lease while it works (crm_sync/state/lease.py).
"""

import time

import dagster as dg

from crm_sync.connectors import PROFILES
from crm_sync.pipeline.failures import readable_crm_errors
from crm_sync.errors import MassDeleteRefused
from crm_sync.state.lease import DEFAULT_WAIT_SECONDS, one_run_per_partition
from crm_sync.load.mirror import mirror_deletes
from crm_sync.load.replay import retry_transient
from crm_sync.spec import SyncSpec


class StepConfig(dg.Config):
    dry_run: bool = False  # count what would be created/updated/deleted; send nothing
    # Another run holds the partition (crm_sync/state/lease.py): wait this long, then skip.
    lease_wait_seconds: float = DEFAULT_WAIT_SECONDS


class UpsertConfig(StepConfig):
    full_resync: bool = False  # ignore the change-detection state and send every row


class MirrorConfig(StepConfig):
    # delete even more than the sync's mirror_max_delete_share of its records
    allow_mass_delete: bool = False


def replay_name(sync: SyncSpec) -> str:
    return f"{sync.name}_replay"


def mirror_name(sync: SyncSpec) -> str:
    return f"{sync.name}_mirror"


def sync_asset_names(sync: SyncSpec) -> list[str]:
    """The assets that make up one sync, in the order they run (jobs, backfills, the demo)."""
    names = [sync.source_asset, f"validated_{sync.name}", sync.name, replay_name(sync)]
    return names + [mirror_name(sync)] if sync.mode == "mirror" else names


def _configs(sync: SyncSpec) -> dict[str, type[dg.Config]]:
    """The steps of a sync that take run config, with their config class."""
    configs = {sync.name: UpsertConfig, replay_name(sync): StepConfig}
    return {**configs, mirror_name(sync): MirrorConfig} if sync.mode == "mirror" else configs


def sync_run_config(sync: SyncSpec, **values) -> dict:
    """The `ops` run config that gives every step of the sync the `values` it accepts
    (e.g. dry_run reaches the upsert, the replay and the mirror; allow_mass_delete the mirror)."""
    return {name: {"config": {k: v for k, v in values.items() if k in cls.model_fields}}
            for name, cls in _configs(sync).items()}


def settle_unconfirmed(context: dg.AssetExecutionContext, sync: SyncSpec, store) -> None:
    """Rows the CRM never confirmed in `max_unconfirmed_runs` runs stop being resent: each run
    would cost requests (Brevo: a process and read-backs) for a row it silently drops."""
    settled = store.settle_unconfirmed(sync.name, sync.max_unconfirmed_runs)
    if settled:
        context.log.warning(
            f"{sync.name}: {settled} row(s) were never confirmed by {sync.crm} after "
            f"{sync.max_unconfirmed_runs} runs; their quarantine entries are now permanent "
            f"(not resent until the row changes). See the quarantine's message for each.")


def _step(sync: SyncSpec, name: str, upstream: str, partitions, description: str):
    """The decorator of a step after the upsert: same partitions, group and CRM pool, the
    source as a dependency, one readable failure per fatal CRM error, the partition's lease."""
    asset = dg.asset(
        name=name, partitions_def=partitions, group_name=sync.crm, tags={"crm": sync.crm},
        kinds={PROFILES[sync.crm].kind},
        # The step reads the table through the `source` resource; this dependency shows it
        # (and keeps a day's steps in one backfill run with its source).
        deps=[dg.AssetKey(upstream), dg.AssetKey(sync.source_asset)],
        pool=f"crm_{sync.crm}", required_resource_keys={sync.crm, "store", "source"},
        description=description)
    return lambda fn: asset(readable_crm_errors(sync)(one_run_per_partition(sync.name)(fn)))


def _run_started(context: dg.AssetExecutionContext) -> float:
    """When this run started: the transient failures quarantined before it are earlier runs'."""
    record = context.instance.get_run_record_by_id(context.run_id)
    return record.start_time if record is not None and record.start_time else time.time()


def replay_asset(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_step(sync, replay_name(sync), sync.name, partitions,
           f"Sends again the `{sync.name}` rows that earlier runs (of any partition) lost to a "
           f"transient {sync.crm} failure (rate limits, timeouts, 5xx).")
    def _replay(context: dg.AssetExecutionContext, config: StepConfig) -> dg.MaterializeResult:
        retried = None
        if not config.dry_run:
            store = context.resources.store.get()
            retried = retry_transient(sync, context.resources.source,
                                      getattr(context.resources, sync.crm), store,
                                      before=_run_started(context), log=context.log.info)
            settle_unconfirmed(context, sync, store)
        metadata = {
            "retried_transient": dg.MetadataValue.int(retried.candidates if retried else 0),
            "recovered_transient": dg.MetadataValue.int(retried.recovered if retried else 0),
        }
        if sync.associations:  # the links the resent rows made (crm_sync/load/links.py)
            metadata["links_created"] = dg.MetadataValue.int(
                retried.resent.links_created if retried and retried.resent else 0)
        return dg.MaterializeResult(metadata=metadata)

    return _replay


def mirror_asset(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @_step(sync, mirror_name(sync), replay_name(sync), partitions,
           f"Deletes the {sync.crm} records of `{sync.name}` rows that left `{sync.source}` "
           f"(the whole table); refuses more than {sync.mirror_max_delete_share:.0%} at once.")
    def _mirror(context: dg.AssetExecutionContext, config: MirrorConfig) -> dg.MaterializeResult:
        try:
            report = mirror_deletes(sync, context.resources.source,
                                    getattr(context.resources, sync.crm),
                                    context.resources.store.get(), log=context.log.info,
                                    dry_run=config.dry_run,
                                    allow_mass_delete=config.allow_mass_delete)
        except MassDeleteRefused as exc:  # one readable message, no traceback; nothing deleted
            raise dg.Failure(description=str(exc), allow_retries=False,
                             metadata={"sync": sync.name, "deleted": 0}) from None
        if report.dry_run:
            return dg.MaterializeResult(metadata={
                "dry_run": dg.MetadataValue.bool(True),
                "would_delete": dg.MetadataValue.int(report.would_delete)})
        return dg.MaterializeResult(metadata={
            "deleted": dg.MetadataValue.int(report.deleted),
            "delete_failed": dg.MetadataValue.int(report.failed)})

    return _mirror


def step_assets(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> list:
    """The steps after the sync's upsert."""
    steps = [replay_asset(sync, partitions)]
    return steps + [mirror_asset(sync, partitions)] if sync.mode == "mirror" else steps
