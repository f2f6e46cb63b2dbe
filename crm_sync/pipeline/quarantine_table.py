"""What the `quarantine` asset shows of the store's quarantine table, and when it updates.

- Its columns as `dagster/column_schema` (the asset's Overview and each materialization);
  `dagster/row_count` and a preview (sensitive source keys masked) with each materialization.
- `updates_after_a_sync`, its declarative automation condition: requested after any step of any
  sync (validation, upsert, replay, mirror: each of them writes quarantine entries) was
  materialized, once no run of those steps is in progress (one run after a backfill, not one
  per partition). Not part of the sync jobs: that would be one more step process per run.
  `AutomationCondition.eager()` would never fire for it: an unpartitioned asset waits, under
  eager, until every partition of every partitioned parent exists (`~any_deps_missing()`).
  Dagster's automation daemon evaluates it through crm_sync's own sensor
  (automation.py `quarantine_sensor`, running by default), as `dg dev` / `dagster dev` start it.
Sources: docs.dagster.io "Declarative Automation" (customizing conditions: `any_deps_updated`,
`since_last_handled`, `in_progress`), "Table metadata" (`dagster/column_schema`,
`dagster/row_count`).
"""

from __future__ import annotations

import dagster as dg
import pandas as pd

from crm_sync.pipeline.reporting import markdown_table
from crm_sync.state.masking import MASK

# The columns of the store's `quarantine` table (crm_sync/state/store_schema.py), in its order.
COLUMNS = (
    ("sync", "string", "the sync whose row it is"),
    ("source_key", "string", "the row's source key (masked in previews when it is sensitive)"),
    ("partition", "string", "the row's day (its updated_at)"),
    ("stage", "string", "`validation` (a check before sending) or `crm` (the CRM refused it)"),
    ("error_code", "string", "what went wrong, e.g. PARSE_INVALID_FORMAT, RATE_LIMITED"),
    ("rules", "string", "every rule the row broke, comma separated"),
    ("column_name", "string", "the failing column, when one is"),
    ("value", "string", "the failing value (masked when the field is sensitive)"),
    ("message", "string", "what a person can act on"),
    ("http_status", "int", "the CRM's HTTP status (stage `crm`)"),
    ("attempts", "int", "requests made for the row"),
    ("transient", "int", "1: a transient failure, sent again by the replay step"),
    ("payload", "json", "the CRM payload (sensitive fields masked)"),
    ("raw", "string", "the CRM's answer when it could not be understood (truncated)"),
    ("quarantined_at", "float", "when (Unix time)"),
    ("claimed_by", "string", "the run retrying the row right now (transient failures)"),
    ("claimed_at", "float", "since when (Unix time)"),
    ("payload_digest", "string", "sha256 of the unmasked payload (the replay's change check)"),
    ("runs", "int", "runs in a row whose outcome for the row was a transient failure"),
    ("path", "string", "the step whose failure it is: `sync`, `replay` or `mirror`"),
)
PREVIEW_COLUMNS = ["sync", "source_key", "partition", "stage", "path", "error_code", "message"]


def column_schema() -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(name, type=kind, description=text,
                       constraints=dg.TableColumnConstraints(nullable=name not in (
                           "sync", "source_key", "stage", "error_code", "message",
                           "transient", "quarantined_at")))
        for name, kind, text in COLUMNS])


def updates_after_a_sync() -> dg.AutomationCondition:
    return (
        dg.AutomationCondition.any_deps_updated().since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after a sync step")


def table_metadata(frame: pd.DataFrame, masked_keys: frozenset[str]) -> dict:
    """The table's part of a materialization's metadata: schema, row count, preview."""
    preview = frame[PREVIEW_COLUMNS].head(50).assign(
        source_key=lambda f: f["source_key"].where(~f["sync"].isin(list(masked_keys)), MASK))
    return {
        "dagster/column_schema": column_schema(),
        "dagster/row_count": dg.MetadataValue.int(len(frame)),
        "preview": dg.MetadataValue.md(markdown_table(preview)),
    }
