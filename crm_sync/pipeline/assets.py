"""Assets generated from the sync spec:

    source_<table>  ->  validated_<sync>  ->  <sync> (the CRM upsert)  ->  <sync>_replay
        [->  <sync>_mirror]  ->  quarantine

Every asset but the quarantine is partitioned by day of the rows' `updated_at`. The steps after
the upsert (replay, mirror) and the list of a sync's assets are crm_sync/pipeline/sync_steps.py.
"""

import warnings

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crm_sync.connectors import PROFILES, RESOURCE_CLASSES
from crm_sync.pipeline.alerts import alert_check_result, alert_check_spec, log_alert_check
from crm_sync.pipeline.failures import crm_stage_failure, readable_crm_errors
from crm_sync.state.lease import one_run_per_partition
from crm_sync.state.masking import sensitive_names
from crm_sync.pipeline import quarantine_table
from crm_sync.pipeline.reporting import markdown_table
from crm_sync.pipeline.resources import StoreResource
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import Spec, SyncSpec
from crm_sync.spec_links import target_syncs
from crm_sync.load.runner import run_upsert
from crm_sync.pipeline.sync_steps import (  # UpsertConfig re-exported: its old home
    UpsertConfig, settle_unconfirmed, step_assets, sync_asset_names)
from crm_sync.pipeline.validated_rows import (
    STORED_OR_MISSING, VALIDATED_ROWS_RESOURCES, over_threshold, read_partition, validate_source,
    validate_in_step, validated_input)
from crm_sync.transform.unchanged import SKIPPED



