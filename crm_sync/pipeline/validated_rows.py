"""The rows of one sync partition, read and validated, defined once.

`validated_<sync>` computes them from its source asset's frame; the upsert asset `<sync>`
computes them itself when that partition of `validated_<sync>` was never stored in this
instance (the UI's asset-page **Materialize...** on the upsert alone, one partition): its
`valid` input is loaded by `stored_or_missing`, which hands over the stored frame through the
run's `io_manager` when there is one and None otherwise, and the upsert then reads the
partition from the `source` resource and validates it here, exactly as the two steps before it
would have (same reader, same checks, same quarantine entries, same threshold). Likewise
`validated_<sync>` reads its partition from the `source` resource when `source_<table>` [day]
was never stored (the lineage's **Materialize all** at depth 1: validated + upsert).

Dagster has no setting that makes a run materialize a missing upstream partition first (the UI
only warns, dagster-io/dagster#14229, #14502); an input manager is Dagster's documented way to
decide how an input is loaded (docs.dagster.io "Input managers": `dg.AssetIn(...,
input_manager_key=...)`, `@dg.input_manager(required_resource_keys=...)`).

The source partition is a pyarrow Table; before any of it becomes pandas, the rows unchanged
since the CRM confirmed them are set aside (crm_sync/transform/unchanged.py, `validate_source`):
only the others are validated and planned, and the count set aside travels with the valid
rows (`DataFrame.attrs`, pickled with the frame by the IO manager) to the upsert, which counts
them as unchanged. A full resync validates the whole partition (`prefilter=False`).
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa

from crm_sync.extract.connections import SyncSource, sync_source
from crm_sync.spec import SyncSpec
from crm_sync.transform import unchanged
from crm_sync.transform.validate import ValidationResult, validate_partition

# The resource key of `stored_or_missing`, bound to each upsert asset (`resource_defs`): one
# object for every sync and every code location, so Definitions merge it without a conflict.
STORED_OR_MISSING = "crm_sync_validated_rows"


def read_partition(table, source, partitions: dg.PartitionsDefinition,
                   window: dg.TimeWindow, arrow: bool = True):
    """One day of a source table (`table`: its name) or of the source a sync reads (`table`:
    the SyncSpec), with the rows that are in no partition flagged `_no_partition` (so the syncs
    quarantine them): what `source_<table>` materializes, a pyarrow Table (`arrow` False: a
    pandas DataFrame)."""
    sync = table if isinstance(table, SyncSpec) else None
    reader = sync_source(sync, source) if sync else SyncSource(source, table)
    first = partitions.get_first_partition_window()
    last = partitions.get_last_partition_window()  # today's (end_offset=1)
    bounds = (first.start, last.end) if first and last else None
    try:
        return reader.read_partition(window.start, window.end, include_unpartitioned=True,
                                     bounds=bounds, arrow=arrow)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a SQL column of values of several types
        return reader.read_partition(window.start, window.end, include_unpartitioned=True,
                                     bounds=bounds)  # (pandas holds it: nothing set aside)


def validate_source(sync: SyncSpec, rows, partition: str, store,
                    prefilter: bool = True) -> ValidationResult:
    """`validate_and_record` of a source partition (a pyarrow Table, or a frame stored before
    sources were Arrow) less its unchanged rows (none set aside when `prefilter` is False):
    `rows_in` counts every row, `valid.attrs[SKIPPED]` those set aside."""
    table = unchanged.as_table(rows)  # None: a frame Arrow cannot hold, validated whole
    kept = unchanged.prefilter(sync, table, store, enabled=prefilter) if table is not None \
        else unchanged.Prefiltered(rows, 0)
    result = validate_and_record(sync, unchanged.as_frame(kept.rows), partition, store)
    result.rows_in += kept.skipped
    result.unchanged_skipped = kept.skipped
    result.valid.attrs[unchanged.SKIPPED] = kept.skipped
    return result


def validate_and_record(sync: SyncSpec, rows: pd.DataFrame, partition: str,
                        store) -> ValidationResult:
    """Validate one partition's rows and record the failures in the quarantine (`store`: a
    SyncStore): what `validated_<sync>` does before it stores the valid rows."""
    result = validate_partition(sync, rows, partition=partition)
    store.record_results(sync.name, succeeded=[], quarantined=result.failures)
    # Every partition run sees all of the table's unreadable lines: earlier ones that no
    # longer fail (fixed, or removed) leave the quarantine.
    store.drop_quarantined(sync.name, "MALFORMED_SOURCE_ROW", keep=[
        f.source_key for f in result.failures if f.error_code == "MALFORMED_SOURCE_ROW"])
    return result


def over_threshold(sync: SyncSpec, result: ValidationResult) -> str | None:
    """Why the partition is not sent (its share of failing rows is over the sync's
    quarantine_threshold), or None."""
    share = result.share_quarantined
    if share <= sync.quarantine_threshold:
        return None
    return (f"{len(result.failures)} of {result.rows_in} rows ({share:.0%}) failed validation, "
            f"over the sync's threshold of {sync.quarantine_threshold:.0%}: the upsert does not "
            f"run. See the quarantine; fix the source or raise `quarantine_threshold` for "
            f"{sync.name!r} in the sync spec.")


@dg.input_manager(required_resource_keys={"io_manager"},
                  description="The stored validated rows of the partition (through the run's "
                              "io_manager), or None when that partition was never stored: "
                              "the upsert then validates the partition itself.")
def stored_or_missing(context: dg.InputContext):
    try:
        return context.resources.io_manager.load_input(context)
    except FileNotFoundError:  # what the filesystem / UPath IO managers raise for it
        return None


# The upsert asset's `resource_defs`: bound to the asset, so `build_assets`' output runs with
# any resources (the tests' `dg.materialize(..., resources=build_resources())`, the Component).
VALIDATED_ROWS_RESOURCES = {STORED_OR_MISSING: stored_or_missing}


def validated_input(sync: SyncSpec) -> dict[str, dg.AssetIn]:
    """The upsert's `ins`: `valid`, the rows of `validated_<sync>`, loaded by
    `stored_or_missing`."""
    return {"valid": dg.AssetIn(f"validated_{sync.name}", input_manager_key=STORED_OR_MISSING)}


def validate_in_step(context: dg.AssetExecutionContext, sync: SyncSpec,
                     partitions: dg.PartitionsDefinition, prefilter: bool = True,
                     why: str = "") -> pd.DataFrame:
    """The valid rows of the upsert's partition, read and validated here because
    `validated_<sync>` was not materialized for it (`why`: another reason: a full resync
    needs every row, `prefilter` False); over the threshold: a dagster.Failure (the failing
    rows are in the quarantine, nothing is sent)."""
    day = context.partition_key
    rows = read_partition(sync, context.resources.source, partitions,
                          context.partition_time_window)
    result = validate_source(sync, rows, day, context.resources.store.get(), prefilter)
    why = why or f"validated_{sync.name} [{day}] was not materialized"
    context.log.info(f"{sync.name} [{day}]: validated the partition itself, because {why}: "
                     f"{result.rows_in} rows read, {result.unchanged_skipped} unchanged set "
                     f"aside, {len(result.valid)} valid, {len(result.failures)} quarantined")
    why = over_threshold(sync, result)
    if why is not None:
        raise dg.Failure(description=f"{sync.name} [{day}]: {why}", allow_retries=False,
                         metadata={"rows_in": result.rows_in,
                                   "rows_quarantined": len(result.failures)})
    return result.valid
