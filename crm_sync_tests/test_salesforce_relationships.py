"""Salesforce relationships, over HTTP to the sandbox: a Contact names its Account by the
Account's external id in the upsert body (`"Account": {"External_Id__c": "CO-1"}`), the sandbox
resolves it or fails the record with Salesforce's error, and its admin API shows which Account
each Contact is linked to; the connector builds those bodies from RowLinks (with_links) and
reports a missing parent as ASSOCIATION_TARGET_MISSING; end to end, a spec `associations:` entry
links each Contact to its Account through create, change and removal of the source value."""

from __future__ import annotations

import asyncio
import csv
import io
import time

import httpx
import pandas as pd
import pytest
import yaml

from crm_sync.connectors.model import RowLinks, TargetRef
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.connectors.salesforce_links import reference_field, with_parents
from crm_sync.load.runner import run_upsert
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.links_specs import load_syncs

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"}
BASE = "/services/data/v62.0"
ACCOUNTS = f"{BASE}/composite/sobjects/Account/External_Id__c"
CONTACTS = f"{BASE}/composite/sobjects/Contact/External_Id__c"
FK_MESSAGE = "Foreign key external ID: {} not found for field External_Id__c in entity Account"
CONTACT_SPEC = load_spec().sync("companies_to_salesforce").model_copy(
    update={"name": "contacts_to_salesforce", "object": "Contact", "source": "contacts",
            "source_key": "contact_id"})


def contact(ext: str, **more) -> dict:
    return {"attributes": {"type": "Contact"}, "External_Id__c": ext, "LastName": "Doe", **more}


def upsert(sandbox: httpx.Client, uri: str, *records: dict) -> httpx.Response:
    return sandbox.patch(uri, headers=AUTH, json={"allOrNone": False, "records": list(records)})


@pytest.fixture
def accounts(sandbox) -> dict[str, str]:
    """Two Accounts, CO-1 and CO-2: external id -> record id."""
    answer = upsert(sandbox, ACCOUNTS,
                    *({"attributes": {"type": "Account"}, "External_Id__c": ext, "Name": ext}
                      for ext in ("CO-1", "CO-2")))
    assert answer.status_code == 200 and all(r["success"] for r in answer.json())
    return {"CO-1": answer.json()[0]["id"], "CO-2": answer.json()[1]["id"]}


def linked(sandbox: httpx.Client, sobject: str = "Contact",
           relationship: str = "Account") -> dict[str, str | None]:
    """Each record's parent, as the admin API shows it: external id -> parent's External_Id__c
    (None: no parent); also checks that the parent's Id is the stored reference field."""
    answer = sandbox.get(f"/_sandbox/salesforce/relationships/{sobject}")
    assert answer.status_code == 200, answer.text
    by_id = {r["Id"]: r for r in stored(sandbox, "salesforce", sobject)}
    out = {}
    for record in answer.json()["records"]:
        parent = record["relationships"][relationship]
        field = reference_field(relationship)
        assert by_id[record["Id"]].get(field) == (parent["Id"] if parent else None)
        out[record["External_Id__c"]] = parent["External_Id__c"] if parent else None
    return out


# -- the sandbox ------------------------------------------------------------------------------
def test_describe_names_the_relationship_of_each_reference_field(sandbox):
    fields = {f["name"]: f for f in sandbox.get(f"{BASE}/sobjects/Contact/describe",
                                                headers=AUTH).json()["fields"]}
    assert fields["AccountId"]["type"] == "reference"
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["AccountId"]["relationshipName"] == "Account"
    assert fields["ReportsToId"]["relationshipName"] == "ReportsTo"
    assert fields["LastName"]["relationshipName"] is None
    account = {f["name"]: f for f in sandbox.get(f"{BASE}/sobjects/Account/describe",
                                                 headers=AUTH).json()["fields"]}
    assert account["ParentId"]["relationshipName"] == "Parent"


