"""The sandbox's Salesforce Bulk API 2.0 ingest jobs, over HTTP: the documented job states, the
result CSVs, and rows checked and stored exactly as the collections upsert checks and stores
them (crm_sync/sandbox/salesforce_bulk.py)."""

from __future__ import annotations

import csv
import io
import time

import httpx
import pytest

from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync_tests.conftest import stored

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"}
JOBS = "/services/data/v62.0/jobs/ingest"
COLLECTION = "/services/data/v62.0/composite/sobjects/Account/External_Id__c"
CSV_HEADERS = {**AUTH, "Content-Type": "text/csv"}


@pytest.fixture
def bulk(sandbox):
    response = sandbox.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 0.3})
    response.raise_for_status()
    return sandbox


def create_job(sandbox: httpx.Client, **overrides) -> httpx.Response:
    body = {"object": "Account", "operation": "upsert", "externalIdFieldName": "External_Id__c",
            "contentType": "CSV", "lineEnding": "LF", **overrides}
    return sandbox.post(JOBS, headers=AUTH, json=body)


def run_job(sandbox: httpx.Client, text: str) -> dict:
    """Create, upload, close and poll a job until it finishes; its last job info."""
    created = create_job(sandbox)
    assert created.status_code == 200, created.text
    job = created.json()
    assert job["state"] == "Open" and job["id"].startswith("750")
    upload = sandbox.put(f"{JOBS}/{job['id']}/batches", headers=CSV_HEADERS, content=text)
    assert upload.status_code == 201, upload.text
    closed = sandbox.patch(f"{JOBS}/{job['id']}", headers=AUTH, json={"state": "UploadComplete"})
    assert closed.status_code == 200 and closed.json()["state"] == "UploadComplete"
    states = []
    for _ in range(100):
        info = sandbox.get(f"{JOBS}/{job['id']}", headers=AUTH).json()
        states.append(info["state"])
        if info["state"] in ("JobComplete", "Failed", "Aborted"):
            break
        time.sleep(0.05)
    info["polled"] = states
    return info


def results(sandbox: httpx.Client, job_id: str, kind: str) -> list[dict]:
    response = sandbox.get(f"{JOBS}/{job_id}/{kind}/", headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text)))


