"""The UI without traps (issue 18, item 2), against the real sandbox and a persistent Dagster
instance, as `dg dev` runs them: the asset page's Materialize... on an upsert asset alone (one
partition, its validated partition never materialized) works."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from crm_sync.extract.sources import SourceResource
from crm_sync.project import build_defs, sandbox_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT
from crm_sync.state.store import SyncStore
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.bundled_spec import bundled_unlinked
from crm_sync_tests.conftest import stored

SYNC, PARTITION = "leads_to_superleap", "2026-11-03"


def _rows(day: str = PARTITION) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    return frame[frame["updated_at"].str.startswith(day)].reset_index(drop=True)


@pytest.fixture
def instance(tmp_path):
    """A persistent instance (its own DAGSTER_HOME): the default IO manager stores each step's
    frame under its `storage/`, as in `dg dev`."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        yield instance


def _defs(sandbox_url, tmp_path, data_dir=None) -> dg.Definitions:
    resources = sandbox_resources(sandbox_url, tmp_path / "store.sqlite", data_dir,
                                  tokens=DEFAULT_TOKENS)
    return build_defs(bundled_unlinked(), resources=resources)


def _launch(defs, instance, *names: str, partition: str = PARTITION):
    """A run of the named assets only, as the UI's Materialize... launches it (the global
    asset job with an asset selection)."""
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, partition_key=partition,
                                  asset_selection=[dg.AssetKey(n) for n in names],
                                  raise_on_error=False)


def _messages(instance, result) -> list[str]:
    """The run's log lines (context.log's as well as Dagster's events)."""
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


def test_an_upsert_materialized_alone_validates_its_partition_itself(sandbox, sandbox_url,
                                                                    tmp_path, instance):
    rows = _rows()
    expected = validate_partition(bundled_unlinked().sync(SYNC), rows, partition=PARTITION)
    bad = {f.source_key for f in expected.failures}
    assert bad, "the bundled data must hold bad leads in this partition"

    result = _launch(_defs(sandbox_url, tmp_path), instance, SYNC)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    leads = stored(sandbox, "superleap", "lead")
    assert {r["external_id"] for r in leads} == set(expected.valid["_key"]) \
        == set(rows["lead_id"]) - bad
    quarantine = SyncStore(tmp_path / "store.sqlite").quarantine_frame(SYNC)
    assert set(quarantine["source_key"]) == bad
    assert set(quarantine["stage"]) == {"validation"}
    assert any(f"validated the partition itself, because validated_{SYNC} [{PARTITION}] was "
               f"not materialized" in m for m in _messages(instance, result))
    [upsert] = result.asset_materializations_for_node(SYNC)
    assert upsert.metadata["created"].value == len(leads)
    # only the upsert ran: no materialization of the steps before it
    assert instance.get_latest_materialization_event(dg.AssetKey(f"validated_{SYNC}")) is None


def test_materialize_all_at_lineage_depth_one_reads_the_source_itself(sandbox, sandbox_url,
                                                                      tmp_path, instance):
    """The upstream lineage opens at depth 1: Materialize all selects validated + upsert, not
    the source, whose partition was never stored: validated reads it itself."""
    rows = _rows()
    expected = validate_partition(bundled_unlinked().sync(SYNC), rows, partition=PARTITION)
    result = _launch(_defs(sandbox_url, tmp_path), instance, f"validated_{SYNC}", SYNC)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    [validated] = result.asset_materializations_for_node(f"validated_{SYNC}")
    assert validated.metadata["rows_in"].value == len(rows)
    assert validated.metadata["rows_quarantined"].value == len(expected.failures) > 0
    assert {r["external_id"] for r in stored(sandbox, "superleap", "lead")} \
        == set(expected.valid["_key"])
    assert instance.get_latest_materialization_event(dg.AssetKey("source_leads")) is None


def test_an_upsert_alone_under_a_key_prefix_validates_itself(sandbox, sandbox_url, tmp_path,
                                                           instance):
    resources = sandbox_resources(sandbox_url, tmp_path / "store.sqlite", tokens=DEFAULT_TOKENS)
    defs = build_defs(bundled_unlinked(), resources=resources, key_prefix=["team", "crm"])
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, partition_key=PARTITION,
                                    asset_selection=[dg.AssetKey(["team", "crm", SYNC])],
                                    raise_on_error=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert any(f"because validated_{SYNC} [{PARTITION}] was not materialized" in m
               for m in _messages(instance, result))
    assert len(stored(sandbox, "superleap", "lead")) > 0
    sensors = {s.name for s in defs.sensors}
    assert "team__crm__crm_sync_quarantine_automation" in sensors


def test_the_stored_validated_rows_are_used_when_they_exist(sandbox, sandbox_url, tmp_path,
                                                           instance):
    data = tmp_path / "data"
    data.mkdir()
    rows = _rows().head(12).assign(superleap_id="")
    rows.to_csv(data / "leads.csv", index=False)
    defs = _defs(sandbox_url, tmp_path, data)
    first = _launch(defs, instance, "source_leads", f"validated_{SYNC}")
    assert first.success
    valid = first.asset_materializations_for_node(f"validated_{SYNC}")[0] \
        .metadata["rows_valid"].value
    assert valid > 0
    rows.head(0).to_csv(data / "leads.csv", index=False)  # the source is empty now

    result = _launch(defs, instance, SYNC)
    assert result.success
    # the rows sent are the stored frame's, not the (now empty) source's
    assert len(stored(sandbox, "superleap", "lead")) == valid
    assert not any("validated the partition itself" in m for m in _messages(instance, result))