def test_a_parent_by_external_id_is_linked_changed_and_cleared(sandbox, accounts):
    answer = upsert(sandbox, CONTACTS, contact("C1", Account={"External_Id__c": "CO-1"}),
                    contact("C2", Account={"External_Id__c": "co-2"}),  # case-insensitive
                    contact("C3"))
    assert [r["success"] for r in answer.json()] == [True, True, True]
    assert linked(sandbox) == {"C1": "CO-1", "C2": "CO-2", "C3": None}
    by_ext = {r["External_Id__c"]: r for r in stored(sandbox, "salesforce", "Contact")}
    assert by_ext["C1"]["AccountId"] == accounts["CO-1"]

    # The source value changes: the same Contact now points to the other Account.
    upsert(sandbox, CONTACTS, contact("C1", Account={"External_Id__c": "CO-2"}))
    assert linked(sandbox)["C1"] == "CO-2"
    # An update that does not name the relationship leaves it alone.
    upsert(sandbox, CONTACTS, contact("C1", Title="CTO"))
    assert linked(sandbox)["C1"] == "CO-2"
    # The source value is removed: the reference field set to null clears the link.
    upsert(sandbox, CONTACTS, contact("C1", AccountId=None))
    assert linked(sandbox)["C1"] is None
    # Or by the parent's record id.
    upsert(sandbox, CONTACTS, contact("C3", AccountId=accounts["CO-1"][:15]))
    assert linked(sandbox)["C3"] == "CO-1"
    by_ext = {r["External_Id__c"]: r for r in stored(sandbox, "salesforce", "Contact")}
    assert by_ext["C3"]["AccountId"] == accounts["CO-1"]  # stored in its 18-character form


def test_a_parent_external_id_that_matches_nothing_fails_that_record_only(sandbox, accounts):
    answer = upsert(sandbox, CONTACTS, contact("C1", Account={"External_Id__c": "CO-1"}),
                    contact("C2", Account={"External_Id__c": "CO-9"}))
    assert answer.status_code == 200
    good, bad = answer.json()
    assert good["success"] is True
    assert bad == {"success": False, "errors": [
        {"statusCode": "INVALID_FIELD", "message": FK_MESSAGE.format("CO-9"), "fields": []}]}
    assert linked(sandbox) == {"C1": "CO-1"}  # C2 was not written at all

    # The single-record upsert answers the same error as a 400, nothing written.
    one = sandbox.patch(f"{BASE}/sobjects/Contact/External_Id__c/C3", headers=AUTH,
                        json={"LastName": "Doe", "Account": {"External_Id__c": "CO-9"}})
    assert one.status_code == 400
    assert one.json() == [{"message": FK_MESSAGE.format("CO-9"), "errorCode": "INVALID_FIELD",
                           "fields": []}]
    assert set(linked(sandbox)) == {"C1"}
    one = sandbox.patch(f"{BASE}/sobjects/Contact/External_Id__c/C3", headers=AUTH,
                        json={"LastName": "Doe", "Account": {"External_Id__c": "CO-2"}})
    assert one.status_code == 201 and linked(sandbox)["C3"] == "CO-2"


