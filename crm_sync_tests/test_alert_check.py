"""The upsert asset's WARN check `crm_rejections_within_alert_threshold` (alert_threshold,
crm_sync/pipeline/alerts.py), through real materializations against the sandbox: the sandbox
rejects Superleap ids of the right shape that name no record (INVALID_ID), which validation
lets through."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.pipeline.alerts import ALERT_CHECK
from crm_sync.pipeline.assets import build_assets
from crm_sync.spec import PROJECT_ROOT
from crm_sync_tests.bundled_spec import bundled_unlinked
from crm_sync_tests.conftest import stored

DAY = "2026-11-03"
SYNC = "leads_to_superleap"
UNKNOWN_IDS = ["Ab12Cd_Ef34Gh5" + str(i) for i in range(10)]  # the id pattern, no such record


def leads(tmp_path, rows: int, unknown: int, bad_emails: int = 0):
    """The resources of a source of `rows` leads of DAY, the first `unknown` naming a Superleap
    id the CRM does not have, the last `bad_emails` with an email validation rejects."""
    frame = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    frame = frame[frame["updated_at"].str.startswith(DAY)].head(rows).copy()
    frame["superleap_id"] = ""
    frame.loc[frame.index[:unknown], "superleap_id"] = UNKNOWN_IDS[:unknown]
    if bad_emails:
        frame.loc[frame.index[-bad_emails:], "email"] = "not an email"
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    frame.to_csv(data / "leads.csv", index=False)
    return {**build_resources(), "source": SourceResource(data_dir=str(data))}


def leads_assets(spec=None):
    return [a for a in build_assets(spec or bundled_unlinked()) if a.key.path[0] in
            ("source_leads", "validated_leads_to_superleap", SYNC)]


def alert_evaluation(result):
    [evaluation] = [e for e in result.get_asset_check_evaluations()
                    if e.check_name == ALERT_CHECK]
    return evaluation


def test_the_upsert_asset_declares_a_non_blocking_warn_check():
    [upsert] = [a for a in leads_assets() if a.key.path[0] == SYNC]
    [spec] = upsert.check_specs
    assert (spec.name, spec.key.asset_key, spec.blocking) == (ALERT_CHECK, dg.AssetKey(SYNC),
                                                            False)
    assert "5%" in spec.description


def test_rejections_over_the_alert_threshold_fail_the_warn_check_not_the_run(
        sandbox, store, tmp_path):
    resources = leads(tmp_path, rows=20, unknown=3)  # 15%: over 5%, under quarantine's 50%
    result = dg.materialize(leads_assets(), partition_key=DAY, resources=resources)
    assert result.success
    evaluation = alert_evaluation(result)
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description == (
        "3 of 20 rows (15%) were rejected by Superleap, over alert_threshold 5% for "
        "leads_to_superleap: see the quarantine")
    meta = {k: v.value for k, v in evaluation.metadata.items()}
    assert meta["share_rejected"] == 0.15 and meta["threshold"] == 0.05
    assert (meta["rejected"], meta["sent"]) == (3, 20)
    assert meta["top_error_codes"] == {"INVALID_ID": 3}
    assert len(stored(sandbox, "superleap", "lead")) == 17
    quarantine = store.quarantine_frame(SYNC)
    assert set(quarantine["error_code"]) == {"INVALID_ID"} and len(quarantine) == 3


def test_rejections_at_the_threshold_pass(sandbox, store, tmp_path):
    resources = leads(tmp_path, rows=20, unknown=1)  # 5%: not over alert_threshold
    result = dg.materialize(leads_assets(), partition_key=DAY, resources=resources)
    evaluation = alert_evaluation(result)
    assert result.success and evaluation.passed
    assert evaluation.metadata["rejected"].value == 1
    assert evaluation.metadata["share_rejected"].value == 0.05

    # the same run with alert_threshold 0 in the spec warns
    plain = bundled_unlinked()
    strict = plain.model_copy(update={"syncs": [
        s.model_copy(update={"alert_threshold": 0.0}) if s.name == SYNC else s
        for s in plain.syncs]})
    again = dg.materialize(leads_assets(strict), partition_key=DAY, resources=resources,
                           run_config={"ops": {SYNC: {"config": {"full_resync": True}}}})
    evaluation = alert_evaluation(again)
    assert again.success and evaluation.passed is False
    assert "over alert_threshold 0%" in evaluation.description


def test_a_run_the_crm_stage_fails_carries_the_failed_check(sandbox, store, tmp_path):
    """The check is logged before the run fails (`context.log_event`): it is in the instance's
    event log (what the UI and the alert sensor read), not among the in-process result's
    returned events."""
    resources = leads(tmp_path, rows=4, unknown=4)  # every row rejected: the run fails
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(leads_assets(), partition_key=DAY, resources=resources,
                            raise_on_error=False, instance=instance)
    assert not result.success
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey(SYNC), ALERT_CHECK))
    assert record is not None and record.run_id == result.run_id
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.passed is False and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description.startswith("4 of 4 rows (100%) were rejected by Superleap")


def test_a_dry_run_sends_nothing_and_passes(sandbox, store, tmp_path):
    resources = leads(tmp_path, rows=10, unknown=5)
    result = dg.materialize(leads_assets(), partition_key=DAY, resources=resources,
                            run_config={"ops": {SYNC: {"config": {"dry_run": True}}}})
    evaluation = alert_evaluation(result)
    assert result.success and evaluation.passed
    assert evaluation.metadata["dry_run"].value is True
    assert evaluation.metadata["sent"].value == 0
    assert stored(sandbox, "superleap", "lead") == []
