"""Errors a person can act on: what the Dagster UI shows when a sync cannot work.

Each failure is one `dagster.Failure` (of the upsert step, or of the replay op) whose
description names the sync and what to do, with no chained traceback of the HTTP library and
never the token.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pandas as pd

from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.definitions import build_definitions, build_resources
from crm_sync.sandbox.server import free_port
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, Spec, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

PARTITION = "2026-11-03"
SYNC = "contacts_to_hubspot"


def _materialize(spec: Spec, resources: dict, sync: str = SYNC) -> dg.ExecuteInProcessResult:
    source = spec.sync(sync).source
    assets = [a for a in build_assets(spec)
              if a.key.path[0] in (f"source_{source}", f"validated_{sync}", sync)]
    return dg.materialize(assets, partition_key=PARTITION, resources=resources,
                          raise_on_error=False)


def _failure(result: dg.ExecuteInProcessResult, step: str = SYNC):
    """(description, error info) of the failed step, as the UI shows them."""
    assert not result.success
    data = result.failure_data_for_node(step)
    assert data is not None, f"step {step} did not fail"
    assert data.user_failure_data is not None, f"not a dagster.Failure: {data.error.message}"
    return data.user_failure_data.description, data.error


def _assert_readable(description: str, error, *secrets: str) -> None:
    assert description.startswith(f"{SYNC}: ")
    assert error.cause is None, "the failure must not chain the HTTP library's traceback"
    text = description + error.message + "".join(error.stack)
    for noise in ("httpx", "httpcore", "tenacity", "Traceback"):
        assert noise not in text, noise
    for secret in secrets:
        assert secret not in text


def _everything_logged(result) -> str:
    return "\n".join(str(event) for event in result.all_events)


def test_missing_token_names_the_sync_and_the_variable(sandbox, store, monkeypatch):
    monkeypatch.delenv("HUBSPOT_TOKEN")
    result = _materialize(bundled_unlinked(), build_resources())  # no Dagster config error at launch
    description, error = _failure(result)
    assert "no HubSpot API token: HUBSPOT_TOKEN is not set" in description
    assert "launch the run again" in description
    _assert_readable(description, error)
    assert stored(sandbox, "hubspot", "contacts") == []
    assert store.state_frame(SYNC).empty
    # The other CRMs' runs are not affected by HubSpot's missing token.
    assert _materialize(bundled_unlinked(), build_resources(), "projects_to_brevo").success


def test_unreachable_crm_fails_the_run_and_marks_nothing_synced(sandbox, store):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    resources = build_resources()
    resources["hubspot"] = HubSpotResource(base_url=closed, token=os.environ["HUBSPOT_TOKEN"],
                                           max_attempts=2, max_backoff_seconds=0.2)
    result = _materialize(bundled_unlinked(), resources)
    description, error = _failure(result)
    assert f"cannot reach HubSpot at {closed}: check HUBSPOT_BASE_URL / is the CRM up?" \
        in description
    assert "Nothing was marked as synced" in description
    _assert_readable(description, error, os.environ["HUBSPOT_TOKEN"])
    assert store.state_frame(SYNC).empty
    quarantine = store.quarantine_frame(SYNC)
    assert set(quarantine["stage"]) <= {"validation"}, "no row is quarantined as transient"
    assert result.asset_materializations_for_node(SYNC) == []


def test_wrong_token_is_one_failure_without_the_token(sandbox, sandbox_url, store):
    wrong = "pat-na1-wrong-token-0123456789"
    resources = build_resources()
    resources["hubspot"] = HubSpotResource(base_url=sandbox_url, token=wrong)
    result = _materialize(bundled_unlinked(), resources)
    description, error = _failure(result)
    assert "HubSpot" in description and "HTTP 401" in description
    assert "HUBSPOT_TOKEN" in description
    _assert_readable(description, error, wrong)
    assert wrong not in _everything_logged(result)
    assert stored(sandbox, "hubspot", "contacts") == []
    assert store.state_frame(SYNC).empty


def test_wrong_object_type_is_one_failure(sandbox, store):
    spec = bundled_unlinked()
    syncs = [s.model_copy(update={"object": "widgets"}) if s.name == SYNC else s
             for s in spec.syncs]
    spec = spec.model_copy(update={"syncs": syncs})
    result = _materialize(spec, build_resources())
    description, error = _failure(result)
    assert "widgets" in description and "refused the sync" in description
    _assert_readable(description, error, os.environ["HUBSPOT_TOKEN"])
    assert store.state_frame(SYNC).empty


def test_replay_job_with_an_unreachable_crm_is_one_failure(sandbox, store, tmp_path):
    sync = bundled_unlinked().sync("leads_to_superleap")
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    leads = leads[leads["updated_at"].str.startswith(PARTITION) & (leads["superleap_id"] == "")]
    bad = {f.source_key for f in validate_partition(sync, leads).failures}
    leads = leads[~leads["lead_id"].isin(bad)].head(3).copy()
    key = leads["lead_id"].iloc[0]
    data = tmp_path / "data"
    data.mkdir()
    leads.loc[leads["lead_id"] == key, "email"] = "broken email"
    leads.to_csv(data / "leads.csv", index=False)
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    assert _materialize(bundled_unlinked(), resources, sync.name).success
    assert set(store.quarantine_frame(sync.name)["source_key"]) == {key}

    leads.loc[leads["lead_id"] == key, "email"] = "fixed@example.com"  # worth sending again
    leads.to_csv(data / "leads.csv", index=False)
    closed = f"http://127.0.0.1:{free_port()}"
    resources["superleap"] = SuperleapResource(base_url=closed, token="sandbox-token-x",
                                               max_attempts=1)
    job = build_definitions().resolve_job_def("replay_quarantine")
    result = job.execute_in_process(resources=resources, raise_on_error=False)
    assert not result.success
    data_ = result.failure_data_for_node("replay_quarantine_op")
    description = data_.user_failure_data.description
    assert description.startswith("leads_to_superleap: cannot reach Superleap at "
                                   f"{closed}: check SUPERLEAP_BASE_URL")
    assert data_.error.cause is None and "sandbox-token-x" not in description
    assert set(store.quarantine_frame(sync.name)["source_key"]) == {key}  # still there
    assert key not in set(store.state_frame(sync.name)["source_key"])


def test_spec_error_is_the_code_location_error(tmp_path):
    bad = tmp_path / "syncs.yaml"
    bad.write_text((PROJECT_ROOT / "syncs.yaml").read_text().replace(
        "matching_key: email ", "matching_key: e_mail "))
    env = {**os.environ, "CRM_SYNC_SPEC": str(bad), "DAGSTER_HOME": str(tmp_path)}
    # What the code server does when the UI loads the code location.
    done = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w",
         str(PROJECT_ROOT / "workspace.yaml")],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "SpecError" in output
    assert "sync 'contacts_to_hubspot'" in output and "'e_mail' must also be a mapped field" \
        in output