def test_a_reference_id_must_be_a_record_of_the_parent_type(sandbox, accounts):
    created = upsert(sandbox, CONTACTS, contact("C1")).json()[0]["id"]
    answer = upsert(sandbox, CONTACTS, contact("C2", AccountId="not-an-id"),
                    contact("C3", AccountId=created),  # a Contact's id, not an Account's
                    contact("C4", AccountId=accounts["CO-1"]))
    first, second, third = answer.json()
    assert first["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert first["errors"][0]["fields"] == ["AccountId"]
    assert second["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert third["success"] is True
    assert linked(sandbox) == {"C1": None, "C4": "CO-1"}


@pytest.mark.parametrize("record, code, message", [
    (contact("C1", Account={"Name": "CO-1"}), "INVALID_FIELD",
     "Field name provided, Name is not an External ID or indexed field for Account"),
    (contact("C1", Acount={"External_Id__c": "CO-1"}), "INVALID_FIELD",
     "No such column 'Acount' on sobject of type Contact"),
    (contact("C1", Account={"External_Id__c": "CO-1"}, AccountId=None), "JSON_PARSER_ERROR",
     "Duplicate field 'AccountId'"),
    (contact("C1", Account="CO-1"), "JSON_PARSER_ERROR", None),
    (contact("C1", Account={"External_Id__c": "CO-1", "MyExtId__c": "x"}), "INVALID_FIELD",
     None),
])
def test_a_relationship_no_record_could_use_fails_the_whole_request(sandbox, accounts, record,
                                                                     code, message):
    answer = upsert(sandbox, CONTACTS, record, contact("C2"))
    assert answer.status_code == 400
    assert answer.json()[0]["errorCode"] == code
    if message:
        assert answer.json()[0]["message"] == message
    assert stored(sandbox, "salesforce", "Contact") == []


def test_a_custom_lookup_is_named_by_its_r_relationship(sandbox, accounts):
    registered = sandbox.post("/_sandbox/salesforce/sobjects", json={
        "name": "Project__c", "key_prefix": "a01",
        "fields": {"External_Id__c": {"external_id": True},
                   "Account__c": {"type": "reference", "length": 18,
                                  "reference_to": ["Account"]}}})
    assert registered.status_code == 200, registered.text
    described = {f["name"]: f for f in sandbox.get(f"{BASE}/sobjects/Project__c/describe",
                                                   headers=AUTH).json()["fields"]}
    assert described["Account__c"]["relationshipName"] == "Account__r"
    uri = f"{BASE}/composite/sobjects/Project__c/External_Id__c"
    answer = upsert(sandbox, uri,
                    {"attributes": {"type": "Project__c"}, "External_Id__c": "PR-1",
                     "Account__r": {"External_Id__c": "CO-2"}},
                    {"attributes": {"type": "Project__c"}, "External_Id__c": "PR-2",
                     "Account__r": {"External_Id__c": "CO-7"}})
    ok, missing = answer.json()
    assert ok["success"] is True
    assert missing["errors"][0]["message"] == FK_MESSAGE.format("CO-7")
    assert linked(sandbox, "Project__c", "Account__r") == {"PR-1": "CO-2"}


@pytest.fixture
def bulk(sandbox):
    sandbox.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 0}).raise_for_status()
    yield sandbox
    sandbox.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 0.5})  # the default


def test_a_bulk_csv_names_the_parent_in_its_header(bulk, accounts):
    sandbox = bulk
    jobs = f"{BASE}/jobs/ingest"
    job = sandbox.post(jobs, headers=AUTH, json={
        "object": "Contact", "operation": "upsert", "externalIdFieldName": "External_Id__c",
        "contentType": "CSV", "lineEnding": "LF"}).json()
    text = ("External_Id__c,LastName,Account.External_Id__c\n"
            "C1,Doe,CO-1\nC2,Roe,CO-9\nC3,Poe,\n")
    sandbox.put(f"{jobs}/{job['id']}/batches", content=text,
                headers={**AUTH, "Content-Type": "text/csv"}).raise_for_status()
    sandbox.patch(f"{jobs}/{job['id']}", headers=AUTH,
                  json={"state": "UploadComplete"}).raise_for_status()
    for _ in range(100):
        info = sandbox.get(f"{jobs}/{job['id']}", headers=AUTH).json()
        if info["state"] in ("JobComplete", "Failed"):
            break
        time.sleep(0.05)
    assert info["state"] == "JobComplete", info
    assert info["numberRecordsFailed"] == 1
    failed = list(csv.DictReader(io.StringIO(
        sandbox.get(f"{jobs}/{job['id']}/failedResults/", headers=AUTH).text)))
    assert [(r["External_Id__c"], r["sf__Error"]) for r in failed] == [
        ("C2", f"INVALID_FIELD:{FK_MESSAGE.format('CO-9')}:")]
    assert linked(sandbox) == {"C1": "CO-1", "C3": None}


# -- the connector ----------------------------------------------------------------------------
def ref(ext: str | None, crm_id: str | None = None) -> TargetRef:
    return TargetRef("Account", "Account", crm_id, "External_Id__c" if ext else None, ext)


def test_with_links_names_the_parent_by_external_id_else_by_id_and_nulls_an_unlink():
    record = {"attributes": {"type": "Contact"}, "External_Id__c": "C1"}
    assert with_parents(record, RowLinks(link=(ref("CO-1", "001A"),))) == {
        **record, "Account": {"External_Id__c": "CO-1"}}
    assert with_parents(record, RowLinks(link=(ref(None, "001A"),))) == {
        **record, "AccountId": "001A"}
    assert with_parents(record, RowLinks(unlink=(ref("CO-1", "001A"),))) == {
        **record, "AccountId": None}
    # Relinked to another Account: the unlink of the old one must not null the new link.
    assert with_parents(record, RowLinks(link=(ref("CO-2"),), unlink=(ref("CO-1"),))) == {
        **record, "Account": {"External_Id__c": "CO-2"}}
    custom = TargetRef("Parent__r", "Project__c", "a01B", None, None)
    assert with_parents(record, RowLinks(link=(custom,)))["Parent__c"] == "a01B"
    assert record == {"attributes": {"type": "Contact"}, "External_Id__c": "C1"}  # unchanged


