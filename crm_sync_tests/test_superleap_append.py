"""`mode: append`: records that only ever receive new rows, such as call logs (issue 17).

Over HTTP to the sandbox (Superleap's `communication` object), with a real sync store: every
row is created once through `POST .../record/bulk_create` (the sandbox's request counters show
bulk_create and never bulk_upsert); a row changed after it was created is counted
(`skipped`, `append_changed`) and never sent, so the CRM record keeps its first version; a
new row is created; an unanswered bulk_create is looked up by external_id and adopted, never
sent twice, even when the row changed in between. A spec with `mode: append` is refused at
load time for the CRMs crm_sync has no create-only path for, with the reason.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml

from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.load.runner import run_upsert
from crm_sync.pipeline.assets import build_assets
from crm_sync.spec import PROJECT_ROOT, SpecError, load_spec
from crm_sync.state.writeahead import UNKNOWN_OUTCOME, WriteAheadLog
from crm_sync.transform.validate import validate_partition
from crm_sync_tests import invariant as inv
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_raw

SYNC = "calls_to_superleap"
CALLS_SPEC = {
    "start_date": "2026-11-01",
    "syncs": [{
        "name": SYNC, "description": "Call logs into Superleap `communication` records.",
        "source": "calls", "source_key": "call_id", "crm": "superleap",
        "object": "communication", "matching_key": "id", "mode": "append",
        "fields": {"name": {"column": "subject", "required": True},
                   "direction": "direction",
                   "duration_seconds": {"column": "duration_seconds", "type": "integer"},
                   "occurred_at": "occurred_at",
                   "external_id": "call_id"}}]}


def calls_spec(tmp_path, **changes):
    sync = {**CALLS_SPEC["syncs"][0], **changes}
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({**CALLS_SPEC, "syncs": [sync]}))
    return load_spec(path)


def calls(n: int, start: int = 0) -> list[dict]:
    return [{"call_id": f"CALL-{i:05d}", "subject": f"Call {i}",
             "direction": "inbound" if i % 2 else "outbound", "duration_seconds": 30 + i,
             "occurred_at": "2026-11-03T09:00:00Z", "updated_at": "2026-11-03T10:00:00Z"}
            for i in range(start, start + n)]


def write_calls(tmp_path, rows: list[dict]) -> SourceResource:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(data / "calls.csv", index=False)
    return SourceResource(data_dir=str(data))


def valid_rows(spec, source: SourceResource) -> pd.DataFrame:
    result = validate_partition(spec, source.read_partition(spec.source, *inv.WINDOW))
    assert result.failures == []
    return result.valid


def requests(sandbox) -> dict[str, int]:
    counters = sandbox.get("/_sandbox/stats").json()["counters"]
    return {endpoint: counters.get(f"requests POST superleap {endpoint}", 0)
            for endpoint in ("bulk_create", "bulk_upsert", "filter")}


def by_call(sandbox) -> dict[str, dict]:
    records = stored(sandbox, "superleap", "communication")
    found = {r["external_id"]: r for r in records}
    assert len(found) == len(records), "a call log was created twice"
    return found


def test_an_append_sync_creates_each_row_once_and_never_sends_a_change(
        sandbox, sandbox_url, store, tmp_path):
    spec = calls_spec(tmp_path).sync(SYNC)
    crm = inv.resource("superleap", sandbox_url)
    rows = calls(12)
    first = run_upsert(spec, valid_rows(spec, write_calls(tmp_path, rows)), crm, store)
    assert (first.created, first.updated, first.failed, first.skipped) == (12, 0, 0, 0)
    assert requests(sandbox)["bulk_create"] == 2 and requests(sandbox)["bulk_upsert"] == 0
    created = by_call(sandbox)
    assert sorted(created) == [f"CALL-{i:05d}" for i in range(12)]
    assert created["CALL-00003"]["duration_seconds"] == 33
    assert created["CALL-00003"]["occurred_at"] == "2026-11-03T09:00:00Z"
    # bulk_create answers no ids: looked up by external_id, and the state keeps them
    state = store.get_state(spec.name, list(created))
    assert {key: crm_id for key, (crm_id, _) in state.items()} == \
        {key: r["id"] for key, r in created.items()}
    assert WriteAheadLog(store, spec.name).pending() == {}

    # The source corrects call 3 (a later version of it) and logs one new call.
    rows[3] = {**rows[3], "subject": "Call 3 (edited)", "duration_seconds": 999,
               "updated_at": "2026-11-03T11:00:00Z"}
    source = write_calls(tmp_path, rows + calls(1, start=12))
    second = run_upsert(spec, valid_rows(spec, source), crm, store)
    assert (second.created, second.updated, second.unchanged, second.skipped,
            second.append_changed, second.failed) == (1, 0, 11, 1, 1, 0)
    assert second.sent == 1
    counts = requests(sandbox)
    assert counts["bulk_create"] == 3 and counts["bulk_upsert"] == 0
    after = by_call(sandbox)
    assert len(after) == 13 and after["CALL-00012"]["name"] == "Call 12"
    assert after["CALL-00003"] == created["CALL-00003"]  # the record is untouched

    # Not on a full resync either: nothing is sent again, and the change is still counted.
    resync = run_upsert(spec, valid_rows(spec, source), crm, store, full_resync=True)
    assert (resync.created, resync.updated, resync.sent, resync.skipped,
            resync.append_changed) == (0, 0, 0, 13, 1)
    assert requests(sandbox) == counts
    assert by_call(sandbox) == after


def test_an_unanswered_append_is_adopted_not_resent_even_if_the_row_changed(
        sandbox, sandbox_url, store, tmp_path):
    spec = calls_spec(tmp_path).sync(SYNC)
    rows = calls(5)
    sandbox.post("/_sandbox/faults", json={"seed": 7, "rate_drop_after_commit": 1.0})
    lost = run_upsert(spec, valid_rows(spec, write_calls(tmp_path, rows)),
                      inv.resource("superleap", sandbox_url), store)
    assert lost.created == 0 and lost.failed_transient == 5
    assert requests(sandbox)["bulk_create"] == 1  # not resent on the dropped connection
    assert len(WriteAheadLog(store, spec.name).pending()) == 5
    made = by_call(sandbox)
    assert len(made) == 5  # Superleap had created them; crm_sync never heard

    sandbox.post("/_sandbox/faults", json={})
    rows[0] = {**rows[0], "subject": "Call 0 (edited)", "updated_at": "2026-11-03T11:00:00Z"}
    source = write_calls(tmp_path, rows)
    patient = run_upsert(spec, valid_rows(spec, source), inv.resource(
        "superleap", sandbox_url, reconcile_after_seconds=3600), store)
    assert patient.failed_by_code == {UNKNOWN_OUTCOME: 5}  # may still be in progress: wait
    assert requests(sandbox)["bulk_create"] == 1
    settled = run_upsert(spec, valid_rows(spec, source), inv.resource(
        "superleap", sandbox_url, reconcile_after_seconds=0), store)
    assert settled.created == 5 and settled.failed == 0  # found by external_id: adopted
    counts = requests(sandbox)
    assert counts["bulk_create"] == 1 and counts["bulk_upsert"] == 0 and counts["filter"] >= 1
    assert by_call(sandbox) == made  # once each; the edit was not sent either
    assert WriteAheadLog(store, spec.name).pending() == {}
    state = store.get_state(spec.name, list(made))
    assert {key: crm_id for key, (crm_id, _) in state.items()} == \
        {key: r["id"] for key, r in made.items()}


def test_an_append_row_the_crm_rejects_is_quarantined_and_created_once_fixed(
        sandbox, sandbox_url, store, tmp_path):
    spec = calls_spec(tmp_path).sync(SYNC)
    crm = inv.resource("superleap", sandbox_url)
    rows = calls(4)
    rows[2] = {**rows[2], "occurred_at": "yesterday"}  # not a DateTime: Superleap refuses it
    report = run_upsert(spec, valid_rows(spec, write_calls(tmp_path, rows)), crm, store)
    assert (report.created, report.failed) == (3, 1)
    held = store.quarantine_frame(spec.name)
    assert list(held["source_key"]) == ["CALL-00002"] and not any(held["transient"])
    assert sorted(by_call(sandbox)) == ["CALL-00000", "CALL-00001", "CALL-00003"]

    # Never created, so a fixed version is not "a change": it is created, once.
    rows[2] = {**rows[2], "occurred_at": "2026-11-03T09:30:00Z",
               "updated_at": "2026-11-03T11:00:00Z"}
    fixed = run_upsert(spec, valid_rows(spec, write_calls(tmp_path, rows)), crm, store)
    assert (fixed.created, fixed.skipped, fixed.unchanged) == (1, 0, 3)
    assert by_call(sandbox)["CALL-00002"]["occurred_at"] == "2026-11-03T09:30:00Z"
    assert store.quarantine_frame(spec.name).empty
    assert requests(sandbox)["bulk_upsert"] == 0


def test_an_append_sync_runs_as_dagster_assets_and_reports_the_changes(sandbox, tmp_path):
    spec = calls_spec(tmp_path)
    assets = [a for a in build_assets(spec) if a.key.path[0] in
              ("source_calls", f"validated_{SYNC}", SYNC)]
    rows = calls(4)
    resources = {**build_resources(), "source": write_calls(tmp_path, rows)}
    assert dg.materialize(assets, partition_key="2026-11-03", resources=resources).success
    rows = [{**r, "subject": r["subject"] + " (edited)"} for r in rows] + calls(2, start=4)
    resources["source"] = write_calls(tmp_path, rows)
    result = dg.materialize(assets, partition_key="2026-11-03", resources=resources)
    meta = result.asset_materializations_for_node(SYNC)[0].metadata
    assert (meta["created"].value, meta["updated"].value, meta["skipped"].value,
            meta["append_changed"].value) == (2, 0, 4, 4)
    records = by_call(sandbox)
    assert len(records) == 6 and not any(r["name"].endswith("(edited)") for r in records.values())
    assert requests(sandbox)["bulk_upsert"] == 0


@pytest.mark.parametrize("crm", ["hubspot", "brevo", "salesforce"])
def test_mode_append_is_refused_for_a_crm_without_a_create_only_path(tmp_path, crm):
    raw = bundled_raw()
    raw["syncs"] = [{**s, "mode": "append"} for s in raw["syncs"] if s["crm"] == crm]
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert f"mode 'append' is not available for {crm}" in text
    assert "upsert" in text and "create_only" in text  # why, and what to use instead


def test_mode_append_on_superleap_needs_the_field_an_unanswered_create_is_looked_up_by(
        tmp_path):
    fields = {k: v for k, v in CALLS_SPEC["syncs"][0]["fields"].items() if k != "external_id"}
    with pytest.raises(SpecError, match="mode 'append' on superleap needs a mapped field "
                                        "'external_id'"):
        calls_spec(tmp_path, fields=fields)
    assert calls_spec(tmp_path, mode="create_only", fields=fields)  # only append insists
    assert calls_spec(tmp_path).sync(SYNC).mode == "append"


def test_the_readme_shows_the_call_log_sync_these_tests_run():
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("A call-log sync", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    shown = yaml.safe_load(block)
    assert shown == [{k: v for k, v in CALLS_SPEC["syncs"][0].items() if k != "description"}]
