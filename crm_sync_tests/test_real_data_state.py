"""Issue 13, items 4, 5 and 16, through Dagster (or the runner) and the sandbox over HTTP:

- matching keys the CRM treats as equal (HubSpot emails ignore case, Salesforce external ids
  too; Brevo ext_ids do not) end as one winner and one DUPLICATE_MATCHING_KEY entry naming it,
  within a partition and across partitions;
- an older row never overwrites a newer one of the same source key (`superseded`), whatever
  the order partitions run in, and with two runs at once;
- replaying a permanently refused row of a sync with sensitive fields sends nothing the second
  time (the change check uses a digest of the unmasked payload).
"""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import yaml

from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.connectors.hubspot import HubSpotConnector, HubSpotResource
from crm_sync.definitions import build_definitions, build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import load_spec
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import BACKENDS, stored

STORE_BACKENDS = BACKENDS  # every test here runs on SQLite and on PostgreSQL

HUBSPOT = {
    "name": "contacts_to_hubspot", "source": "contacts", "source_key": "contact_id",
    "crm": "hubspot", "object": "contacts", "matching_key": "email",
    "fields": {"email": {"column": "email", "type": "email", "required": True},
               "lastname": {"column": "last_name", "required": True},
               "lifecyclestage": "lifecycle_stage"},
}
SALESFORCE = {
    "name": "companies_to_salesforce", "source": "companies", "source_key": "company_id",
    "crm": "salesforce", "object": "Account", "matching_key": "External_Id__c",
    "fields": {"External_Id__c": {"column": "ext", "required": True},
               "Name": {"column": "name", "required": True}},
}
BREVO = {
    "name": "projects_to_brevo", "source": "projects", "source_key": "project_id",
    "crm": "brevo", "object": "project", "matching_key": "ext_id",
    "matching_column": "project_id", "fields": {"name": {"column": "name", "required": True}},
}