def send(sandbox_url: str, items: list[tuple[str, RowLinks | None]], **fields):
    async def go():
        resource = SalesforceResource(base_url=sandbox_url, token=DEFAULT_TOKENS["salesforce"])
        async with resource.open(CONTACT_SPEC) as connector:
            return await connector.upsert([
                connector.item(key, {"External_Id__c": key, "LastName": "Doe", **fields}, None,
                               links)
                for key, links in items])
    return {o.key: o for o in asyncio.run(go())}


def test_the_connector_links_relinks_and_unlinks_contacts_in_the_sandbox(sandbox, sandbox_url,
                                                                          accounts):
    first = send(sandbox_url, [("C1", RowLinks(link=(ref("CO-1", accounts["CO-1"]),))),
                               ("C2", RowLinks(link=(ref(None, accounts["CO-2"]),))),
                               ("C3", None)])
    assert {k: o.status for k, o in first.items()} == {"C1": "created", "C2": "created",
                                                        "C3": "created"}
    assert linked(sandbox) == {"C1": "CO-1", "C2": "CO-2", "C3": None}
    # The source value changes (C1 to CO-2) and is removed (C2).
    send(sandbox_url, [("C1", RowLinks(link=(ref("CO-2"),), unlink=(ref("CO-1"),))),
                       ("C2", RowLinks(unlink=(ref("CO-2"),)))])
    assert linked(sandbox) == {"C1": "CO-2", "C2": None, "C3": None}


def test_a_missing_parent_is_quarantined_as_association_target_missing(sandbox, sandbox_url,
                                                                       accounts):
    outcomes = send(sandbox_url, [("C1", RowLinks(link=(ref("CO-1"),))),
                                  ("C2", RowLinks(link=(ref("CO-404"),)))])
    assert outcomes["C1"].ok
    missing = outcomes["C2"]
    # Transient, like the runner's own ASSOCIATION_TARGET_MISSING: sent again on later runs.
    assert missing.status == "failed" and missing.transient
    assert missing.error_code == "ASSOCIATION_TARGET_MISSING"
    assert missing.message == FK_MESSAGE.format("CO-404")
    assert linked(sandbox) == {"C1": "CO-1"}
    # Other per-record errors keep Salesforce's own code.
    other = send(sandbox_url, [("C3", None)], Email="not an email")
    assert other["C3"].error_code == "INVALID_EMAIL_ADDRESS" and not other["C3"].transient


# -- end to end: spec `associations:` -> run -> the sandbox -----------------------------------
E2E_COMPANIES = {"name": "companies_to_salesforce", "source": "companies",
                 "source_key": "company_id", "crm": "salesforce", "object": "Account",
                 "matching_key": "External_Id__c",
                 "fields": {"External_Id__c": {"column": "company_id", "required": True},
                            "Name": {"column": "name", "required": True}}}
E2E_CONTACTS = {"name": "contacts_to_salesforce", "source": "contacts",
                "source_key": "contact_id", "crm": "salesforce", "object": "Contact",
                "matching_key": "External_Id__c",
                "fields": {"External_Id__c": {"column": "contact_id", "required": True},
                           "LastName": {"column": "last_name", "required": True}},
                "associations": {"Account": {"sync": "companies_to_salesforce",
                                             "column": "company_id"}}}
DAY = "2026-11-03T10:00:00Z"


@pytest.fixture
def e2e_spec(tmp_path):
    return load_syncs(tmp_path, E2E_COMPANIES, E2E_CONTACTS)


def run_sync(spec, name: str, rows: list[dict], store, url: str):
    sync = spec.sync(name)
    result = validate_partition(sync, pd.DataFrame([{**r, "updated_at": DAY} for r in rows]))
    assert result.failures == []
    resource = SalesforceResource(base_url=url, token=DEFAULT_TOKENS["salesforce"])
    return run_upsert(sync, result.valid, resource, store, partition=DAY[:10])


def e2e_contacts(links: dict[str, str | None]) -> list[dict]:
    return [{"contact_id": k, "last_name": f"Doe {k}", "company_id": v} for k, v in links.items()]


