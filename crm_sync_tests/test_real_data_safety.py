"""Issue 13, real data: dates that do not exist, names that would leave the CRM's API path, a
mirror run on a truncated file, and numbers that must reach the CRM exactly. Each test runs the
real pipeline (Dagster, the sandbox over HTTP) or the real loader."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.sync_steps import sync_asset_names, sync_run_config
from crm_sync.connectors.brevo import BrevoResource
from crm_sync.connectors.core import FatalCrmError
from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.definitions import build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT, FieldMapping, SpecError, load_spec
from crm_sync.transform.convert import convert
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

DAYS = ["2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]


def _columns(table: str) -> list[str]:
    return list(pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", nrows=0).columns)


def _write(data: Path, table: str, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    for col in _columns(table):
        if col not in frame:
            frame[col] = ""
    data.mkdir(exist_ok=True)
    frame[_columns(table)].fillna("").to_csv(data / f"{table}.csv", index=False)


def _resources(data: Path) -> dict:
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    resources["brevo"] = BrevoResource(base_url=resources["brevo"].base_url,
                                       token=dg.EnvVar("BREVO_API_KEY"),
                                       poll_interval_seconds=0.01,
                                       max_poll_interval_seconds=0.05)
    return resources


def _materialize(spec, sync: str, day: str, data: Path, config: dict | None = None,
                 raise_on_error: bool = True):
    assets = [a for a in build_assets(spec)
              if a.key.path[-1] in sync_asset_names(spec.sync(sync))]
    run_config = {"ops": sync_run_config(spec.sync(sync), **config)} if config else None
    return dg.materialize(assets, partition_key=day, resources=_resources(data),
                          run_config=run_config, raise_on_error=raise_on_error)


def _counter(sandbox, name: str) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get(name, 0)


@pytest.fixture
def brevo(sandbox):
    """The sandbox with Brevo's run-time settings pinned, put back afterwards."""
    defaults = {"process_steps": 2, "rate_limit": None}
    sandbox.post("/_sandbox/brevo/settings", json=defaults).raise_for_status()
    yield sandbox
    sandbox.post("/_sandbox/brevo/settings", json=defaults)


def _project(key: str, day: str, **values) -> dict:
    return {"project_id": key, "name": f"Project {key}", "status": "active", "budget": "1000",
            "start_date": "2026-10-01", "company_id": "CO-1", "custom_fields": "",
            "updated_at": f"{day}T12:00:00Z", **values}


# -- item 10: dates that do not exist; rows Brevo never confirms ------------------------------
def test_a_brevo_date_that_does_not_exist_is_quarantined_at_validation_and_never_sent(
        brevo, store, tmp_path):
    spec = bundled_unlinked()
    day = DAYS[0]
    good = [_project(f"P-OK-{i}", day) for i in range(4)] + \
        [_project("P-LEAP", day, start_date="2028-02-29")]
    bad = {"P-FEB30": "2026-02-30", "P-APR31": "2026-04-31", "P-FEB29": "2027-02-29"}
    rows = good + [_project(key, day, start_date=value) for key, value in bad.items()]
    _write(tmp_path / "data", "projects", rows)

    assert _materialize(spec, "projects_to_brevo", day, tmp_path / "data").success
    records = {r["identifiers"]["ext_id"]: r for r in stored(brevo, "brevo", "project")}
    assert set(records) == {r["project_id"] for r in good}
    assert records["P-LEAP"]["attributes"]["start_date"] == "2028-02-29"
    assert _counter(brevo, "brevo records accepted") == len(good)  # the bad ones never left
    quarantine = store.quarantine_frame("projects_to_brevo").set_index("source_key")
    assert set(quarantine.index) == set(bad)
    for key, value in bad.items():
        entry = quarantine.loc[key]
        assert (entry["stage"], entry["error_code"], entry["rules"], entry["column_name"],
                entry["value"]) == ("validation", "PARSE_INVALID_FORMAT", "date_format",
                                    "start_date", value)
        assert value in entry["message"] and "date" in entry["message"]


@pytest.mark.parametrize("sync", ["leads_to_superleap", "contacts_to_hubspot",
                                  "companies_to_salesforce", "projects_to_brevo"])
def test_every_crm_refuses_a_date_that_does_not_exist(sync):
    base = bundled_unlinked().sync(sync)
    spec = base.model_copy(update={"fields": {
        **base.fields, "closedate": FieldMapping(column="closes_on", type="date")}})
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{spec.source}.csv", dtype=str,
                        keep_default_na=False).head(40)
    frame = frame[~frame[spec.source_key].isin(
        {f.source_key for f in validate_partition(base, frame).failures})].head(4).copy()
    frame["closes_on"] = ["2026-02-28", "2026-02-30", "2026-06-31", "２０２６-01-01"]
    result = validate_partition(spec, frame)
    failed = {f.source_key: f for f in result.failures}
    keys = list(frame[spec.source_key])
    assert set(failed) == set(keys[1:]), [f.message for f in result.failures]
    assert {f.rules for f in failed.values()} == {"date_format"}