def test_a_job_creates_exactly_the_valid_rows_and_reports_the_invalid_ones(bulk):
    text = ("External_Id__c,Name,NumberOfEmployees\n"
            "b-1,Alpha,10\n"
            "b-2,,20\n"                          # no Name: required on create
            "b-3,Gamma,many\n"                   # not an int
            "b-4,\"Delta, Inc.\",40\n"
            ",NoExtId,50\n")                     # no external id
    info = run_job(bulk, text)
    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (5, 3)
    ok = results(bulk, info["id"], "successfulResults")
    assert [r["External_Id__c"] for r in ok] == ["b-1", "b-4"]
    assert all(r["sf__Created"] == "true" and r["sf__Id"].startswith("001") for r in ok)
    failed = {r["Name"]: r for r in results(bulk, info["id"], "failedResults")}
    assert set(failed) == {"", "Gamma", "NoExtId"}
    assert failed[""]["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
    assert failed["Gamma"]["sf__Error"].startswith("JSON_PARSER_ERROR:")
    assert failed["NoExtId"]["sf__Error"].startswith("MISSING_ARGUMENT:")
    assert results(bulk, info["id"], "unprocessedrecords") == []
    records = {r["External_Id__c"]: r for r in stored(bulk, "salesforce", "Account")}
    assert set(records) == {"b-1", "b-4"}
    assert records["b-4"]["Name"] == "Delta, Inc." and records["b-4"]["NumberOfEmployees"] == 40
    assert {r["sf__Id"] for r in ok} == {records["b-1"]["Id"], records["b-4"]["Id"]}


def test_a_bulk_record_is_the_record_the_collections_upsert_finds(bulk):
    info = run_job(bulk, "External_Id__c,Name\nx-1,From Bulk\n")
    bulk_id = results(bulk, info["id"], "successfulResults")[0]["sf__Id"]
    answer = bulk.patch(COLLECTION, headers=AUTH, json={"records": [
        {"attributes": {"type": "Account"}, "External_Id__c": "X-1", "Name": "From REST"}]})
    assert answer.json() == [{"id": bulk_id, "success": True, "errors": [], "created": False}]
    assert [r["Name"] for r in stored(bulk, "salesforce", "Account")] == ["From REST"]


def test_the_same_upsert_job_twice_updates_instead_of_duplicating(bulk):
    first = run_job(bulk, "External_Id__c,Name\nu-1,One\nu-2,Two\n")
    second = run_job(bulk, "External_Id__c,Name\nu-1,One again\nu-2,Two again\n")
    created = results(bulk, first["id"], "successfulResults")
    updated = results(bulk, second["id"], "successfulResults")
    assert [r["sf__Created"] for r in created] == ["true", "true"]
    assert [r["sf__Created"] for r in updated] == ["false", "false"]
    assert [r["sf__Id"] for r in updated] == [r["sf__Id"] for r in created]
    names = sorted(r["Name"] for r in stored(bulk, "salesforce", "Account"))
    assert names == ["One again", "Two again"]


def test_an_unknown_column_fails_the_job_and_writes_nothing(bulk):
    info = run_job(bulk, "External_Id__c,Name,Nope__c\nn-1,Alpha,x\n")
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "InvalidBatch : Field name not found : Nope__c"
    assert stored(bulk, "salesforce", "Account") == []
    assert [r["External_Id__c"] for r in results(bulk, info["id"], "unprocessedrecords")] \
        == ["n-1"]


def test_illegal_state_transitions_answer_invalidjobstate(bulk):
    job = create_job(bulk).json()
    url = f"{JOBS}/{job['id']}"
    early = bulk.get(f"{url}/successfulResults/", headers=AUTH)
    assert early.status_code == 400 and early.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    bulk.put(f"{url}/batches", headers=CSV_HEADERS, content="External_Id__c,Name\na,A\n")
    again = bulk.put(f"{url}/batches", headers=CSV_HEADERS, content="External_Id__c,Name\nb,B\n")
    assert again.status_code == 400 and again.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    aborted = bulk.patch(url, headers=AUTH, json={"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    for body in ({"state": "UploadComplete"}, {"state": "Aborted"}, {"state": "JobComplete"}):
        answer = bulk.patch(url, headers=AUTH, json=body)
        assert answer.status_code == 400, body
        assert answer.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    late = bulk.put(f"{url}/batches", headers=CSV_HEADERS, content="External_Id__c,Name\nc,C\n")
    assert late.status_code == 400 and late.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert bulk.get(url, headers=AUTH).json()["state"] == "Aborted"
    assert [r["Name"] for r in results(bulk, job["id"], "unprocessedrecords")] == ["A"]
    assert stored(bulk, "salesforce", "Account") == []


def test_unknown_jobs_are_404_not_found(bulk):
    missing = f"{JOBS}/7505g0000000000AAA"
    answers = [bulk.get(missing, headers=AUTH),
               bulk.patch(missing, headers=AUTH, json={"state": "UploadComplete"}),
               bulk.put(f"{missing}/batches", headers=CSV_HEADERS, content="Name\nA\n"),
               bulk.get(f"{missing}/failedResults/", headers=AUTH)]
    for answer in answers:
        assert answer.status_code == 404
        assert answer.json() == [{"message": "The requested resource does not exist",
                                  "errorCode": "NOT_FOUND"}]


@pytest.mark.parametrize("overrides", [
    {"operation": "insert"}, {"externalIdFieldName": "Name"}, {"object": "Nope__c"},
    {"contentType": "JSON"}, {"lineEnding": "CR"}, {"extra": 1},
])
def test_invalid_job_definitions_are_refused(bulk, overrides):
    answer = create_job(bulk, **overrides)
    assert answer.status_code == 400 and answer.json()[0]["errorCode"] == "INVALIDJOB"


def test_same_session_and_content_type_rules_as_the_rest_api(bulk):
    assert create_job(bulk).status_code == 200
    refused = bulk.post(JOBS, headers={"Authorization": "Bearer wrong"}, json={})
    assert refused.status_code == 401 and refused.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    job = create_job(bulk).json()
    as_json = bulk.put(f"{JOBS}/{job['id']}/batches", headers=AUTH, json={"Name": "A"})
    assert as_json.status_code == 415
    assert "Sforce-Limit-Info" in as_json.headers


def test_empty_values_are_left_alone_and_na_sets_null(bulk):
    run_job(bulk, "External_Id__c,Name,NumberOfEmployees,Website\nv-1,Vee,5,example.com\n")
    info = run_job(bulk, "External_Id__c,Name,NumberOfEmployees,Website\nv-1,,#N/A,\n")
    assert info["state"] == "JobComplete" and info["numberRecordsFailed"] == 0
    [record] = stored(bulk, "salesforce", "Account")
    assert (record["Name"], record["NumberOfEmployees"], record["Website"]) == \
        ("Vee", None, "example.com")


def test_a_line_ending_other_than_the_jobs_fails_the_job(bulk):
    info = run_job(bulk, "External_Id__c,Name\r\nl-1,Ell\r\n")  # the job says LF
    assert info["state"] == "Failed" and "LineEnding" in info["errorMessage"]
    assert stored(bulk, "salesforce", "Account") == []


def test_processing_is_asynchronous_in_progress_then_complete(bulk):
    bulk.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 2.0}).raise_for_status()
    started = time.monotonic()
    info = run_job(bulk, "External_Id__c,Name\na-1,Ay\n")
    assert info["state"] == "JobComplete"
    assert info["polled"][0] == "InProgress" and time.monotonic() - started >= 2.0
    assert [r["External_Id__c"] for r in stored(bulk, "salesforce", "Account")] == ["a-1"]


def test_a_job_is_a_handful_of_counted_requests_whatever_its_size(bulk):
    rows = "".join(f"c-{i},Company {i}\n" for i in range(1000))
    info = run_job(bulk, "External_Id__c,Name\n" + rows)
    assert (info["state"], info["numberRecordsProcessed"]) == ("JobComplete", 1000)
    counters = bulk.get("/_sandbox/stats").json()["counters"]
    assert counters["requests POST salesforce jobs"] == 1
    assert counters["requests PUT salesforce jobs"] == 1
    assert counters["requests PATCH salesforce jobs"] == 1
    assert len(stored(bulk, "salesforce", "Account")) == 1000
