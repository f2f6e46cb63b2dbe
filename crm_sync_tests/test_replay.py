"""Quarantine replay: transient failures are retried by the next run; changed rows go again."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.sync_steps import sync_asset_names
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.definitions import build_definitions, build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

DAY1, DAY2 = "2026-11-02", "2026-11-03"


def _good_leads(tmp_path, per_day=5):
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    sync = bundled_unlinked().sync("leads_to_superleap")
    bad = {f.source_key for f in validate_partition(sync, leads).failures}
    leads = leads[~leads["lead_id"].isin(bad)]
    picked = pd.concat([leads[leads["updated_at"].str.startswith(d)].head(per_day)
                        for d in (DAY1, DAY2)])
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    picked.to_csv(data / "leads.csv", index=False)
    return picked, data


def _resources(sandbox_url, data):
    return {**build_resources(), "source": SourceResource(data_dir=str(data)),
            # one attempt: the injected 503s end as transient failures at once
            "superleap": SuperleapResource(base_url=sandbox_url, token=DEFAULT_TOKENS["superleap"],
                                           max_attempts=1)}


def _assets():  # the sync's steps: its upsert, then the replay of earlier transient failures
    return [a for a in build_assets(bundled_unlinked()) if a.key.path[0] in
            sync_asset_names(bundled_unlinked().sync("leads_to_superleap"))]


def test_transient_failures_are_retried_by_the_next_run(sandbox, sandbox_url, store, tmp_path):
    picked, data = _good_leads(tmp_path)
    resources = _resources(sandbox_url, data)
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_503": 1.0}).raise_for_status()
    first = dg.materialize(_assets(), partition_key=DAY1, resources=resources,
                           raise_on_error=False)
    assert not first.success  # every row failed at the CRM: the run says so, rows kept transient
    quarantine = store.quarantine_frame("leads_to_superleap")
    assert len(quarantine) == 5 and quarantine["transient"].all()
    assert set(quarantine["error_code"]) == {"HTTP_503"}
    assert stored(sandbox, "superleap", "lead") == []

    sandbox.post("/_sandbox/faults", json={}).raise_for_status()  # the CRM is back
    result = dg.materialize(_assets(), partition_key=DAY2, resources=resources)
    meta = result.asset_materializations_for_node("leads_to_superleap")[0].metadata
    assert meta["created"].value == 5  # the DAY2 rows
    meta = result.asset_materializations_for_node("leads_to_superleap_replay")[0].metadata
    assert meta["retried_transient"].value == 5 and meta["recovered_transient"].value == 5
    assert store.quarantine_frame("leads_to_superleap").empty
    assert sorted(r["external_id"] for r in stored(sandbox, "superleap", "lead")) == \
        sorted(picked["lead_id"])


def test_replay_job_resends_changed_rows_only(sandbox, sandbox_url, store, tmp_path):
    picked, data = _good_leads(tmp_path)
    picked = picked.copy()
    first_key = picked["lead_id"].iloc[0]
    second_key = picked["lead_id"].iloc[1]
    picked.loc[picked["lead_id"].isin([first_key, second_key]), "email"] = "broken email"
    picked.to_csv(data / "leads.csv", index=False)
    resources = _resources(sandbox_url, data)
    dg.materialize(_assets(), partition_key=DAY1, resources=resources)
    assert set(store.quarantine_frame("leads_to_superleap")["source_key"]) == \
        {first_key, second_key}

    picked.loc[picked["lead_id"] == first_key, "email"] = "fixed@example.com"  # fixed upstream
    picked.to_csv(data / "leads.csv", index=False)
    job = build_definitions().resolve_job_def("replay_quarantine")
    result = job.execute_in_process(resources=resources)
    assert result.success
    assert set(store.quarantine_frame("leads_to_superleap")["source_key"]) == {second_key}
    emails = {r["external_id"]: r.get("email") for r in stored(sandbox, "superleap", "lead")}
    assert emails[first_key] == "fixed@example.com"
    assert second_key not in emails