def test_a_row_brevo_keeps_dropping_becomes_permanent_after_max_unconfirmed_runs(
        brevo, store, tmp_path):
    spec = bundled_unlinked()
    sync = "projects_to_brevo"
    limit = 3  # the default of `max_unconfirmed_runs`
    data = tmp_path / "data"
    # cf_0 is a number attribute: Brevo accepts the request, then drops the record in its
    # asynchronous process without a word (the sandbox does as the real Brevo does).
    dropped = _project("P-DROP", DAYS[0], custom_fields=json.dumps({"cf_0": "not a number"}))
    rows = [dropped] + [_project(f"P-{day}", day) for day in DAYS]
    _write(data, "projects", rows)

    for run, day in enumerate(DAYS[:limit], start=1):
        before = _counter(brevo, "brevo records accepted")
        assert _materialize(spec, sync, day, data).success
        # each run sends the row of its day and the unconfirmed row once
        assert _counter(brevo, "brevo records accepted") - before == 2
        [entry] = store.quarantine_frame(sync).to_dict("records")
        assert (entry["source_key"], entry["error_code"], entry["runs"]) == \
            ("P-DROP", "NOT_CONFIRMED", run)
        assert bool(entry["transient"]) is (run < limit), entry
    assert f"never confirmed after {limit} runs" in entry["message"]
    assert "holds no project record with ext_id 'P-DROP'" in entry["message"]

    before = _counter(brevo, "brevo records accepted")
    assert _materialize(spec, sync, DAYS[limit], data).success
    assert _counter(brevo, "brevo records accepted") - before == 1  # only the day's own row
    [entry] = store.quarantine_frame(sync).to_dict("records")
    assert entry["source_key"] == "P-DROP" and not entry["transient"]
    assert {r["identifiers"]["ext_id"] for r in stored(brevo, "brevo", "project")} == \
        {f"P-{day}" for day in DAYS}


def test_max_unconfirmed_runs_is_a_spec_field_of_at_least_one(tmp_path):
    raw = bundled_raw()
    raw["syncs"][3]["max_unconfirmed_runs"] = 5
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).sync("projects_to_brevo").max_unconfirmed_runs == 5
    assert bundled_unlinked().sync("projects_to_brevo").max_unconfirmed_runs == 3
    raw["syncs"][3]["max_unconfirmed_runs"] = 0
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="projects_to_brevo.*max_unconfirmed_runs"):
        load_spec(path)


# -- item 14: names that would leave the CRM's API path ---------------------------------------
TRAVERSAL = "../../../../_sandbox/reset?"
SYNC_OF = {"superleap": "leads_to_superleap", "hubspot": "contacts_to_hubspot",
           "salesforce": "companies_to_salesforce", "brevo": "projects_to_brevo"}


def _spec_with(tmp_path: Path, sync: str, **changes) -> Path:
    raw = bundled_raw()
    for entry in raw["syncs"]:
        if entry["name"] == sync:
            entry.update(changes)
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("crm", list(SYNC_OF))
def test_a_spec_whose_object_leaves_the_api_path_is_refused_at_load_time(crm, tmp_path):
    sync = SYNC_OF[crm]
    for bad in (TRAVERSAL, "lead/../x", "lead?x=1", "lead#x", "lead x", "lead%2F", "", ".."):
        with pytest.raises(SpecError) as caught:
            load_spec(_spec_with(tmp_path, sync, object=bad))
        message = str(caught.value)
        assert f"sync {sync!r}" in message and "object" in message, message
        assert "Traceback" not in message


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_matching_key_or_field_name_outside_the_crms_characters_is_refused(crm, tmp_path):
    sync = SYNC_OF[crm]
    raw = bundled_raw()
    entry = next(e for e in raw["syncs"] if e["name"] == sync)
    key = "../../x?" if crm == "hubspot" else "External_Id__c/../../x"
    entry["fields"][key] = entry["fields"].pop(entry["matching_key"])
    entry["matching_key"] = key
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert f"sync {sync!r}" in str(caught.value) and "matching_key" in str(caught.value)

    entry = next(e for e in bundled_raw()["syncs"]
                 if e["name"] == sync)
    raw = {"syncs": [{**entry, "fields": {**entry["fields"], "bad name/..": "name"}}]}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert f"sync {sync!r}" in str(caught.value) and "'bad name/..'" in str(caught.value)