def test_a_spec_association_links_contacts_to_accounts_through_create_change_and_removal(
        sandbox, sandbox_url, store, e2e_spec):
    run_sync(e2e_spec, "companies_to_salesforce",
             [{"company_id": c, "name": f"Company {c}"} for c in ("CO-1", "CO-2")], store,
             sandbox_url)
    created = run_sync(e2e_spec, "contacts_to_salesforce",
                       e2e_contacts({"CT-1": "CO-1", "CT-2": "CO-2", "CT-3": None}), store,
                       sandbox_url)
    assert (created.created, created.failed, created.links_created) == (3, 0, 2)
    assert linked(sandbox) == {"CT-1": "CO-1", "CT-2": "CO-2", "CT-3": None}

    # The source value changes (CT-1 to CO-2) and is removed (CT-2); CT-3 gains one.
    changed = run_sync(e2e_spec, "contacts_to_salesforce",
                       e2e_contacts({"CT-1": "CO-2", "CT-2": None, "CT-3": "CO-1"}), store,
                       sandbox_url)
    assert (changed.updated, changed.links_created, changed.links_removed) == (3, 2, 2)
    assert linked(sandbox) == {"CT-1": "CO-2", "CT-2": None, "CT-3": "CO-1"}
    frame = store.links_frame("contacts_to_salesforce")
    assert dict(zip(frame["source_key"], frame["target_key"])) == {"CT-1": "CO-2",
                                                                   "CT-3": "CO-1"}


def test_a_parent_gone_from_salesforce_is_quarantined_transient_with_salesforces_message(
        sandbox, sandbox_url, store, e2e_spec):
    run_sync(e2e_spec, "companies_to_salesforce", [{"company_id": "CO-1", "name": "One"}],
             store, sandbox_url)
    # Someone deletes the Account in Salesforce: the state still knows it, Salesforce does not.
    [account] = stored(sandbox, "salesforce", "Account")
    sandbox.delete(f"{BASE}/composite/sobjects", headers=AUTH,
                   params={"ids": account["Id"]}).raise_for_status()
    report = run_sync(e2e_spec, "contacts_to_salesforce", e2e_contacts({"CT-1": "CO-1"}), store,
                      sandbox_url)
    assert report.failed_by_code == {"ASSOCIATION_TARGET_MISSING": 1}
    [entry] = store.quarantine_frame("contacts_to_salesforce").to_dict("records")
    assert entry["error_code"] == "ASSOCIATION_TARGET_MISSING" and entry["transient"] == 1
    assert entry["message"] == FK_MESSAGE.format("CO-1")
    assert stored(sandbox, "salesforce", "Contact") == []


def test_above_the_bulk_threshold_links_by_external_id_use_collections_and_unlinks_a_job(
        bulk, sandbox_url, store, tmp_path):
    """The Bulk API 2.0 client sends a record with a nested parent through the collections
    upsert (its CSV carries flat values only); `"AccountId": null` goes in the job as #N/A."""
    raw = {"syncs": [E2E_COMPANIES, {**E2E_CONTACTS, "bulk_threshold": 2}]}
    (tmp_path / "syncs.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(tmp_path / "syncs.yaml", check_schemas=False)
    sandbox = bulk
    run_sync(spec, "companies_to_salesforce", [{"company_id": "CO-1", "name": "One"}], store,
             sandbox_url)
    keys = ("CT-1", "CT-2", "CT-3")
    linked_run = run_sync(spec, "contacts_to_salesforce", e2e_contacts(dict.fromkeys(keys, "CO-1")),
                          store, sandbox_url)
    counters = sandbox.get("/_sandbox/stats").json()["counters"]
    assert linked_run.created == 3 and counters.get("requests POST salesforce jobs", 0) == 0
    assert linked(sandbox) == dict.fromkeys(keys, "CO-1")
    removed = run_sync(spec, "contacts_to_salesforce", e2e_contacts(dict.fromkeys(keys)), store,
                       sandbox_url)
    counters = sandbox.get("/_sandbox/stats").json()["counters"]
    assert removed.updated == 3 and removed.links_removed == 3
    assert counters.get("requests POST salesforce jobs", 0) == 1  # one Bulk API 2.0 job
    assert linked(sandbox) == dict.fromkeys(keys)
