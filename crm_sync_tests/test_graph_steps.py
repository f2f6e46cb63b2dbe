"""Replay and mirror are steps of their own in the Dagster graph (`<sync>_replay`,
`<sync>_mirror`), run by each sync's job after the upsert, with the source as a dependency."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.project import build_defs, sandbox_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT
from crm_sync.spec_links import target_syncs
from crm_sync.pipeline.sync_steps import sync_asset_names, sync_run_config
from crm_sync.pipeline.validated_rows import STORED_OR_MISSING
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

DAY1, DAY2 = "2026-11-02", "2026-11-03"
MIRRORED = "contacts_to_hubspot"


def _mirror_spec():
    plain = bundled_unlinked()
    return plain.model_copy(update={"syncs": [
        s.model_copy(update={"mode": "mirror"}) if s.name == MIRRORED else s
        for s in plain.syncs]})


def _rows(sync: str, table: str, per_day: int) -> pd.DataFrame:
    """`per_day` rows of each of DAY1 and DAY2 that pass validation, from the bundled data."""
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str, keep_default_na=False)
    bad = {f.source_key for f in validate_partition(bundled_unlinked().sync(sync), frame).failures}
    frame = frame[~frame[bundled_unlinked().sync(sync).source_key].isin(bad)]
    return pd.concat([frame[frame["updated_at"].str.startswith(d)].head(per_day)
                      for d in (DAY1, DAY2)])


def _defs(sandbox_url, tmp_path, rows: pd.DataFrame, table: str, **crms) -> dg.Definitions:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    rows.to_csv(data / f"{table}.csv", index=False)
    resources = sandbox_resources(sandbox_url, tmp_path / "crm_sync.sqlite", data,
                                  tokens=DEFAULT_TOKENS)
    return build_defs(_mirror_spec(), resources={**resources, **crms})


def _run(defs: dg.Definitions, sync: str, day: str, **config) -> dg.ExecuteInProcessResult:
    spec = _mirror_spec().sync(sync)
    return defs.resolve_job_def(f"sync_{sync}").execute_in_process(
        partition_key=day, raise_on_error=False,
        run_config={"ops": sync_run_config(spec, **config)} if config else None)


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict:
    [materialization] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in materialization.metadata.items()}


def test_the_graph_shows_replay_and_mirror_with_their_dependencies(tmp_path):
    resources = sandbox_resources("http://127.0.0.1:9", tmp_path / "s.sqlite", tmp_path,
                                  tokens=DEFAULT_TOKENS)
    defs = build_defs(_mirror_spec(), resources=resources)
    graph = defs.resolve_asset_graph()

    def parents(name: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(name)).parent_keys}

    for sync in _mirror_spec().syncs:
        source = f"source_{sync.source}"
        assert parents(f"{sync.name}_replay") == {sync.name, source}
        upsert = defs.resolve_assets_def(sync.name)
        # its input is the validated rows; when validated_<sync> [day] was never materialized,
        # it reads the partition through `source` and validates it itself (validated_rows.py)
        assert {"source", "store", STORED_OR_MISSING} <= upsert.required_resource_keys
        # its targets' upserts run first (spec `associations:`)
        assert parents(sync.name) == {f"validated_{sync.name}", *target_syncs(sync)}
        job = defs.resolve_job_def(f"sync_{sync.name}")
        assert {node.name for node in job.graph.nodes} == set(sync_asset_names(sync))
        if sync.mode == "mirror":
            assert parents(f"{sync.name}_mirror") == {f"{sync.name}_replay", source}
            assert sync_asset_names(sync)[-1] == f"{sync.name}_mirror"
        else:
            assert not graph.has(dg.AssetKey(f"{sync.name}_mirror"))
    assert f"{MIRRORED}_mirror" in parents("quarantine")
    assert "leads_to_superleap_replay" in parents("quarantine")


def test_a_mirror_partition_run_by_its_job_deletes_a_vanished_rows_record(sandbox, sandbox_url,
                                                                         tmp_path):
    rows = _rows(MIRRORED, "contacts", per_day=2)
    defs = _defs(sandbox_url, tmp_path, rows, "contacts")
    for day in (DAY1, DAY2):
        result = _run(defs, MIRRORED, day)
        assert result.success
        assert _meta(result, f"{MIRRORED}_mirror") == {"deleted": 0, "delete_failed": 0}
    assert len(stored(sandbox, "hubspot", "contacts")) == 4

    gone = rows["contact_id"].iloc[0]
    rows[rows["contact_id"] != gone].to_csv(tmp_path / "data" / "contacts.csv", index=False)
    dry = _run(defs, MIRRORED, DAY2, dry_run=True)  # dry_run reaches the mirror step
    assert _meta(dry, f"{MIRRORED}_mirror") == {"dry_run": True, "would_delete": 1}
    # 1 of 4 records is over the 10% share: the run config allows it, for the mirror step
    result = _run(defs, MIRRORED, DAY2, allow_mass_delete=True)
    assert result.success
    assert _meta(result, f"{MIRRORED}_mirror") == {"deleted": 1, "delete_failed": 0}
    assert _meta(result, MIRRORED)["unchanged"] == 2
    kept = {r["properties"]["crm_sync_id"] for r in stored(sandbox, "hubspot", "contacts")}
    assert kept == set(rows["contact_id"]) - {gone}


def test_the_replay_step_recovers_an_earlier_runs_transient_failures(sandbox, sandbox_url,
                                                                    tmp_path):
    rows = _rows("leads_to_superleap", "leads", per_day=5)
    # one attempt: the injected 503s end as transient failures at once
    superleap = SuperleapResource(base_url=sandbox_url, token=DEFAULT_TOKENS["superleap"],
                                  max_attempts=1)
    defs = _defs(sandbox_url, tmp_path, rows, "leads", superleap=superleap)
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_503": 1.0}).raise_for_status()
    assert not _run(defs, "leads_to_superleap", DAY1).success
    sandbox.post("/_sandbox/faults", json={}).raise_for_status()  # the CRM is back

    result = _run(defs, "leads_to_superleap", DAY2)
    assert result.success
    assert _meta(result, "leads_to_superleap")["created"] == 5  # DAY2's rows
    assert _meta(result, "leads_to_superleap_replay") == {"retried_transient": 5,
                                                          "recovered_transient": 5}
    assert sorted(r["external_id"] for r in stored(sandbox, "superleap", "lead")) == \
        sorted(rows["lead_id"])


def test_a_failed_upsert_leaves_replay_and_mirror_not_run(sandbox, sandbox_url, tmp_path):
    rows = _rows(MIRRORED, "contacts", per_day=2)
    hubspot = HubSpotResource(base_url=sandbox_url, token=DEFAULT_TOKENS["hubspot"],
                              max_attempts=1)
    defs = _defs(sandbox_url, tmp_path, rows, "contacts", hubspot=hubspot)
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_503": 1.0}).raise_for_status()
    try:
        result = _run(defs, MIRRORED, DAY1)
    finally:
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == [MIRRORED]
    started = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    assert started == {"source_contacts", f"validated_{MIRRORED}", MIRRORED}
    for step in ("replay", "mirror"):
        assert result.asset_materializations_for_node(f"{MIRRORED}_{step}") == []