def __getattr__(name: str):
    if name == "CRM_KINDS":  # old name: each CRM's Dagster kind, now in its profile
        return {crm: profile.kind for crm, profile in PROFILES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def partitions_for(spec: Spec) -> dg.DailyPartitionsDefinition:
    # end_offset=1: today's partition exists too, so rows changed today can be synced today.
    return dg.DailyPartitionsDefinition(start_date=spec.start_date, end_offset=1)


def source_asset(table, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The source asset of a table of the `source` resource (`table`: its name), or of the
    source a sync reads (`table`: the SyncSpec; its name is `sync.source_asset`)."""
    sync = table if isinstance(table, SyncSpec) else None
    table = sync.source if sync else table
    cursor = sync.cursor_column if sync else "updated_at"
    what = (f"the `{sync.name}` sync's query" if sync and sync.source_query is not None
            else f"the `{table}` source table"
            + (f" (connection `{sync.source_connection}`)" if sync and sync.source_connection
               else ""))

    @dg.asset(
        name=sync.source_asset if sync else f"source_{table}",
        partitions_def=partitions,
        group_name="sources",
        kinds={"duckdb", "pyarrow"} if not (sync and sync.source_connection) else {"sql",
                                                                                   "pyarrow"},
        description=f"One day of {what} (rows by `{cursor}`).",
    )
    def _source(context: dg.AssetExecutionContext, source: SourceResource) -> pa.Table:
        # Rows in no partition (updated_at missing, not a timestamp, or outside the partitions
        # that exist; CSV lines that cannot be read) come along with every partition (flagged
        # `_no_partition`) so the syncs quarantine them. A pyarrow Table: its unchanged rows
        # never become pandas (crm_sync/transform/unchanged.py).
        rows = read_partition(sync or table, source, partitions, context.partition_time_window)
        context.add_output_metadata(_orphan_report(context, table, rows))
        return rows

    return _source


def _orphan_report(context, table: str, rows: pa.Table | pd.DataFrame) -> dict:
    """The source asset's metadata and warnings about the rows that are in no partition (a
    frame: a partition Arrow cannot hold, validated_rows.py `read_partition`)."""
    if isinstance(rows, pd.DataFrame):
        text = rows.astype("string")
        if "_no_partition" in rows.columns:
            text["_no_partition"] = rows["_no_partition"].eq(True)
        rows = pa.Table.from_pandas(text, preserve_index=False)
    none = pa.array([False] * rows.num_rows, pa.bool_())

    def flagged(column: str) -> pa.ChunkedArray | pa.Array:
        return pc.is_valid(rows.column(column)) if column in rows.column_names else none

    orphan = pc.fill_null(pc.equal(rows.column("_no_partition").cast(pa.bool_()), True),
                          False) if "_no_partition" in rows.column_names else none
    out = pc.and_(flagged("_out_of_range"), orphan)
    malformed = pc.and_(flagged("_malformed_key"), orphan)
    invalid = pc.and_(orphan, pc.invert(pc.or_(out, malformed)))
    # (rows, the column shown as samples, how they are joined, what happened to them)
    reports = (
        (invalid, "updated_at", ", ", "row(s) have an updated_at that is missing or not a "
         "timestamp ({}); they belong to no daily partition and are quarantined as "
         "INVALID_UPDATED_AT until updated_at is fixed"),
        (out, "updated_at", ", ", "row(s) have an updated_at outside every daily partition "
         "({}); they are quarantined as UPDATED_AT_OUT_OF_RANGE until it falls in one (or "
         "start_date is moved)"),
        (malformed, "_malformed", "; ", "line(s) cannot be read ({}); they are quarantined as "
         "MALFORMED_SOURCE_ROW until fixed, the other rows sync"),
    )
    def count(mask) -> int:
        return int(pc.sum(mask.cast(pa.int64())).as_py() or 0)

    for mask, column, sep, what in reports:
        if count(mask):
            values = rows.filter(mask).column(column).slice(0, 5).to_pylist()
            samples = sep.join(values if column == "_malformed" else map(repr, values))
            context.log.warning(f"source table {table!r}: {count(mask)} "
                                + what.format(samples))
    return {
        "rows": dg.MetadataValue.int(rows.num_rows - count(orphan)),
        "rows_without_valid_updated_at": dg.MetadataValue.int(count(invalid)),
        "rows_out_of_range": dg.MetadataValue.int(count(out)),
        "rows_malformed": dg.MetadataValue.int(count(malformed)),
    }


def validated_asset(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    check_name = "quarantine_share_within_threshold"

    @dg.asset(
        name=f"validated_{sync.name}",
        # the stored source frame, or None: then read here (the lineage's Materialize all at
        # depth 1 selects validated + upsert without the source; validated_rows.py)
        ins={"rows": dg.AssetIn(sync.source_asset, input_manager_key=STORED_OR_MISSING)},
        resource_defs=VALIDATED_ROWS_RESOURCES,
        required_resource_keys={"store", "source"},
        partitions_def=partitions,
        group_name=sync.crm,
        kinds={"pandera", "pandas"},
        tags={"crm": sync.crm},
        description=f"`{sync.source}` rows checked against {sync.crm}'s documented rules for "
                    f"`{sync.object}`; failing rows go to the quarantine.",
        check_specs=[dg.AssetCheckSpec(
            check_name, asset=f"validated_{sync.name}", blocking=True,
            description=f"Fails (and stops the upsert) when more than "
                        f"{sync.quarantine_threshold:.0%} of the partition's rows fail validation.",
        )],
    )
    def _validated(context: dg.AssetExecutionContext, rows):
        if rows is None:  # source_<table> [day] never stored in this instance: read it here
            rows = read_partition(sync, context.resources.source, partitions,
                                  context.partition_time_window)
        # the unchanged rows are set aside before pandas (crm_sync/transform/unchanged.py)
        result = validate_source(sync, rows, context.partition_key,
                                 context.resources.store.get())
        metadata = {
            "rows_in": dg.MetadataValue.int(result.rows_in),
            SKIPPED: dg.MetadataValue.int(result.unchanged_skipped),
            "rows_valid": dg.MetadataValue.int(len(result.valid)),
            "rows_quarantined": dg.MetadataValue.int(len(result.failures)),
            "rows_without_source_key": dg.MetadataValue.int(result.keyless),
        }
        for rule, count in sorted(result.by_rule.items()):
            metadata[f"quarantined_{rule}"] = dg.MetadataValue.int(count)
        if result.warnings:
            names = ", ".join(f"{k} ({n} rows)" for k, n in result.warnings.most_common(20))
            context.log.warning(f"{sync.name}: attributes {sync.crm} would silently ignore "
                                f"(not in known_attributes), not sent: {names}")
            metadata["warning_unknown_attributes"] = dg.MetadataValue.int(len(result.warnings))
            metadata["unknown_attributes"] = dg.MetadataValue.text(names)
        yield dg.Output(result.valid, metadata=metadata)
        share, why = result.share_quarantined, over_threshold(sync, result)
        yield dg.AssetCheckResult(
            check_name=check_name,
            passed=why is None,
            severity=dg.AssetCheckSeverity.ERROR,
            description=why,
            metadata={"share_quarantined": dg.MetadataValue.float(round(share, 4)),
                      "threshold": dg.MetadataValue.float(sync.quarantine_threshold)},
        )

    return _validated


def _field_schema(sync: SyncSpec) -> dg.TableSchema:
    """The CRM fields the sync writes, shown as the upsert asset's columns in the UI."""
    return dg.TableSchema(columns=[
        dg.TableColumn(name, type=m.type, description=f"from source column `{m.column}`"
                       + (" (sensitive: masked in previews)" if m.sensitive else ""),
                       constraints=dg.TableColumnConstraints(nullable=not m.required))
        for name, m in sync.fields.items()])


def _by_error_code(quarantined: pd.DataFrame) -> str:
    """Quarantined rows of one partition counted by stage and error code (markdown)."""
    if quarantined.empty:
        return "_no row of this partition is in the quarantine_"
    counts = (quarantined.groupby(["stage", "error_code"]).size().rename("rows")
              .reset_index().sort_values(["rows", "error_code"], ascending=[False, True]))
    return markdown_table(counts)


def _upsert_definition_metadata(sync: SyncSpec) -> dict:
    """The sync spec, shown on the upsert asset's page."""
    return {
        "crm": sync.crm, "object": sync.object, "matching_key": sync.matching_key,
        "mode": sync.mode,
        "mapped_fields": ", ".join(f"{k} <- {m.column}" for k, m in sync.fields.items()),
        "source": f"{sync.source} (key: {sync.source_key})",
        "dagster/column_schema": _field_schema(sync),
        **({"associations": ", ".join(  # spec `associations:` (crm_sync/spec_links.py)
            f"{name} -> {link.sync} (by {link.column})"
            for name, link in sync.associations.items())} if sync.associations else {}),
    }


def upsert_asset(sync: SyncSpec, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=sync.name,
        ins=validated_input(sync),  # the stored rows, or None (validated_rows.py)
        resource_defs=VALIDATED_ROWS_RESOURCES,
        # the targets of its associations are upserted first, same partition (spec_links.py)
        deps=[dg.AssetKey(name) for name in target_syncs(sync)],
        partitions_def=partitions,
        group_name=sync.crm,
        kinds={PROFILES[sync.crm].kind},
        tags={"crm": sync.crm},
        pool=f"crm_{sync.crm}",  # one pool per CRM: parallel backfills share its rate limit
        required_resource_keys={sync.crm, "store", "source"},
        description=sync.description or f"Upsert of `{sync.source}` into {sync.crm} "
                                        f"`{sync.object}`.",
        check_specs=[alert_check_spec(sync)],  # alert_threshold, WARN (pipeline/alerts.py)
        metadata=_upsert_definition_metadata(sync),
    )
    @readable_crm_errors(sync)  # FatalCrmError -> one readable dagster.Failure
    @one_run_per_partition(sync.name)  # one run at a time per sync partition, across processes
    def _upsert(context: dg.AssetExecutionContext, config: UpsertConfig,
                valid: pd.DataFrame | None) -> dg.MaterializeResult:
        if valid is None:
            valid = validate_in_step(context, sync, partitions, not config.full_resync)
        elif config.full_resync and valid.attrs.get(SKIPPED):  # every row is sent again
            valid = validate_in_step(context, sync, partitions, False, why=(
                f"a full resync sends every row and validated_{sync.name} set aside "
                f"{valid.attrs[SKIPPED]} unchanged"))
        resource = getattr(context.resources, sync.crm)
        store = context.resources.store.get()
        report = run_upsert(sync, valid, resource, store, partition=context.partition_key,
                            full_resync=config.full_resync, dry_run=config.dry_run,
                            log=context.log.info)
        context.log.info(
            f"{sync.name} [{context.partition_key}]: {report.rows_in} rows, {report.created} "
            f"created, {report.updated} updated, {report.unchanged} unchanged, {report.failed} "
            f"failed, {report.superseded} superseded, {report.requests} requests"
            + (f", {report.links_created} links made, {report.links_removed} removed, "
               f"{report.targets_missing} targets missing" if sync.associations else ""))
        if report.append_changed:
            context.log.warning(
                f"{sync.name} [{context.partition_key}]: {report.append_changed} rows changed "
                f"after their record was created; not sent (mode append never updates a "
                f"record: {sync.crm} keeps the version first created)")
        # A CRM stage that failed (over the threshold, every row alike, a long Retry-After)
        # fails the run, now that its outcomes are recorded (transient rows go again next
        # run); the replay and mirror steps after it do not run.
        if not config.dry_run:  # rows never confirmed for max_unconfirmed_runs settle first
            settle_unconfirmed(context, sync, store)
        failure = crm_stage_failure(sync, resource, report.stats)
        if failure is not None:
            log_alert_check(context, sync, report)  # the failed run carries the check too
            raise failure
        return dg.MaterializeResult(metadata=_upsert_metadata(
            sync, context.partition_key, store, report),
            check_results=[alert_check_result(sync, report)])

    return _upsert


def _upsert_metadata(sync: SyncSpec, partition: str, store, report) -> dict:
    """The run report of one upsert materialization: counts as numeric metadata (plotted
    across runs), this partition's quarantine by error code and a preview."""
    quarantined = store.quarantine_frame(sync.name, partition=partition)
    metadata = {
        name: dg.MetadataValue.int(getattr(report, name))
        for name in ("rows_in", "sent", "created", "updated", "unchanged", "skipped",
                     "failed", "failed_transient", "requests", "retries", "rate_limited",
                     "superseded", "links_created", "links_removed", "targets_missing")
    }
    if sync.mode == "append":  # of `skipped`: changed after they were created, not sent
        metadata["append_changed"] = dg.MetadataValue.int(report.append_changed)
    if report.dry_run:
        metadata["dry_run"] = dg.MetadataValue.bool(True)
        metadata["would_create"] = dg.MetadataValue.int(report.would_create)
        metadata["would_update"] = dg.MetadataValue.int(report.would_update)
    metadata["duration_seconds"] = dg.MetadataValue.float(round(report.duration_seconds, 3))
    metadata["rows_per_second"] = dg.MetadataValue.float(round(report.rows_per_second, 1))
    metadata["quarantined_by_error_code"] = dg.MetadataValue.md(_by_error_code(quarantined))
    metadata["quarantine_table"] = _where(store)
    metadata["quarantine_query"] = dg.MetadataValue.text(
        f"SELECT * FROM quarantine WHERE sync = '{sync.name}' "  # nosec B608  # shown, never run
        f"AND partition = '{partition}'")
    for code, count in sorted(report.failed_by_code.items()):
        metadata[f"failed_{code}"] = dg.MetadataValue.int(count)
    metadata["quarantine_preview"] = dg.MetadataValue.md(markdown_table(
        # `path`: which step failed the row (its own day's run, replay, mirror)
        quarantined[["source_key", "stage", "path", "error_code", "message"]].head(20),
        sensitive=_masked_preview_columns(sync)))
    return metadata


def _where(store) -> dg.MetadataValue:
    """The store's file, or its URL without the password (PostgreSQL)."""
    if store.path is not None:
        return dg.MetadataValue.path(str(store.path))
    return dg.MetadataValue.text(store.display)


def _masked_preview_columns(sync: SyncSpec) -> set[str]:
    """Preview columns to mask: quarantine entries are stored with their sensitive values
    masked already (crm_sync/state/masking.py), except the source key, which identifies the row; it
    is masked in previews when its column is sensitive."""
    masked = set(sync.sensitive_fields)
    if sync.source_key in sensitive_names(sync):
        masked.add("source_key")
    return masked


def quarantine_asset(upstream: list[dg.AssetKey],
                     masked_keys: frozenset[str] = frozenset()) -> dg.AssetsDefinition:
    """`upstream`: the sync steps that write quarantine entries; `masked_keys`: the syncs
    whose source key column is sensitive (masked in the preview). Updated after them by its
    automation condition (quarantine_table.py)."""
    @dg.asset(
        name="quarantine",
        deps=upstream,
        group_name="quarantine",
        kinds={"table"},  # the store's table: SQLite or PostgreSQL (StoreResource)
        description="Every row a check or a CRM rejected, with its sync, source key, stage "
                    "(`validation` or `crm`), error code, message and payload. Table "
                    "`quarantine` of the sync store (SQLite or PostgreSQL).",
        metadata={"dagster/column_schema": quarantine_table.column_schema()},
        automation_condition=quarantine_table.updates_after_a_sync(),
    )
    def _quarantine(context: dg.AssetExecutionContext, store: StoreResource) -> dg.MaterializeResult:
        sync_store = store.get()
        frame = sync_store.quarantine_frame()
        counts = sync_store.quarantine_counts()
        metadata = {
            "rows": dg.MetadataValue.int(len(frame)),
            "rows_transient": dg.MetadataValue.int(int(frame["transient"].sum()) if len(frame) else 0),
            "store_path": _where(sync_store),
            "store_backend": dg.MetadataValue.text(sync_store.location.kind),
            "by_error_code": dg.MetadataValue.md(markdown_table(counts)),
            **quarantine_table.table_metadata(frame, masked_keys),
        }
        for sync_name, n in frame.groupby("sync").size().items():
            metadata[f"rows_{sync_name}"] = dg.MetadataValue.int(int(n))
        return dg.MaterializeResult(metadata=metadata)

    return _quarantine


def build_assets(spec: Spec) -> list[dg.AssetsDefinition]:
    partitions = partitions_for(spec)
    # one source asset per name (Spec checks that the syncs sharing one read it alike)
    readers = {s.source_asset: s for s in reversed(spec.syncs)}
    syncs = [s for s in spec.syncs if s.crm in RESOURCE_CLASSES]
    assets = [source_asset(readers[name], partitions)
              for name in dict.fromkeys(s.source_asset for s in spec.syncs)]
    with warnings.catch_warnings():  # `resource_defs` of @asset is beta in dagster 1.13; the
        warnings.simplefilter("ignore", dg.BetaWarning)  # validated and upsert steps bind one
        assets += [validated_asset(s, partitions) for s in syncs]  # (validated_rows.py)
        assets += [upsert_asset(s, partitions) for s in syncs]
    assets += [step for s in syncs for step in step_assets(s, partitions)]
    # after every step that writes quarantine entries (all but the source), the last included:
    # the quarantine then holds what replay and mirror recorded
    steps = [dg.AssetKey(name) for s in syncs for name in sync_asset_names(s)[1:]]
    assets.append(quarantine_asset(steps, frozenset(
        s.name for s in syncs if s.source_key in sensitive_names(s))))
    return assets
