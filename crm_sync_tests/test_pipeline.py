"""End to end: materialize the Superleap sync against the real sandbox and read its store."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from crm_sync.pipeline.assets import build_assets
from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored, validation_checks
from crm_sync_tests.bundled_spec import bundled_unlinked

PARTITION = "2026-11-03"


def _source_rows(table: str, day: str) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str, keep_default_na=False)
    return frame[frame["updated_at"].str.startswith(day)].reset_index(drop=True)


def _materialize(spec, partition=PARTITION):
    assets = [a for a in build_assets(spec) if a.partitions_def is not None]
    selection = [a for a in assets if a.key.path[0] in
                 ("source_leads", "validated_leads_to_superleap", "leads_to_superleap")]
    return dg.materialize(selection, partition_key=partition, resources=build_resources())


def test_superleap_partition_end_to_end(sandbox, store):
    spec = bundled_unlinked()
    sync = spec.sync("leads_to_superleap")
    source = _source_rows("leads", PARTITION)
    expected_bad = {f.source_key for f in validate_partition(sync, source).failures}
    assert expected_bad, "the bundled data must contain bad leads in this partition"

    result = _materialize(spec)
    assert result.success

    leads = stored(sandbox, "superleap", "lead")
    by_external = {r["external_id"]: r for r in leads}
    good = source[~source["lead_id"].isin(expected_bad)]
    assert len(leads) == len(good) == len(by_external)
    for row in good.itertuples():
        record = by_external[row.lead_id]
        assert record["name"] == row.name
        assert record["email"] == row.email
        assert record["phone"] == row.phone
        assert record["status"] == row.status

    quarantine = store.quarantine_frame("leads_to_superleap")
    assert set(quarantine["source_key"]) == expected_bad
    assert set(quarantine["stage"]) == {"validation"}
    for row in quarantine.itertuples():
        assert row.message and row.error_code in (
            "PARSE_INVALID_FORMAT", "REQUIRED_FIELD_MISSING", "INVALID_ID_FORMAT")
        if row.error_code == "PARSE_INVALID_FORMAT":
            assert row.message.startswith("invalid email format: ")

    state = store.state_frame("leads_to_superleap")
    assert set(state["crm_id"]) == {r["id"] for r in leads}

    # A second run sends nothing new and duplicates nothing.
    requests_before = sandbox.get("/_sandbox/stats").json()["counters"]["requests total"]
    again = _materialize(spec)
    assert again.success
    meta = again.asset_materializations_for_node("leads_to_superleap")[0].metadata
    assert meta["unchanged"].value == len(good) and meta["created"].value == 0
    assert sandbox.get("/_sandbox/stats").json()["counters"]["requests total"] == requests_before
    assert len(stored(sandbox, "superleap", "lead")) == len(good)


def test_changed_rows_update_the_same_records(sandbox, store, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    source = _source_rows("leads", PARTITION).head(30)
    source = source[source["superleap_id"] == ""]
    source.to_csv(data / "leads.csv", index=False)
    resources = build_resources()
    resources["source"] = SourceResource(data_dir=str(data))
    spec = bundled_unlinked()
    assets = [a for a in build_assets(spec) if a.key.path[0] in
              ("source_leads", "validated_leads_to_superleap", "leads_to_superleap")]
    assert dg.materialize(assets, partition_key=PARTITION, resources=resources).success
    first = {r["external_id"]: r["id"] for r in stored(sandbox, "superleap", "lead")}

    source.loc[source.index[:5], "status"] = "customer"
    source.to_csv(data / "leads.csv", index=False)
    result = dg.materialize(assets, partition_key=PARTITION, resources=resources)
    meta = result.asset_materializations_for_node("leads_to_superleap")[0].metadata
    valid = len(first)
    changed = min(5, valid)
    assert meta["updated"].value == changed
    assert meta["unchanged"].value == valid - changed
    records = stored(sandbox, "superleap", "lead")
    assert {r["external_id"]: r["id"] for r in records} == first  # same ids, no new records
    assert sum(r["status"] == "customer" for r in records) >= changed


def test_quarantine_asset_reports_what_the_store_holds(sandbox, store):
    spec = bundled_unlinked()
    assert _materialize(spec).success
    quarantine = [a for a in build_assets(spec) if a.key.path[0] == "quarantine"]
    result = dg.materialize(quarantine, resources=build_resources())
    meta = result.asset_materializations_for_node("quarantine")[0].metadata
    frame = store.quarantine_frame()
    assert meta["rows"].value == len(frame) > 0
    assert meta["rows_leads_to_superleap"].value == len(frame)
    for code in set(frame["error_code"]):
        assert code in meta["by_error_code"].value


def test_a_partition_over_the_bad_row_threshold_is_not_sent(sandbox, store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    source = _source_rows("leads", PARTITION).head(20).copy()
    source["superleap_id"] = ""
    source.loc[source.index[:11], "email"] = "not an email"  # 55% bad, threshold is 50%
    source.to_csv(data / "leads.csv", index=False)
    resources = build_resources()
    resources["source"] = SourceResource(data_dir=str(data))
    spec = bundled_unlinked()
    assets = [a for a in build_assets(spec) if a.key.path[0] in
              ("source_leads", "validated_leads_to_superleap", "leads_to_superleap")]
    result = dg.materialize(assets, partition_key=PARTITION, resources=resources,
                            raise_on_error=False)
    [evaluation] = validation_checks(result)
    assert evaluation.passed is False
    assert "55%" in evaluation.description and "threshold of 50%" in evaluation.description
    assert result.asset_materializations_for_node("leads_to_superleap") == []
    assert stored(sandbox, "superleap", "lead") == []
    assert "requests total" not in sandbox.get("/_sandbox/stats").json()["counters"]
    assert len(store.quarantine_frame("leads_to_superleap")) == 11

    source.loc[source.index[:11], "email"] = source.loc[source.index[:11], "lead_id"].str.lower() \
        + "@example.com"  # fixed at the source: the next run sends everything
    source.to_csv(data / "leads.csv", index=False)
    result = dg.materialize(assets, partition_key=PARTITION, resources=resources)
    assert validation_checks(result)[0].passed
    assert len(stored(sandbox, "superleap", "lead")) == 20
    assert store.quarantine_frame("leads_to_superleap").empty


def _leads_assets(spec):
    return [a for a in build_assets(spec) if a.key.path[0] in
            ("source_leads", "validated_leads_to_superleap", "leads_to_superleap")]


def test_dry_run_counts_and_sends_nothing(sandbox, store):
    spec = bundled_unlinked()
    config = {"ops": {"leads_to_superleap": {"config": {"dry_run": True}}}}
    result = dg.materialize(_leads_assets(spec), partition_key=PARTITION,
                            resources=build_resources(), run_config=config)
    meta = result.asset_materializations_for_node("leads_to_superleap")[0].metadata
    valid = result.asset_materializations_for_node("validated_leads_to_superleap")[0] \
        .metadata["rows_valid"].value
    assert meta["dry_run"].value is True
    assert meta["would_create"].value == valid and meta["sent"].value == 0
    assert "requests total" not in sandbox.get("/_sandbox/stats").json()["counters"]
    assert store.state_frame("leads_to_superleap").empty

    dg.materialize(_leads_assets(spec), partition_key=PARTITION, resources=build_resources())
    result = dg.materialize(_leads_assets(spec), partition_key=PARTITION,
                            resources=build_resources(), run_config=config)
    meta = result.asset_materializations_for_node("leads_to_superleap")[0].metadata
    assert meta["unchanged"].value == valid and meta["would_create"].value == 0


@pytest.mark.parametrize("mode", ["create_only", "update_only"])
def test_create_only_and_update_only_modes(sandbox, store, tmp_path, mode):
    data = tmp_path / "data"
    data.mkdir()
    source = _source_rows("leads", PARTITION)
    source["superleap_id"] = ""
    bad = {f.source_key for f in validate_partition(bundled_unlinked().sync("leads_to_superleap"),
                                                        source).failures}
    source = source[~source["lead_id"].isin(bad)].head(10).copy()
    source["status"] = "new"
    source.head(4).to_csv(data / "leads.csv", index=False)  # 4 rows exist in the CRM first
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    plain = bundled_unlinked()
    assert dg.materialize(_leads_assets(plain), partition_key=PARTITION,
                          resources=resources).success
    source["status"] = "contacted"  # every row changed
    source.to_csv(data / "leads.csv", index=False)
    spec = plain.model_copy(update={"syncs": [
        s.model_copy(update={"mode": mode}) if s.name == "leads_to_superleap" else s
        for s in plain.syncs]})
    result = dg.materialize(_leads_assets(spec), partition_key=PARTITION, resources=resources)
    meta = result.asset_materializations_for_node("leads_to_superleap")[0].metadata
    records = stored(sandbox, "superleap", "lead")
    if mode == "create_only":
        assert (meta["created"].value, meta["updated"].value, meta["skipped"].value) == (6, 0, 4)
        assert len(records) == 10
        assert sum(r["status"] == "contacted" for r in records) == 6  # old ones untouched
    else:
        assert (meta["created"].value, meta["updated"].value, meta["skipped"].value) == (0, 4, 6)
        assert len(records) == 4
        assert all(r["status"] == "contacted" for r in records)