def test_documented_names_still_load(tmp_path):
    for sync, changes in [
        ("contacts_to_hubspot", {"object": "2-3508482"}),  # a custom object's objectTypeId
        ("contacts_to_hubspot", {"object": "p_cars"}),  # its fully qualified name
        ("companies_to_salesforce", {"object": "My_Object__c"}),
        ("companies_to_salesforce", {"object": "ns__Thing__c"}),  # a managed package's object
        ("projects_to_brevo", {"object": "project_2"}),
        ("leads_to_superleap", {"object": "custom_lead"}),
    ]:
        assert load_spec(_spec_with(tmp_path, sync, **changes)).sync(sync).object == \
            changes["object"]


def test_path_segments_are_encoded():
    from crm_sync.connectors.wire import path_segment

    assert path_segment("contacts") == "contacts"
    assert path_segment("2-3508482") == "2-3508482"
    assert path_segment(TRAVERSAL) == "..%2F..%2F..%2F..%2F_sandbox%2Freset%3F"
    assert path_segment("..") == "%2E%2E" and path_segment(".") == "%2E"
    assert path_segment("a b#c") == "a%20b%23c"
    assert path_segment(17) == "17"


def test_a_traversal_object_that_bypassed_the_loader_stays_inside_the_api_path(sandbox, store,
                                                                               sandbox_url):
    """Defence in depth: a spec built in code, never validated, cannot reach another path."""
    spec = bundled_unlinked()
    rows = pd.read_csv(PROJECT_ROOT / "data" / "contacts.csv", dtype=str,
                       keep_default_na=False).head(5)
    hubspot = spec.sync("contacts_to_hubspot")
    resource = HubSpotResource(base_url=sandbox_url, token=DEFAULT_TOKENS["hubspot"])
    assert run_upsert(hubspot, validate_partition(hubspot, rows).valid, resource,
                      store).created == 5  # another sync's records
    sneaky = hubspot.model_copy(update={"name": "sneaky", "object": TRAVERSAL})
    with pytest.raises(FatalCrmError):
        run_upsert(sneaky, validate_partition(sneaky, rows).valid, resource, store)
    # (a reset would have emptied the records and the request counters too)
    assert len(stored(sandbox, "hubspot", "contacts")) == 5
    assert _counter(sandbox, "requests POST hubspot batch/upsert") == 1


# -- item 15: a mirror run on a truncated file ------------------------------------------------
def _mirror_spec(share: float | None = None):
    plain = bundled_unlinked()
    update = {"mode": "mirror"}
    if share is not None:
        update["mirror_max_delete_share"] = share
    return plain.model_copy(update={"syncs": [
        s.model_copy(update=update) if s.name == "contacts_to_hubspot" else s
        for s in plain.syncs]})


def _failure_text(result) -> str:
    texts = []
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            texts.append(f"{error.cls_name}: {error.message}")
    return "\n".join(texts)


def test_a_mirror_run_on_a_truncated_file_deletes_nothing_without_the_run_config(
        sandbox, store, tmp_path):
    sync = "contacts_to_hubspot"
    spec = _mirror_spec()
    data = tmp_path / "data"
    data.mkdir()
    full = pd.read_csv(PROJECT_ROOT / "data" / "contacts.csv", dtype=str, keep_default_na=False)
    full.to_csv(data / "contacts.csv", index=False)
    for day in sorted({value[:10] for value in full["updated_at"]}):
        assert _materialize(spec, sync, day, data).success
    synced = len(store.state_frame(sync))
    in_crm = len(stored(sandbox, "hubspot", "contacts"))
    assert synced == in_crm > 1000

    full.head(5).to_csv(data / "contacts.csv", index=False)  # the file, cut short
    kept = set(store.state_frame(sync)["source_key"]) & set(full.head(5)["contact_id"])
    result = _materialize(spec, sync, "2026-11-01", data, raise_on_error=False)
    assert not result.success
    text = _failure_text(result)
    gone = synced - len(kept)
    counts = re.search(r"would delete (\d+) of the (\d+) hubspot records", text)
    assert counts and (int(counts[1]), int(counts[2])) == (gone, synced), text
    assert "nothing was deleted" in text and "mirror_max_delete_share (10%)" in text, text
    assert "allow_mass_delete" in text, text
    assert len(stored(sandbox, "hubspot", "contacts")) == in_crm  # nothing deleted
    assert len(store.state_frame(sync)) == synced
    assert _counter(sandbox, "requests POST hubspot batch/archive") == 0

    result = _materialize(spec, sync, "2026-11-01", data, config={"allow_mass_delete": True})
    assert result.success
    meta = result.asset_materializations_for_node(f"{sync}_mirror")[0].metadata
    assert meta["deleted"].value == gone
    assert len(stored(sandbox, "hubspot", "contacts")) == in_crm - gone
    assert set(store.state_frame(sync)["source_key"]) == kept


