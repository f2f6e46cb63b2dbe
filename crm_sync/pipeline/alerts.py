"""The upsert asset's alert check: the share of rows the CRM rejected in this run, against the
sync's `alert_threshold` (spec field, default 0.05).

`crm_rejections_within_alert_threshold` is a non-blocking check of WARN severity: a run whose
CRM rejected more than `alert_threshold` of the rows it was sent still succeeds (the rows are in
the quarantine), and the failed check is what Dagster+ alert policies ("asset check failed",
severity WARN) and OSS sensors (crm_sync/pipeline/alert_sensor.py) act on. Over the sync's
`quarantine_threshold` the CRM stage fails the run (crm_sync/pipeline/failures.py
`crm_stage_failure`); the check's evaluation is logged first (`context.log_event`, which takes
an `AssetCheckEvaluation`), so the failed run carries it too.

What is counted is the CRM stage's own tally (the connector's `Stats`, as `crm_stage_failure`
counts): rows handed to the CRM and the ones it refused (permanent and transient). Rows
crm_sync sets aside before sending (DUPLICATE_MATCHING_KEY, ASSOCIATION_TARGET_MISSING) are in
the run's `failed` but were never the CRM's to reject.
"""

from __future__ import annotations

import dagster as dg

from crm_sync.connectors import crm_label
from crm_sync.spec import SyncSpec

ALERT_CHECK = "crm_rejections_within_alert_threshold"
# The validated_<sync> asset's blocking ERROR check (crm_sync/pipeline/assets.py).
QUARANTINE_CHECK = "quarantine_share_within_threshold"
TOP_CODES = 5


def alert_check_spec(sync: SyncSpec) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(
        ALERT_CHECK, asset=sync.name, blocking=False,
        description=f"Warns when {crm_label(sync.crm)} rejects more than "
                    f"{sync.alert_threshold:.0%} of the rows a run sends it (`alert_threshold`); "
                    f"the run still succeeds, the rows are in the quarantine.")


def _tally(report) -> tuple[int, int, dict[str, int]]:
    """(rejected, sent, top error codes) of the run's CRM stage."""
    stats = report.stats
    if report.dry_run or stats is None or not stats.records:
        return 0, 0, {}
    return (stats.records_failed, stats.records,
            dict(stats.failed_by_code.most_common(TOP_CODES)))


def alert_check_result(sync: SyncSpec, report) -> dg.AssetCheckResult:
    """The check's result for one run's SyncReport (crm_sync/load/runner.py)."""
    rejected, sent, codes = _tally(report)
    share = rejected / sent if sent else 0.0
    passed = share <= sync.alert_threshold
    metadata = {
        "share_rejected": dg.MetadataValue.float(round(share, 4)),
        "threshold": dg.MetadataValue.float(sync.alert_threshold),
        "rejected": dg.MetadataValue.int(rejected),
        "sent": dg.MetadataValue.int(sent),
        "top_error_codes": dg.MetadataValue.json(codes),
    }
    if report.dry_run:
        metadata["dry_run"] = dg.MetadataValue.bool(True)
    return dg.AssetCheckResult(
        check_name=ALERT_CHECK, passed=passed, severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=None if passed else (
            f"{rejected} of {sent} rows ({share:.0%}) were rejected by {crm_label(sync.crm)}, "
            f"over alert_threshold {sync.alert_threshold:.0%} for {sync.name}: see the "
            f"quarantine"))


def log_alert_check(context: dg.AssetExecutionContext, sync: SyncSpec, report) -> None:
    """The same result as an event of the step, for a run about to fail (no MaterializeResult
    will carry it)."""
    result = alert_check_result(sync, report)
    context.log_event(dg.AssetCheckEvaluation(
        asset_key=context.asset_key, check_name=ALERT_CHECK, passed=result.passed,
        metadata=result.metadata, severity=result.severity, description=result.description,
        blocking=False))