def test_an_upsert_alone_over_the_threshold_fails_readably_and_sends_nothing(
        sandbox, sandbox_url, tmp_path, instance):
    data = tmp_path / "data"
    data.mkdir()
    rows = _rows().head(20).assign(superleap_id="")
    rows.loc[rows.index[:11], "email"] = "not an email"  # 55% bad, threshold is 50%
    rows.to_csv(data / "leads.csv", index=False)

    result = _launch(_defs(sandbox_url, tmp_path, data), instance, SYNC)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    error = failure.step_failure_data.error
    assert error.cls_name == "Failure"
    assert "11 of 20 rows (55%) failed validation, over the sync's threshold of 50%" \
        in error.message
    assert stored(sandbox, "superleap", "lead") == []
    assert len(SyncStore(tmp_path / "store.sqlite").quarantine_frame(SYNC)) == 11


def test_a_full_sync_run_loads_the_stored_rows_and_validates_once(sandbox, sandbox_url,
                                                                 tmp_path, instance):
    defs = _defs(sandbox_url, tmp_path)
    result = defs.resolve_job_def(f"sync_{SYNC}").execute_in_process(
        instance=instance, partition_key=PARTITION)
    assert result.success
    assert not any("validated the partition itself" in m for m in _messages(instance, result))
    loaded = [e for e in result.all_events if e.event_type == dg.DagsterEventType.LOADED_INPUT
              and e.step_key == SYNC]
    assert len(loaded) == 1


QUARANTINE = dg.AssetKey("quarantine")


def _requested(defs, instance, cursor):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return result.get_num_requested(QUARANTINE), result.cursor


def test_the_quarantine_is_requested_after_a_sync_step_and_not_again(sandbox, sandbox_url,
                                                                    tmp_path, instance):
    defs = _defs(sandbox_url, tmp_path)
    requested, cursor = _requested(defs, instance, None)
    assert requested == 0  # before any sync
    assert _launch(defs, instance, SYNC).success  # the upsert alone, from its page
    requested, cursor = _requested(defs, instance, cursor)
    assert requested == 1
    requested, cursor = _requested(defs, instance, cursor)
    assert requested == 0  # no new sync since
    # A (partitioned) run of the sync job: requested after it, once.
    assert defs.resolve_job_def(f"sync_{SYNC}").execute_in_process(
        instance=instance, partition_key="2026-11-04").success
    requested, cursor = _requested(defs, instance, cursor)
    assert requested == 1
    # The run the sensor would start: materialized, then nothing left to do.
    run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[QUARANTINE])
    [materialization] = run.asset_materializations_for_node("quarantine")
    store = SyncStore(tmp_path / "store.sqlite")
    assert materialization.metadata["dagster/row_count"].value == len(store.quarantine_frame())
    assert set(store.quarantine_frame(SYNC)["partition"]) == {PARTITION, "2026-11-04"}
    requested, cursor = _requested(defs, instance, cursor)
    assert requested == 0


def test_the_quarantine_sensor_is_crm_syncs_own_and_running(tmp_path):
    defs = _defs("http://127.0.0.1:9", tmp_path)
    sensors = [s for s in defs.get_repository_def().sensor_defs
               if isinstance(s, dg.AutomationConditionSensorDefinition)]
    assert [s.name for s in sensors] == ["crm_sync_quarantine_automation"]  # no default one
    [sensor] = sensors
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    assert sensor.asset_selection.resolve(graph) == {QUARANTINE}
    # every step that writes quarantine entries is upstream of it, the source is not
    assert graph.get(QUARANTINE).parent_keys >= {
        dg.AssetKey(n) for n in (f"validated_{SYNC}", SYNC, f"{SYNC}_replay")}
    assert dg.AssetKey("source_leads") not in graph.get(QUARANTINE).parent_keys


def test_the_quarantine_shows_its_table(sandbox, sandbox_url, tmp_path, instance):
    defs = _defs(sandbox_url, tmp_path)
    spec = defs.resolve_assets_def(QUARANTINE).specs_by_key[QUARANTINE]
    assert "sqlite" not in spec.kinds  # the store may be PostgreSQL
    schema = spec.metadata["dagster/column_schema"]
    store = SyncStore(tmp_path / "store.sqlite")
    assert [c.name for c in schema.columns] == list(store.quarantine_frame().columns)
    assert _launch(defs, instance, SYNC).success
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance, asset_selection=[QUARANTINE])
    [materialization] = result.asset_materializations_for_node("quarantine")
    frame = store.quarantine_frame()
    assert materialization.metadata["dagster/row_count"].value == len(frame) > 0
    assert materialization.metadata["dagster/column_schema"].value == schema
    assert materialization.metadata["store_backend"].value == "sqlite"
    preview = materialization.metadata["preview"].value
    assert all(key in preview for key in frame["source_key"].head(50))
    assert "| partition |" in preview and "| path |" in preview