def test_a_mirror_run_within_the_share_deletes_and_the_share_is_a_spec_field(sandbox, store,
                                                                             tmp_path):
    sync = "contacts_to_hubspot"
    data = tmp_path / "data"
    data.mkdir()
    day = pd.read_csv(PROJECT_ROOT / "data" / "contacts.csv", dtype=str, keep_default_na=False)
    day = day[day["updated_at"].str.startswith("2026-11-01")]
    day.to_csv(data / "contacts.csv", index=False)
    assert _materialize(_mirror_spec(), sync, "2026-11-01", data).success
    synced = len(store.state_frame(sync))
    few = 5  # under 10% of ~200
    day.iloc[few:].to_csv(data / "contacts.csv", index=False)
    gone = synced - len(store.state_frame(sync).merge(
        day.iloc[few:], left_on="source_key", right_on="contact_id"))
    assert 0 < gone <= 0.1 * synced
    result = _materialize(_mirror_spec(), sync, "2026-11-01", data)
    assert result.asset_materializations_for_node(f"{sync}_mirror")[0].metadata["deleted"].value == gone
    # A stricter share set in the spec refuses the same kind of run.
    day.iloc[2 * few:].to_csv(data / "contacts.csv", index=False)
    result = _materialize(_mirror_spec(0.01), sync, "2026-11-01", data, raise_on_error=False)
    assert not result.success and "mirror_max_delete_share (1%)" in _failure_text(result)


# -- smaller items: exact integers, ASCII digits only ------------------------------------------
def test_an_integer_beyond_2_53_reaches_brevo_exactly(brevo, store, tmp_path):
    spec = bundled_unlinked()
    day = DAYS[0]
    rows = [_project("P-BIG", day, budget="12345678901234567890"),
            _project("P-NEG", day, budget="-9007199254740993"),
            _project("P-ZEROS", day, budget="9007199254740993.000"),
            _project("P-FRACTION", day, budget="1234.5"),
            _project("P-HUGE", day, budget="123456789012345678901234")]  # beyond 64 bits
    _write(tmp_path / "data", "projects", rows)
    assert _materialize(spec, "projects_to_brevo", day, tmp_path / "data").success
    budgets = {r["identifiers"]["ext_id"]: r["attributes"]["budget"]
               for r in stored(brevo, "brevo", "project")}
    assert budgets == {"P-BIG": 12345678901234567890, "P-NEG": -9007199254740993,
                       "P-ZEROS": 9007199254740993, "P-FRACTION": 1234.5,
                       "P-HUGE": 123456789012345678901234}
    assert type(budgets["P-BIG"]) is int and type(budgets["P-ZEROS"]) is int
    assert store.quarantine_frame("projects_to_brevo").empty  # and each one is confirmed
    assert len(store.state_frame("projects_to_brevo")) == 5


def test_numbers_in_other_scripts_are_quarantined_not_read_as_ascii_digits(sandbox, store,
                                                                           tmp_path):
    spec = bundled_unlinked()
    day = DAYS[0]
    base = {"name": "Acme", "domain": "acme.example", "industry": "Retail", "employees": "42",
            "phone": "+1-555-123-4567", "country": "US", "annual_revenue": "1000",
            "updated_at": f"{day}T12:00:00Z"}
    good = {f"CO-OK-{i}": {} for i in range(6)}
    bad = {"CO-ARABIC": {"employees": "٣"}, "CO-FULLWIDTH": {"annual_revenue": "１２"},
           "CO-FULLWIDTH-INT": {"employees": "１２"},
           "CO-DEVANAGARI": {"annual_revenue": "१.५"}}
    _write(tmp_path / "data", "companies",
           [{**base, "company_id": k, **v} for k, v in {**good, **bad}.items()])
    assert _materialize(spec, "companies_to_salesforce", day, tmp_path / "data").success
    assert {r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")} == set(good)
    quarantine = store.quarantine_frame("companies_to_salesforce").set_index("source_key")
    assert set(quarantine.index) == set(bad)
    assert set(quarantine["stage"]) == {"validation"}
    assert set(quarantine["error_code"]) == {"PARSE_INVALID_FORMAT"}


@pytest.mark.parametrize("value,kind", [("٣", "integer"), ("１２", "integer"), ("１２", "number"),
                                        ("٣.٥", "number"), ("1_000", "integer"),
                                        ("1_000.5", "number")])
def test_convert_accepts_ascii_digits_only(value, kind):
    with pytest.raises(ValueError):
        convert(value, kind)


def test_convert_keeps_integers_exact():
    assert convert("12345678901234567890", "number") == 12345678901234567890
    assert type(convert("12345678901234567890", "number")) is int
    assert convert("1.5e3", "number") == 1500 and convert("-0", "number") == 0
    assert convert(" 42 ", "integer") == 42 and convert("2.5", "number") == 2.5
