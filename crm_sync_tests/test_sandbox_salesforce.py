"""The Salesforce emulation answers the documented requests with the documented shapes, over
plain HTTP (the session sandbox) and over TLS to the official SDK, simple-salesforce."""

from __future__ import annotations

import gc
import json
import re
import threading
import time
from pathlib import Path

import httpx
import pytest
import requests
import trustme
import uvicorn
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession, SalesforceMalformedRequest, SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
)

import crm_sync.sandbox as sandbox_pkg
from crm_sync.sandbox.app import DEFAULT_TOKENS, create_app
from crm_sync.sandbox.salesforce import case_safe_suffix
from crm_sync.sandbox.server import free_port, sandbox_process
from crm_sync_tests.conftest import stored

TOKEN = DEFAULT_TOKENS["salesforce"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOC_URI = "/services/data/v62.0/composite/sobjects/Account/MyExtId__c"  # the docs' example
URI = "/services/data/v62.0/composite/sobjects/Account/External_Id__c"
ROLLED_BACK_MESSAGE = ("Record rolled back because not all records were valid and the request "
                       "was using AllOrNone header")
USAGE = re.compile(r"^api-usage=(\d+)/(\d+)$")


def account(ext: str, name: str | None = "Acme", field: str = "External_Id__c", **more) -> dict:
    record = {"attributes": {"type": "Account"}, field: ext, **more}
    if name is not None:
        record["Name"] = name
    return record


def upsert(sandbox: httpx.Client, records: list, all_or_none: bool | None = None,
           uri: str = URI) -> httpx.Response:
    body: dict = {"records": records}
    if all_or_none is not None:
        body["allOrNone"] = all_or_none
    return sandbox.patch(uri, headers=AUTH, json=body)


def assert_record_id(value: str, prefix: str = "001") -> None:
    assert re.fullmatch(r"[A-Za-z0-9]{18}", value) and value.startswith(prefix)
    assert value[15:] == case_safe_suffix(value[:15])


def usage(response: httpx.Response) -> tuple[int, int]:
    match = USAGE.match(response.headers["Sforce-Limit-Info"])
    assert match, response.headers.get("Sforce-Limit-Info")
    return int(match.group(1)), int(match.group(2))


@pytest.fixture
def daily_limit(sandbox):
    """Set the sandbox's daily allowance for one test; restore the default afterwards."""
    def set_limit(value: int) -> None:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": value}).raise_for_status()

    yield set_limit
    set_limit(100_000)


# -- the documentation's examples, replayed ------------------------------------------------------
def test_docs_request_example_gives_the_success_example(sandbox):
    # The success example answers created for AAA and updated for BBB: BBB exists beforehand.
    first = upsert(sandbox, [account("BBB", "Company Two", field="MyExtId__c")], uri=DOC_URI)
    bbb_id = first.json()[0]["id"]

    response = sandbox.patch(DOC_URI, headers=AUTH, json={
        "allOrNone": False,
        "records": [{"attributes": {"type": "Account"}, "Name": "Company One",
                     "MyExtId__c": "AAA"},
                    {"attributes": {"type": "Account"}, "Name": "Company Two",
                     "MyExtId__c": "BBB"}]})
    assert response.status_code == 200
    results = response.json()
    assert [set(r) for r in results] == [{"id", "success", "errors", "created"}] * 2
    assert [(r["success"], r["errors"], r["created"]) for r in results] == \
        [(True, [], True), (True, [], False)]
    assert_record_id(results[0]["id"])
    assert results[1]["id"] == bbb_id
    accounts = {r["MyExtId__c"]: r for r in stored(sandbox, "salesforce", "Account")}
    assert set(accounts) == {"AAA", "BBB"} and accounts["AAA"]["Id"] == results[0]["id"]
    assert accounts["AAA"]["Name"] == "Company One"


def test_docs_partial_failure_example_without_all_or_none(sandbox):
    response = upsert(sandbox, [account("AAA"), account("BBB", Id="001xx0000004GxEAAU")],
                      all_or_none=False)
    assert response.status_code == 200
    good, bad = response.json()
    assert good["success"] is True and good["errors"] == [] and good["created"] is True
    assert_record_id(good["id"])
    # The documented failed entry: only `success` and `errors` (no `id`, no `created`).
    assert set(bad) == {"success", "errors"} and bad["success"] is False
    assert bad["errors"] == [{"statusCode": "MALFORMED_ID",
                              "message": "Account ID: id value of incorrect type: "
                                         "001xx0000004GxEAAU",
                              "fields": ["Id"]}]
    assert [r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")] == ["AAA"]


def test_docs_all_or_none_example_rolls_everything_back(sandbox):
    response = upsert(sandbox, [account("AAA"), account("BBB", id="001xx0000004GxEAAU")],
                      all_or_none=True)
    assert response.status_code == 200
    rolled, bad = response.json()
    assert rolled["success"] is False
    assert_record_id(rolled["id"])  # as in the docs, the valid record still shows its id
    assert rolled["errors"] == [{"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                                 "message": ROLLED_BACK_MESSAGE, "fields": []}]
    assert bad["success"] is False and bad["errors"][0]["statusCode"] == "MALFORMED_ID"
    assert bad["errors"][0]["fields"] == ["Id"]
    assert stored(sandbox, "salesforce", "Account") == []


def test_all_or_none_true_writes_everything_when_all_records_are_valid(sandbox):
    response = upsert(sandbox, [account("A1"), account("A2")], all_or_none=True)
    assert [r["success"] for r in response.json()] == [True, True]
    assert len(stored(sandbox, "salesforce", "Account")) == 2


def test_all_or_none_defaults_to_false(sandbox):
    response = upsert(sandbox, [account("A1"), account("A2", name=None)])
    assert [r["success"] for r in response.json()] == [True, False]
    assert len(stored(sandbox, "salesforce", "Account")) == 1


# -- per-record errors -----------------------------------------------------------------------------
def test_required_fields_per_sobject(sandbox):
    missing_name = upsert(sandbox, [account("A1", name=None), account("A2", name="  ")]).json()
    for result in missing_name:
        assert result["errors"] == [{"statusCode": "REQUIRED_FIELD_MISSING",
                                     "message": "Required fields are missing: [Name]",
                                     "fields": ["Name"]}]
    contact = sandbox.patch("/services/data/v62.0/composite/sobjects/Contact/External_Id__c",
                            headers=AUTH, json={"records": [
                                {"attributes": {"type": "Contact"}, "External_Id__c": "C1",
                                 "FirstName": "Ada"}]}).json()
    assert contact[0]["errors"][0]["fields"] == ["LastName"]
    lead = sandbox.patch("/services/data/v62.0/composite/sobjects/Lead/External_Id__c",
                         headers=AUTH, json={"records": [
                             {"attributes": {"type": "Lead"}, "External_Id__c": "L1"},
                             {"attributes": {"type": "Lead"}, "External_Id__c": "L2",
                              "LastName": "Lovelace", "Company": "Analytical Engines"}]}).json()
    assert lead[0]["errors"] == [{"statusCode": "REQUIRED_FIELD_MISSING",
                                  "message": "Required fields are missing: [LastName, Company]",
                                  "fields": ["LastName", "Company"]}]
    assert lead[1]["success"] is True and lead[1]["id"].startswith("00Q")
    assert stored(sandbox, "salesforce", "Account") == []


def test_an_update_may_leave_required_fields_out_but_not_blank_them(sandbox):
    upsert(sandbox, [account("A1", "Acme")])
    update = upsert(sandbox, [account("A1", name=None, Website="acme.example")]).json()
    assert update[0]["success"] is True and update[0]["created"] is False
    blanked = upsert(sandbox, [account("A1", name=None, Name=None)]).json()
    assert blanked[0]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    [record] = stored(sandbox, "salesforce", "Account")
    assert record["Name"] == "Acme" and record["Website"] == "acme.example"


def test_invalid_email_length_and_read_only_fields(sandbox):
    response = sandbox.patch(
        "/services/data/v62.0/composite/sobjects/Contact/External_Id__c", headers=AUTH,
        json={"records": [
            {"attributes": {"type": "Contact"}, "External_Id__c": "C1", "LastName": "Doe",
             "Email": "jane .doe@example.com"},
            {"attributes": {"type": "Contact"}, "External_Id__c": "C2", "LastName": "x" * 81},
            {"attributes": {"type": "Contact"}, "External_Id__c": "C3", "LastName": "Doe",
             "CreatedDate": "2026-11-01T00:00:00.000+0000"},
            {"attributes": {"type": "Contact"}, "External_Id__c": "C4", "LastName": "Doe",
             "Email": "jane.doe+crm@example.com"}]})
    first, second, third, fourth = response.json()
    assert first["errors"] == [{"statusCode": "INVALID_EMAIL_ADDRESS",
                                "message": "Email: invalid email address: jane .doe@example.com",
                                "fields": ["Email"]}]
    assert second["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert second["errors"][0]["fields"] == ["LastName"]
    assert third["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    assert fourth["success"] is True and fourth["id"].startswith("003")
    assert [r["External_Id__c"] for r in stored(sandbox, "salesforce", "Contact")] == ["C4"]


def test_the_same_external_id_twice_in_one_request_fails_both(sandbox):
    response = upsert(sandbox, [account("DUP-1"), account("OK-1"), account("dup-1")])
    first, ok, second = response.json()
    assert ok["success"] is True
    for result, value in ((first, "DUP-1"), (second, "dup-1")):  # matched case-insensitively
        assert set(result) == {"success", "errors"} and result["success"] is False
        assert result["errors"] == [{"statusCode": "DUPLICATE_VALUE",
                                     "message": f"Duplicate external id specified: {value}",
                                     "fields": ["External_Id__c"]}]
    assert [r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")] == ["OK-1"]


def test_external_ids_match_case_insensitively_across_requests(sandbox):
    created = upsert(sandbox, [account("co-42", "Acme")]).json()[0]
    updated = upsert(sandbox, [account("CO-42", "Acme Corp")]).json()[0]
    assert updated["created"] is False and updated["id"] == created["id"]
    [record] = stored(sandbox, "salesforce", "Account")
    assert record["Name"] == "Acme Corp"


def test_two_stored_records_with_one_external_id_give_duplicate_external_id(sandbox):
    # External_Id__c is an External ID but not Unique, so plain creates may share a value.
    ids = [sandbox.post("/services/data/v62.0/sobjects/Account/", headers=AUTH,
                        json={"Name": f"Acme {i}", "External_Id__c": "SHARED"}).json()["id"]
           for i in range(2)]
    result = upsert(sandbox, [account("SHARED", "Acme"), account("OTHER")]).json()
    assert result[0]["success"] is False
    assert result[0]["errors"] == [{
        "statusCode": "DUPLICATE_EXTERNAL_ID",
        "message": f"more than one record found for external id field: [{ids[0]}, {ids[1]}]",
        "fields": ["External_Id__c"]}]
    assert result[1]["success"] is True
    assert len(stored(sandbox, "salesforce", "Account")) == 3


def test_a_missing_external_id_value_is_an_error(sandbox):
    response = upsert(sandbox, [{"attributes": {"type": "Account"}, "Name": "No key"},
                                account("", "Blank key")])
    for result in response.json():
        assert result["errors"] == [{"statusCode": "MISSING_ARGUMENT",
                                     "message": "External_Id__c not specified",
                                     "fields": ["External_Id__c"]}]
    assert stored(sandbox, "salesforce", "Account") == []


# -- whole-request errors ---------------------------------------------------------------------
def test_at_most_200_records(sandbox):
    too_many = upsert(sandbox, [account(f"E-{i}") for i in range(201)])
    assert too_many.status_code == 400
    assert too_many.json() == [{"message": "record limit reached. cannot submit more than 200 "
                                           "records into this call",
                                "errorCode": "EXCEEDED_ID_LIMIT"}]
    assert stored(sandbox, "salesforce", "Account") == []
    exactly = upsert(sandbox, [account(f"E-{i}") for i in range(200)])
    assert exactly.status_code == 200 and all(r["success"] for r in exactly.json())
    assert len(stored(sandbox, "salesforce", "Account")) == 200


def test_session_must_be_valid(sandbox):
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        response = sandbox.patch(URI, headers=headers, json={"records": [account("A1")]})
        assert response.status_code == 401
        assert response.json() == [{"message": "Session expired or invalid",
                                    "errorCode": "INVALID_SESSION_ID"}]
        assert "Sforce-Limit-Info" not in response.headers  # no org known, nothing counted
    assert stored(sandbox, "salesforce", "Account") == []


@pytest.mark.parametrize("body, code", [
    (b'{"records": [{"attributes": ', "JSON_PARSER_ERROR"),
    (b"", "JSON_PARSER_ERROR"),
    (b'{"records": [{"attributes": {"type": "Account"}, "Name": NaN}]}', "JSON_PARSER_ERROR"),
    (b'[{"attributes": {"type": "Account"}}]', "JSON_PARSER_ERROR"),
    (b'{"records": {"attributes": {"type": "Account"}}}', "JSON_PARSER_ERROR"),
    (b'{"allOrNone": "yes", "records": []}', "JSON_PARSER_ERROR"),
    (b'{"records": []}', "MISSING_ARGUMENT"),
    (b'{"records": [{"Name": "x", "External_Id__c": "A"}]}', "INVALID_TYPE"),
    (b'{"records": [{"attributes": {}, "Name": "x", "External_Id__c": "A"}]}', "INVALID_TYPE"),
    (b'{"records": [{"attributes": {"type": "Contact"}, "LastName": "x", '
     b'"External_Id__c": "A"}]}', "INVALID_TYPE"),
    (b'{"records": [{"attributes": {"type": "Account"}, "Name": "x", "External_Id__c": "A", '
     b'"Colour__c": "red"}]}', "INVALID_FIELD"),
    (b'{"records": [{"attributes": {"type": "Account"}, "Name": "x", "External_Id__c": "A", '
     b'"NumberOfEmployees": "many"}]}', "JSON_PARSER_ERROR"),
    (b'{"records": [{"attributes": {"type": "Account"}, "Name": 5, "External_Id__c": "A"}]}',
     "JSON_PARSER_ERROR"),
])
def test_malformed_requests_are_400_and_write_nothing(sandbox, body, code):
    response = sandbox.patch(URI, headers={**AUTH, "content-type": "application/json"},
                             content=body)
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == code and error["message"]
    assert usage(response)[0] >= 1  # a refused request still counts against the allowance
    assert stored(sandbox, "salesforce", "Account") == []


def test_only_json_bodies(sandbox):
    response = sandbox.patch(URI, headers={**AUTH, "content-type": "application/xml"},
                             content=b"<records/>")
    assert response.status_code == 415
    assert response.json()[0]["errorCode"] == "UNSUPPORTED_MEDIA_TYPE"


def test_unknown_field_message(sandbox):
    response = upsert(sandbox, [account("A1", Colour__c="red")])
    assert response.json() == [{"message": "No such column 'Colour__c' on sobject of type "
                                           "Account", "errorCode": "INVALID_FIELD"}]


def test_field_names_are_case_insensitive_and_stored_under_their_api_name(sandbox):
    response = upsert(sandbox, [{"attributes": {"type": "account"}, "external_id__c": "A1",
                                 "name": "Acme", "numberofemployees": 12}])
    assert response.json()[0]["success"] is True
    [record] = stored(sandbox, "salesforce", "Account")
    assert record["External_Id__c"] == "A1" and record["Name"] == "Acme"
    assert record["NumberOfEmployees"] == 12


@pytest.mark.parametrize("version, status", [("45.0", 404), ("46.0", 200), ("62.0", 200),
                                             ("62", 404), ("99.0", 404)])
def test_api_version(sandbox, version, status):
    response = sandbox.patch(f"/services/data/v{version}/composite/sobjects/Account/"
                             "External_Id__c", headers=AUTH,
                             json={"records": [account(f"V-{version}")]})
    assert response.status_code == status
    if status == 404:
        assert response.json() == [{"message": "The requested resource does not exist",
                                    "errorCode": "NOT_FOUND"}]


def test_unknown_sobject_and_non_external_id_fields_are_404(sandbox):
    no_type = sandbox.patch("/services/data/v62.0/composite/sobjects/Gadget__c/External_Id__c",
                            headers=AUTH, json={"records": []})
    assert no_type.status_code == 404
    assert no_type.json() == [{"message": "The requested resource does not exist",
                               "errorCode": "NOT_FOUND"}]
    for name in ("Name", "Nope__c", "Id"):
        response = sandbox.patch(f"/services/data/v62.0/composite/sobjects/Account/{name}",
                                 headers=AUTH, json={"records": [account("A1")]})
        assert response.status_code == 404
        assert response.json() == [{"errorCode": "NOT_FOUND", "message": "Provided external "
                                    f"ID field does not exist or is not accessible: {name}"}]
    assert stored(sandbox, "salesforce", "Account") == []


def test_only_patch_is_allowed_on_the_collection_upsert(sandbox):
    response = sandbox.post(URI, headers=AUTH, json={"records": [account("A1")]})
    assert response.status_code == 405
    assert response.json()[0]["errorCode"] == "METHOD_NOT_ALLOWED"


def test_custom_sobject_types_can_be_registered(sandbox):
    registered = sandbox.post("/_sandbox/salesforce/sobjects", json={
        "name": "Project__c", "key_prefix": "a0P", "required": ["Name"],
        "fields": {"Name": {"length": 80}, "Ext__c": {"external_id": True},
                   "Code__c": {"length": 10, "unique": True},
                   "Budget__c": {"type": "currency", "length": None, "digits": 16}}})
    assert registered.status_code == 200
    response = sandbox.patch("/services/data/v62.0/composite/sobjects/Project__c/Ext__c",
                             headers=AUTH, json={"records": [
                                 {"attributes": {"type": "Project__c"}, "Ext__c": "P-1",
                                  "Name": "Apollo", "Budget__c": 125000.5},
                                 {"attributes": {"type": "Project__c"}, "Ext__c": "P-2"}]})
    first, second = response.json()
    assert first["success"] is True and first["id"].startswith("a0P")
    assert second["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    [project] = stored(sandbox, "salesforce", "Project__c")
    assert project["Budget__c"] == 125000.5
    codes = sandbox.patch("/services/data/v62.0/composite/sobjects/Project__c/Ext__c",
                          headers=AUTH, json={"records": [
                              {"attributes": {"type": "Project__c"}, "Ext__c": "P-3",
                               "Name": "Gemini", "Code__c": "GEM"},
                              {"attributes": {"type": "Project__c"}, "Ext__c": "P-4",
                               "Name": "Mercury", "Code__c": "gem"}]}).json()
    assert codes[0]["success"] is True
    assert codes[1]["errors"] == [{"statusCode": "DUPLICATE_VALUE",
                                   "message": "duplicate value found: Code__c duplicates value "
                                              f"on record with id: {codes[0]['id']}",
                                   "fields": ["Code__c"]}]
    bad = sandbox.post("/_sandbox/salesforce/sobjects", json={"name": "X__c", "key_prefix": "?"})
    assert bad.status_code == 400


# -- the daily allowance ----------------------------------------------------------------------
def test_every_answer_reports_api_usage_and_the_limit_is_enforced(sandbox, daily_limit):
    daily_limit(3)
    answers = [upsert(sandbox, [account("A1")]),
               sandbox.patch(URI, headers=AUTH, content=b"{bad json"),
               sandbox.patch("/services/data/v62.0/composite/sobjects/Nope/External_Id__c",
                             headers=AUTH, json={"records": []})]
    assert [a.status_code for a in answers] == [200, 400, 404]
    assert [usage(a) for a in answers] == [(1, 3), (2, 3), (3, 3)]

    refused = upsert(sandbox, [account("A2")])
    assert refused.status_code == 403
    assert refused.json() == [{"message": "TotalRequests Limit exceeded.",
                               "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert usage(refused) == (3, 3)
    assert [r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")] == ["A1"]

    daily_limit(5)  # the allowance is read per request: raising it lets requests through again
    assert upsert(sandbox, [account("A2")]).status_code == 200


def test_limits_resource_reports_the_allowance(sandbox, daily_limit):
    daily_limit(1000)
    upsert(sandbox, [account("A1")])
    response = sandbox.get("/services/data/v62.0/limits", headers=AUTH)
    assert response.json() == {"DailyApiRequests": {"Max": 1000, "Remaining": 998}}
    assert usage(response) == (2, 1000)


def test_two_processes_and_a_restart_share_one_allowance(tmp_path):
    """The usage lives in the sandbox database: a second process and a restarted one agree."""
    db = tmp_path / "sandbox.sqlite"
    with sandbox_process(db) as first_url, sandbox_process(db) as second_url:
        a = httpx.patch(f"{first_url}{URI}", headers=AUTH, json={"records": [account("A1")]})
        b = httpx.patch(f"{second_url}{URI}", headers=AUTH, json={"records": [account("A1")]})
        assert usage(a)[0] == 1 and usage(b)[0] == 2
        assert a.json()[0]["id"] == b.json()[0]["id"] and b.json()[0]["created"] is False
    with sandbox_process(db) as restarted:
        c = httpx.get(f"{restarted}/services/data/v62.0/limits", headers=AUTH)
        assert usage(c)[0] == 3
        assert httpx.get(f"{restarted}/_sandbox/records/salesforce/Account").json()["count"] == 1


# -- the official SDK over TLS ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tls_sandbox(tmp_path_factory):
    """The sandbox served over HTTPS (simple-salesforce only builds https:// URLs), with a
    throwaway CA the client trusts."""
    folder = tmp_path_factory.mktemp("salesforce_tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(certfile)
    cert.private_key_pem.write_to_path(keyfile)
    ca.cert_pem.write_to_path(cafile)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(db_path=str(folder / "sandbox.sqlite")), host="127.0.0.1", port=port,
        ssl_certfile=str(certfile), ssl_keyfile=str(keyfile), log_level="warning",
        timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "TLS sandbox did not start"
        time.sleep(0.05)
    admin = httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=str(cafile))
    yield admin, str(cafile)
    admin.close()
    # A response the SDK raised about can keep its socket open until it is collected, and a
    # TLS server waits for open connections on shutdown.
    gc.collect()
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def sdk(tls_sandbox):
    admin, cafile = tls_sandbox
    admin.post("/_sandbox/reset").raise_for_status()
    session = requests.Session()
    session.verify = cafile
    session.trust_env = False  # REQUESTS_CA_BUNDLE or a proxy must not override the test CA
    client = Salesforce(instance_url=str(admin.base_url).rstrip("/"), session_id=TOKEN,
                        session=session, version="62.0")
    yield client, admin
    admin.post("/_sandbox/limits", json={"salesforce_daily_limit": 100_000})
    session.close()


def test_sdk_collections_upsert_through_restful(sdk):
    sf, admin = sdk
    body = {"allOrNone": False, "records": [
        {"attributes": {"type": "Account"}, "Name": "Company One", "External_Id__c": "AAA"},
        {"attributes": {"type": "Account"}, "Name": "Company Two", "External_Id__c": "BBB",
         "NumberOfEmployees": 12, "AnnualRevenue": 1500000.5}]}
    first = sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json=body)
    assert [(r["success"], r["created"]) for r in first] == [(True, True), (True, True)]
    assert sf.api_usage["api-usage"].used == 1 and sf.api_usage["api-usage"].total == 100_000

    again = sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json=body)
    assert [r["id"] for r in again] == [r["id"] for r in first]
    assert [r["created"] for r in again] == [False, False]

    record = sf.Account.get_by_custom_id("External_Id__c", "BBB")
    assert record["Id"] == first[1]["id"] and record["attributes"]["type"] == "Account"
    assert record["NumberOfEmployees"] == 12 and record["AnnualRevenue"] == 1500000.5
    assert sf.Account.get(first[0]["id"])["Name"] == "Company One"
    assert sf.limits()["DailyApiRequests"]["Max"] == 100_000


def test_sdk_sees_per_record_errors_and_request_errors(sdk):
    sf, admin = sdk
    results = sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json={
        "allOrNone": True, "records": [
            {"attributes": {"type": "Account"}, "Name": "Fine", "External_Id__c": "F1"},
            {"attributes": {"type": "Account"}, "External_Id__c": "F2"}]})
    assert [r["errors"][0]["statusCode"] for r in results] == \
        ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "REQUIRED_FIELD_MISSING"]

    with pytest.raises(SalesforceMalformedRequest) as too_many:
        sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json={
            "records": [{"attributes": {"type": "Account"}, "Name": "x",
                         "External_Id__c": str(i)} for i in range(201)]})
    assert too_many.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"

    expired = Salesforce(instance_url=str(admin.base_url).rstrip("/"), session_id="expired",
                         session=sf.session, version="62.0")
    with pytest.raises(SalesforceExpiredSession):
        expired.restful("composite/sobjects/Account/External_Id__c", method="PATCH",
                        json={"records": []})
    assert admin.get("/_sandbox/records/salesforce/Account").json()["count"] == 0


def test_sdk_duplicate_external_ids_and_single_record_upsert(sdk):
    sf, admin = sdk
    assert sf.Account.upsert("External_Id__c/SOLO", {"Name": "Solo"}) == 201
    assert sf.Account.upsert("External_Id__c/SOLO", {"Name": "Solo Inc"}) == 200
    assert sf.Account.get_by_custom_id("External_Id__c", "SOLO")["Name"] == "Solo Inc"

    for i in range(2):
        assert sf.Account.create({"Name": f"Twin {i}", "External_Id__c": "TWIN"})["success"]
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.get_by_custom_id("External_Id__c", "TWIN")
    [result] = sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json={
        "records": [{"attributes": {"type": "Account"}, "Name": "T", "External_Id__c": "TWIN"}]})
    assert result["errors"][0]["statusCode"] == "DUPLICATE_EXTERNAL_ID"


def test_sdk_refused_once_the_allowance_is_spent(sdk):
    sf, admin = sdk
    admin.post("/_sandbox/limits", json={"salesforce_daily_limit": 1}).raise_for_status()
    sf.limits()
    assert sf.api_usage["api-usage"].used == 1
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json={
            "records": [{"attributes": {"type": "Account"}, "Name": "x",
                         "External_Id__c": "L1"}]})
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


# -- issue 15: describe, strict date/datetime parsing, limits in Salesforce's shape ------------
def test_sdk_describe_reads_the_fixture(sdk):
    sf, admin = sdk
    described = sf.Account.describe()  # GET .../sobjects/Account/describe/
    fixture = json.loads((Path(sandbox_pkg.__file__).parent / "fixtures" / "salesforce" /
                          "Account.json").read_text())
    assert described["name"] == "Account" and described["keyPrefix"] == "001"
    assert [f["name"] for f in described["fields"]] == [f["name"] for f in fixture["fields"]]
    by_name = {f["name"]: f for f in described["fields"]}
    for field in fixture["fields"]:  # every property the fixture holds is served as it is
        for prop in ("type", "length", "nillable", "createable", "updateable", "externalId",
                     "unique", "caseSensitive", "defaultedOnCreate", "calculated",
                     "restrictedPicklist", "scale"):
            assert by_name[field["name"]][prop] == field[prop], (field["name"], prop)
        assert [p["value"] for p in by_name[field["name"]]["picklistValues"]] == \
            [p["value"] for p in field["picklistValues"]]
    assert by_name["Name"]["nillable"] is False and by_name["NumberOfEmployees"]["digits"] == 8
    assert by_name["External_Id__c"]["externalId"] is True
    with pytest.raises(Exception) as missing:
        sf.restful("sobjects/Gadget__c/describe/")
    assert "NOT_FOUND" in str(missing.value)


def test_sdk_datetime_with_a_space_fails_the_whole_request(sdk):
    # Captured: https://github.com/regican/Salesforce/issues/2 (400, the whole request).
    sf, admin = sdk
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful("composite/sobjects/Account/External_Id__c", method="PATCH", json={
            "allOrNone": False, "records": [
                {"attributes": {"type": "Account"}, "Name": "Fine", "External_Id__c": "D1",
                 "Onboarded_At__c": "2017-10-17T00:00:00.000+0000"},
                {"attributes": {"type": "Account"}, "Name": "Space", "External_Id__c": "D2",
                 "Onboarded_At__c": "2017-10-17 00:00:00"}]})
    [error] = refused.value.content
    assert error["errorCode"] == "JSON_PARSER_ERROR"
    assert error["message"].startswith("Cannot deserialize instance of datetime from "
                                       "VALUE_STRING value 2017-10-17 00:00:00")
    assert admin.get("/_sandbox/records/salesforce/Account").json()["count"] == 0


@pytest.mark.parametrize("value, ok", [
    ("2017-10-17T00:00:00Z", True), ("2017-10-17T00:00:00.123+05:30", True),
    ("2017-10-17T00:00:00.000+0000", True), ("2017-10-17 00:00:00", False),
    ("2017-10-17T00:00:00", False), ("2017-10-17", False), ("2017-02-30T00:00:00Z", False),
    ("2017-10-17T24:00:00Z", False), ("2017-10-17T00:00:00.1234Z", False)])
def test_datetime_formats(sandbox, value, ok):
    response = upsert(sandbox, [account("DT", Onboarded_At__c=value)])
    assert (response.status_code == 200) is ok, response.json()
    if not ok:
        assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


@pytest.mark.parametrize("value, ok", [("1999-01-01", True), ("1999-01-01T00:00:00Z", False),
                                       ("1999-02-29", False), ("01/02/1999", False)])
def test_date_formats(sandbox, value, ok):
    response = upsert(sandbox, [account("DA", Contract_Start__c=value)])
    assert (response.status_code == 200) is ok, response.json()


@pytest.mark.parametrize("kind, message", [("rate_429", "ConcurrentRequests (Concurrent API "
                                            "Requests) Limit exceeded."),
                                           ("rate_429_daily", "TotalRequests Limit exceeded.")])
def test_injected_limits_answer_403_request_limit_exceeded(sandbox, kind, message):
    sandbox.post("/_sandbox/faults", json={kind: 1.0}).raise_for_status()
    try:
        response = upsert(sandbox, [account("RL")])
    finally:
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    assert response.status_code == 403 and "retry-after" not in response.headers
    assert response.json() == [{"message": message, "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert stored(sandbox, "salesforce", "Account") == []