def _setup(tmp_path: Path, monkeypatch, sync: dict, tables: dict[str, list[dict]]):
    """A spec with one sync and its source table(s) as CSV, in tmp_path; returns the spec."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for table, rows in tables.items():
        pd.DataFrame(rows).to_csv(data / f"{table}.csv", index=False)
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"start_date": "2026-11-01", "syncs": [sync]}))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(path))
    monkeypatch.setenv("CRM_SYNC_DATA_DIR", str(data))
    return load_spec(path)


def _contact(key: str, email: str, last: str, day: str, hour: int = 10, stage: str = "lead"):
    return {"contact_id": key, "email": email, "last_name": last, "lifecycle_stage": stage,
            "updated_at": f"{day}T{hour:02d}:00:00Z"}


def _run(spec, days: list[str]) -> list[dict]:
    return sync_partitions(days, spec=spec, log=lambda *_: None)


def _entries(store, sync: str) -> dict[str, dict]:
    frame = store.quarantine_frame(sync)
    return {row["source_key"]: row for row in frame.to_dict("records")}


def _requests(sandbox) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get("requests total", 0)


# -- item 4: matching keys the CRM treats as equal --------------------------------------------
def test_emails_differing_in_case_in_one_partition_keep_one_row(sandbox, store, tmp_path,
                                                                monkeypatch):
    spec = _setup(tmp_path, monkeypatch, HUBSPOT, {"contacts": [
        _contact("C-1", "Grace@Example.com", "Older", "2026-11-02", 9),
        _contact("C-2", "grace@example.com", "Newer", "2026-11-02", 11),
    ]})
    _run(spec, ["2026-11-02"])
    records = stored(sandbox, "hubspot", "contacts")
    assert [r["properties"]["lastname"] for r in records] == ["Newer"]
    assert set(store.state_frame("contacts_to_hubspot")["source_key"]) == {"C-2"}
    entry = _entries(store, "contacts_to_hubspot")["C-1"]
    assert entry["error_code"] == "DUPLICATE_MATCHING_KEY"
    assert "C-2" in entry["message"]  # names the row that won


def test_an_email_under_two_source_keys_on_two_days_keeps_its_owner(sandbox, store, tmp_path,
                                                                    monkeypatch):
    spec = _setup(tmp_path, monkeypatch, HUBSPOT, {"contacts": [
        _contact("C-1", "alan@example.com", "First", "2026-11-02"),
        _contact("C-2", "Alan@Example.com", "Second", "2026-11-03"),
    ]})
    _run(spec, ["2026-11-02", "2026-11-03"])
    records = stored(sandbox, "hubspot", "contacts")
    assert [r["properties"]["lastname"] for r in records] == ["First"]
    assert set(store.state_frame("contacts_to_hubspot")["source_key"]) == {"C-1"}
    entry = _entries(store, "contacts_to_hubspot")["C-2"]
    assert (entry["error_code"], entry["stage"]) == ("DUPLICATE_MATCHING_KEY", "crm")
    assert "C-1" in entry["message"]
    # The owner keeps syncing: a change of C-1 goes through, C-2 stays refused.
    pd.DataFrame([_contact("C-1", "alan@example.com", "First, changed", "2026-11-02"),
                  _contact("C-2", "Alan@Example.com", "Second", "2026-11-03")]).to_csv(
        tmp_path / "data" / "contacts.csv", index=False)
    _run(spec, ["2026-11-02", "2026-11-03"])
    assert [r["properties"]["lastname"] for r in stored(sandbox, "hubspot", "contacts")] == \
        ["First, changed"]
    assert set(_entries(store, "contacts_to_hubspot")) == {"C-2"}


def test_a_key_whose_email_changes_frees_the_old_one(sandbox, store, tmp_path, monkeypatch):
    spec = _setup(tmp_path, monkeypatch, HUBSPOT, {"contacts": [
        _contact("C-1", "alan@example.com", "Turing", "2026-11-02")]})
    _run(spec, ["2026-11-02"])
    pd.DataFrame([_contact("C-1", "alan.turing@example.com", "Turing", "2026-11-03"),
                  _contact("C-2", "ALAN@example.com", "Other", "2026-11-04")]).to_csv(
        tmp_path / "data" / "contacts.csv", index=False)
    _run(spec, ["2026-11-03", "2026-11-04"])
    assert _entries(store, "contacts_to_hubspot") == {}  # alan@ was C-1's, C-1 moved on
    emails = {r["properties"]["email"]: r["properties"]["lastname"]
              for r in stored(sandbox, "hubspot", "contacts")}
    assert emails == {"alan@example.com": "Other", "alan.turing@example.com": "Turing"}


def test_salesforce_external_ids_match_ignoring_case_across_partitions(sandbox, store, tmp_path,
                                                                       monkeypatch):
    spec = _setup(tmp_path, monkeypatch, SALESFORCE, {"companies": [
        {"company_id": "CO-1", "ext": "acme-1", "name": "Acme", "updated_at": "2026-11-02"},
        {"company_id": "CO-2", "ext": "ACME-1", "name": "Acme Corp", "updated_at": "2026-11-03"},
    ]})
    _run(spec, ["2026-11-02", "2026-11-03"])
    assert [r["Name"] for r in stored(sandbox, "salesforce", "Account")] == ["Acme"]
    entry = _entries(store, "companies_to_salesforce")["CO-2"]
    assert entry["error_code"] == "DUPLICATE_MATCHING_KEY" and "CO-1" in entry["message"]


def test_brevo_ext_ids_differing_in_case_are_two_records(sandbox, store, tmp_path, monkeypatch):
    spec = _setup(tmp_path, monkeypatch, BREVO, {"projects": [
        {"project_id": "P-1", "name": "Apollo", "updated_at": "2026-11-02T10:00:00Z"},
        {"project_id": "p-1", "name": "apollo", "updated_at": "2026-11-02T11:00:00Z"},
    ]})
    _run(spec, ["2026-11-02"])
    assert sorted(r["attributes"]["name"] for r in stored(sandbox, "brevo", "project")) == \
        ["Apollo", "apollo"]
    assert _entries(store, "projects_to_brevo") == {}


# -- item 5: older values never overwrite newer ones ------------------------------------------
def _upsert_metadata(day: str, spec) -> dict:
    from crm_sync.pipeline.assets import build_assets

    assets = [a for a in build_assets(spec) if a.partitions_def is not None]
    result = dg.materialize(assets, partition_key=day, resources=build_resources())
    mats = result.asset_materializations_for_node(spec.syncs[0].name)
    return {k: getattr(v, "value", v) for m in mats for k, v in m.metadata.items()}


def test_a_backfill_run_out_of_order_keeps_the_newest_values(sandbox, store, tmp_path,
                                                             monkeypatch):
    spec = _setup(tmp_path, monkeypatch, HUBSPOT, {"contacts": [
        _contact("C-1", "ada@example.com", "Second", "2026-11-02"),
        _contact("C-1", "ada@example.com", "Fifth", "2026-11-05"),
    ]})
    newest = _upsert_metadata("2026-11-05", spec)
    assert newest["created"] == 1
    older = _upsert_metadata("2026-11-02", spec)
    assert [r["properties"]["lastname"] for r in stored(sandbox, "hubspot", "contacts")] == \
        ["Fifth"]
    assert (older["superseded"], older["updated"], older["sent"]) == (1, 0, 0)
    state = store.state_frame("contacts_to_hubspot")
    assert state["updated_at"].tolist() == ["2026-11-05T10:00:00.000000Z"]
    # The rest of a backfill (days 1-4 after day 5) leaves the newest values too.
    _run(spec, ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"])
    assert [r["properties"]["lastname"] for r in stored(sandbox, "hubspot", "contacts")] == \
        ["Fifth"]


def test_two_runs_at_once_never_leave_the_older_values(sandbox, sandbox_url, store, tmp_path,
                                                       monkeypatch):
    """The older run has planned its row when the newer run starts; the older one's request
    reaches the CRM last unless the newer run waits for it (or the older one gives way)."""
    spec = _setup(tmp_path, monkeypatch, HUBSPOT, {"contacts": [
        _contact("C-1", "ada@example.com", "Second", "2026-11-02"),
        _contact("C-1", "ada@example.com", "Fifth", "2026-11-05"),
    ]})
    sync = spec.syncs[0]
    source = pd.read_csv(tmp_path / "data" / "contacts.csv", dtype=str)
    older, newer = (validate_partition(sync, source[source["updated_at"].str.startswith(day)])
                    .valid for day in ("2026-11-02", "2026-11-05"))
    resource = HubSpotResource(base_url=sandbox_url, token=DEFAULT_TOKENS["hubspot"])
    planned, newer_done = threading.Event(), threading.Event()
    original = HubSpotConnector.upsert

    async def upsert(self, items):
        if threading.current_thread().name == "older" and not planned.is_set():
            planned.set()  # the older run has planned and is about to send: let the newer go
            newer_done.wait(timeout=4)
        return await original(self, items)

    monkeypatch.setattr(HubSpotConnector, "upsert", upsert)
    reports = {}

    def run(name, frame, partition):
        try:
            reports[name] = run_upsert(sync, frame, resource, store, partition=partition)
        finally:
            if name == "newer":
                newer_done.set()

    first = threading.Thread(target=run, args=("older", older, "2026-11-02"), name="older")
    first.start()
    assert planned.wait(timeout=60)
    second = threading.Thread(target=run, args=("newer", newer, "2026-11-05"), name="newer")
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert set(reports) == {"older", "newer"}
    assert [r["properties"]["lastname"] for r in stored(sandbox, "hubspot", "contacts")] == \
        ["Fifth"]
    assert store.state_frame("contacts_to_hubspot")["updated_at"].tolist() == \
        ["2026-11-05T10:00:00.000000Z"]


# -- item 16: replay with sensitive fields ----------------------------------------------------
def test_replay_does_not_resend_a_refused_row_of_a_sync_with_sensitive_fields(
        sandbox, store, tmp_path, monkeypatch):
    sync = {**HUBSPOT, "fields": {**HUBSPOT["fields"],
                                  "email": {**HUBSPOT["fields"]["email"], "sensitive": True}}}
    spec = _setup(tmp_path, monkeypatch, sync, {"contacts": [
        _contact("C-1", "ada@example.com", "Lovelace", "2026-11-02", stage="not-a-stage"),
        _contact("C-2", "grace@example.com", "Hopper", "2026-11-02"),
    ]})
    _run(spec, ["2026-11-02"])
    entry = _entries(store, "contacts_to_hubspot")["C-1"]
    assert (entry["stage"], entry["transient"]) == ("crm", 0)  # refused for good
    assert "ada@example.com" not in str(entry["payload"])  # stored masked
    job = build_definitions(str(tmp_path / "syncs.yaml")).resolve_job_def("replay_quarantine")
    sent = []
    for _ in range(2):
        before = _requests(sandbox)
        assert job.execute_in_process().success
        sent.append(_requests(sandbox) - before)
    assert sent == [0, 0]  # same row, same permanent error: not resent
    assert _entries(store, "contacts_to_hubspot")["C-1"]["error_code"] == entry["error_code"]
