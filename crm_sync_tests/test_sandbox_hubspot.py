"""The HubSpot emulation answers the documented requests with the documented shapes, the
official SDK (hubspot-api-client) can talk to it, and its rate limits behave as HubSpot's."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager

import httpx
import pytest
import uvicorn
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException, BatchInputSimplePublicObjectBatchInputUpsert
from hubspot.crm.contacts import SimplePublicObjectBatchInputUpsert

from crm_sync.sandbox.app import DEFAULT_TOKENS, create_app
from crm_sync.sandbox.server import free_port, sandbox_process, wait_until_up
from crm_sync_tests.conftest import stored

TOKEN = DEFAULT_TOKENS["hubspot"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LIMIT_HEADERS = ("X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining",
                 "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Daily",
                 "X-HubSpot-RateLimit-Daily-Remaining")


@contextmanager
def sandbox_in_thread(**app_options):
    """A second sandbox, in this process, with its own options (e.g. a 2-second window that
    the CLI cannot set); yields (base URL, its SandboxState)."""
    app = create_app(**app_options)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield url, app.state.sandbox
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def contact(email: str, trace: str | None = None, **properties) -> dict:
    entry = {"id": email, "idProperty": "email",
             "properties": {"email": email, "lastname": "Lovelace", **properties}}
    if trace is not None:
        entry["objectWriteTraceId"] = trace
    return entry


def upsert(sandbox, *inputs, obj: str = "contacts", headers=AUTH) -> httpx.Response:
    return sandbox.post(f"/crm/v3/objects/{obj}/batch/upsert", headers=headers,
                        json={"inputs": list(inputs)})


def assert_standard_error(body: dict, category: str | None = "VALIDATION_ERROR") -> None:
    assert body["status"] == "error" and body["message"]
    assert re.fullmatch(r"[0-9a-f-]{36}", body["correlationId"])
    if category:
        assert body["category"] == category


# -- batch upsert ---------------------------------------------------------------------------------
def test_upsert_creates_then_updates_with_the_documented_body(sandbox):
    first = upsert(sandbox, contact("ada@example.com", "t1", firstname="Ada"),
                   contact("Grace@Example.com", "t2"))
    assert first.status_code == 200
    body = first.json()
    assert body["status"] == "COMPLETE" and "errors" not in body and "numErrors" not in body
    assert body["links"] == {}
    assert all(ISO.match(body[k]) for k in ("requestedAt", "startedAt", "completedAt"))
    results = {r["objectWriteTraceId"]: r for r in body["results"]}
    assert set(results) == {"t1", "t2"}
    for result in results.values():
        assert result["new"] is True and result["archived"] is False
        assert result["id"].isdigit()
        assert ISO.match(result["createdAt"]) and ISO.match(result["updatedAt"])
        assert result["properties"]["hs_object_id"] == result["id"]
    assert results["t1"]["properties"]["firstname"] == "Ada"
    assert results["t2"]["properties"]["email"] == "grace@example.com"  # stored lowercased

    second = upsert(sandbox, contact("ada@example.com", "t1", firstname="Augusta"),
                    contact("grace@example.com", "t2"))  # other case: the same record
    assert second.status_code == 200
    again = {r["objectWriteTraceId"]: r for r in second.json()["results"]}
    assert all(r["new"] is False for r in again.values())
    assert {k: r["id"] for k, r in again.items()} == {k: r["id"] for k, r in results.items()}
    records = {r["properties"]["email"]: r for r in stored(sandbox, "hubspot", "contacts")}
    assert set(records) == {"ada@example.com", "grace@example.com"}
    assert records["ada@example.com"]["properties"]["firstname"] == "Augusta"
    assert records["ada@example.com"]["properties"]["lastname"] == "Lovelace"


def test_without_trace_ids_all_good_is_a_200_without_trace_ids(sandbox):
    response = upsert(sandbox, contact("ada@example.com"))
    assert response.status_code == 200
    [result] = response.json()["results"]
    assert "objectWriteTraceId" not in result and result["new"] is True


def test_multi_status_writes_the_good_inputs_and_lists_the_bad_ones(sandbox):
    response = upsert(sandbox, contact("ada@example.com", "t1"),
                      contact("bad email@example", "t2"),
                      contact("grace@example.com", "t3", lifecyclestage="royalty"),
                      contact("alan@example.com", "t4"))
    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE" and body["numErrors"] == 2
    assert sorted(r["objectWriteTraceId"] for r in body["results"]) == ["t1", "t4"]
    errors = {e["context"]["objectWriteTraceId"][0]: e for e in body["errors"]}
    assert set(errors) == {"t2", "t3"}
    email = errors["t2"]
    assert email["status"] == "error" and email["category"] == "VALIDATION_ERROR"
    assert email["message"].startswith("Property values were not valid: [")
    assert '"error":"INVALID_EMAIL"' in email["message"]
    assert email["errors"][0] == {"message": "Email address bad email@example is invalid",
                                  "code": "INVALID_EMAIL",
                                  "context": {"propertyName": ["email"]}}
    assert email["context"] == {"objectWriteTraceId": ["t2"]} and email["links"] == {}
    stage = errors["t3"]["errors"][0]
    assert stage["code"] == "INVALID_OPTION"
    assert stage["message"].startswith("royalty was not one of the allowed options: [")
    assert sorted(r["properties"]["email"] for r in stored(sandbox, "hubspot", "contacts")) == \
        ["ada@example.com", "alan@example.com"]


def test_without_trace_ids_one_bad_input_fails_the_batch_and_nothing_is_written(sandbox):
    response = upsert(sandbox, contact("ada@example.com"), contact("ada at example.com"))
    assert response.status_code == 400
    body = response.json()
    assert_standard_error(body)
    assert "Email address ada at example.com is invalid" in body["message"]
    assert body["errors"][0]["code"] == "INVALID_EMAIL"
    assert stored(sandbox, "hubspot", "contacts") == []


def test_unknown_and_read_only_properties_are_refused(sandbox):
    response = upsert(sandbox, contact("ada@example.com", "t1", favourite_colour="green"),
                      contact("grace@example.com", "t2", hs_object_id="1"))
    assert response.status_code == 207
    codes = {e["context"]["objectWriteTraceId"][0]: e["errors"][0] for e in
             response.json()["errors"]}
    assert codes["t1"]["code"] == "PROPERTY_DOESNT_EXIST"
    assert codes["t1"]["message"] == 'Property "favourite_colour" does not exist'
    assert codes["t2"]["code"] == "READ_ONLY_VALUE"


def test_a_unique_value_of_another_record_is_a_conflict(sandbox):
    assert upsert(sandbox, contact("ada@example.com", crm_sync_id="C-1")).status_code == 200
    by_id = {"id": "C-2", "idProperty": "crm_sync_id", "objectWriteTraceId": "t1",
             "properties": {"crm_sync_id": "C-2", "email": "ADA@example.com"}}
    response = upsert(sandbox, by_id)
    assert response.status_code == 207
    [err] = response.json()["errors"]
    assert err["category"] == "CONFLICT" and err["message"].startswith("Contact already exists")
    assert err["context"]["existingId"] == [stored(sandbox, "hubspot", "contacts")[0]["id"]]
    del by_id["objectWriteTraceId"]  # without trace ids the whole batch fails with a 409
    whole = upsert(sandbox, by_id)
    assert whole.status_code == 409
    assert_standard_error(whole.json(), "CONFLICT")
    assert len(stored(sandbox, "hubspot", "contacts")) == 1


def test_duplicate_ids_reject_the_whole_batch(sandbox):
    response = upsert(sandbox, contact("ada@example.com", "t1"), contact("alan@example.com", "t2"),
                      contact("ADA@example.com", "t3"))
    assert response.status_code == 400
    body = response.json()
    assert_standard_error(body)
    assert body["message"] == "Duplicate IDs found in batch input: [ADA@example.com]. IDs must " \
                              "be unique"
    assert body["context"] == {"ids": ["ADA@example.com"]}
    assert stored(sandbox, "hubspot", "contacts") == []


def test_inputs_resolving_to_one_record_reject_the_whole_batch(sandbox):
    upsert(sandbox, contact("ada@example.com", crm_sync_id="C-1"))
    by_id = {"id": "C-1", "idProperty": "crm_sync_id", "objectWriteTraceId": "t2",
             "properties": {"firstname": "Augusta"}}
    response = upsert(sandbox, contact("ada@example.com", "t1", firstname="Ada"), by_id)
    assert response.status_code == 400 and "Duplicate IDs" in response.json()["message"]
    [record] = stored(sandbox, "hubspot", "contacts")
    assert "firstname" not in record["properties"]  # the first input was rolled back too


def test_batch_size_and_body_errors(sandbox):
    too_many = upsert(sandbox, *[contact(f"p{i}@example.com", f"t{i}") for i in range(101)])
    assert too_many.status_code == 400
    assert_standard_error(too_many.json())
    assert "maximum number of inputs supported in a batch request is 100" in \
        too_many.json()["message"]
    assert upsert(sandbox, *[contact(f"p{i}@example.com") for i in range(100)]).status_code == 200
    sandbox.post("/_sandbox/reset")

    empty = upsert(sandbox)
    assert empty.status_code == 400
    assert_standard_error(empty.json())
    bad_json = sandbox.post(UPSERT, headers={**AUTH, "content-type": "application/json"},
                            content=b'{"inputs": [')
    assert bad_json.status_code == 400
    assert_standard_error(bad_json.json())
    assert bad_json.json()["message"].startswith("Invalid input JSON on line 1, column 13")
    for wrong in ([contact("ada@example.com")], {"records": []}, {"inputs": ["x"]},
                  {"inputs": [{"idProperty": "email", "properties": {}}]},
                  {"inputs": [{**contact("ada@example.com"), "idproperty": "email"}]},
                  {"inputs": [{"id": "ada@example.com", "properties": {}}]},
                  {"inputs": [{**contact("ada@example.com"), "properties": {"a": {"b": 1}}}]}):
        response = sandbox.post(UPSERT, headers=AUTH, json=wrong)
        assert response.status_code == 400, wrong
        assert_standard_error(response.json())
    assert stored(sandbox, "hubspot", "contacts") == []


def test_id_property_must_have_unique_values(sandbox):
    company = {"id": "example.com", "idProperty": "domain", "properties": {"name": "Example"}}
    response = upsert(sandbox, company, obj="companies")
    assert response.status_code == 400
    assert_standard_error(response.json())
    assert response.json()["message"] == \
        "Unable to perform update/upsert by non-unique 0-2 property domain"
    by_custom = {"id": "CO-1", "idProperty": "crm_sync_id",
                 "properties": {"name": "Example", "domain": "example.com"}}
    created = upsert(sandbox, by_custom, obj="companies")
    assert created.status_code == 200 and created.json()["results"][0]["new"] is True
    # The objectTypeId addresses the same object type as its name.
    again = upsert(sandbox, by_custom, obj="0-2")
    assert again.json()["results"][0]["new"] is False
    assert len(stored(sandbox, "hubspot", "companies")) == 1


def test_unknown_object_type_and_authentication(sandbox):
    unknown = upsert(sandbox, contact("ada@example.com"), obj="widgets")
    assert unknown.status_code == 400
    assert unknown.json()["message"] == "Unable to infer object type from: widgets"
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        response = upsert(sandbox, contact("ada@example.com"), headers=headers)
        assert response.status_code == 401
        assert_standard_error(response.json(), "INVALID_AUTHENTICATION")
        assert response.json()["message"].startswith("Authentication credentials not found.")
    assert stored(sandbox, "hubspot", "contacts") == []


def test_read_one_record_by_id_or_unique_property(sandbox):
    created = upsert(sandbox, contact("ada@example.com", firstname="Ada")).json()["results"][0]
    by_id = sandbox.get(f"/crm/v3/objects/contacts/{created['id']}", headers=AUTH)
    assert by_id.status_code == 200
    assert by_id.json()["properties"]["firstname"] == "Ada"
    by_email = sandbox.get("/crm/v3/objects/contacts/ADA@example.com",
                           params={"idProperty": "email", "properties": "firstname,phone"},
                           headers=AUTH)
    assert by_email.status_code == 200 and by_email.json()["id"] == created["id"]
    assert by_email.json()["properties"]["phone"] is None
    missing = sandbox.get("/crm/v3/objects/contacts/999", headers=AUTH)
    assert missing.status_code == 404
    assert_standard_error(missing.json(), "OBJECT_NOT_FOUND")


def test_every_authenticated_answer_carries_the_rate_limit_headers(sandbox):
    ok = upsert(sandbox, contact("ada@example.com"))
    bad = upsert(sandbox)
    for response in (ok, bad):
        assert all(h in response.headers for h in LIMIT_HEADERS)
        assert response.headers["X-HubSpot-RateLimit-Max"] == "100"
        assert response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(bad.headers["X-HubSpot-RateLimit-Remaining"]) == \
        int(ok.headers["X-HubSpot-RateLimit-Remaining"]) - 1
    assert int(bad.headers["X-HubSpot-RateLimit-Daily-Remaining"]) == \
        int(ok.headers["X-HubSpot-RateLimit-Daily-Remaining"]) - 1


# -- the official SDK -----------------------------------------------------------------------------
def sdk_client(sandbox_url: str, token: str = TOKEN) -> HubSpot:
    return HubSpot(access_token=token, host=sandbox_url)


def sdk_batch(*inputs: dict) -> BatchInputSimplePublicObjectBatchInputUpsert:
    return BatchInputSimplePublicObjectBatchInputUpsert(inputs=[
        SimplePublicObjectBatchInputUpsert(
            id=i["id"], id_property=i["idProperty"], properties=i["properties"],
            object_write_trace_id=i.get("objectWriteTraceId")) for i in inputs])


def test_the_official_sdk_upserts_and_parses_the_answers(sandbox, sandbox_url):
    client = sdk_client(sandbox_url)
    first = client.crm.contacts.batch_api.upsert(sdk_batch(contact("ada@example.com", "t1")))
    assert first.status == "COMPLETE"
    [result] = first.results
    assert result.new is True and result.object_write_trace_id == "t1"
    assert result.properties["email"] == "ada@example.com" and result.created_at.year >= 2024

    mixed = client.crm.contacts.batch_api.upsert(sdk_batch(
        contact("ada@example.com", "t1", firstname="Ada"), contact("not-an-email", "t2")))
    assert mixed.num_errors == 1  # the 207 body parsed as ...UpsertObjectWithErrors
    assert mixed.results[0].new is False and mixed.results[0].id == result.id
    assert mixed.errors[0].context == {"objectWriteTraceId": ["t2"]}
    assert mixed.errors[0].errors[0].code == "INVALID_EMAIL"

    by_objects_api = client.crm.objects.batch_api.upsert(
        "contacts", sdk_batch(contact("grace@example.com", "t3")))
    assert by_objects_api.results[0].new is True
    read = client.crm.contacts.basic_api.get_by_id(result.id, properties=["firstname"])
    assert read.properties["firstname"] == "Ada"

    with pytest.raises(ApiException) as refused:
        client.crm.contacts.batch_api.upsert(sdk_batch(contact("bad@"), contact("x@example.com")))
    assert refused.value.status == 400
    with pytest.raises(ApiException) as unauthorized:
        sdk_client(sandbox_url, "wrong").crm.contacts.batch_api.upsert(
            sdk_batch(contact("ada@example.com")))
    assert unauthorized.value.status == 401
    assert len(stored(sandbox, "hubspot", "contacts")) == 2


# -- rate limits ----------------------------------------------------------------------------------
def test_one_request_over_the_ten_secondly_window_gets_the_documented_429(tmp_path):
    with sandbox_process(tmp_path / "sandbox.sqlite",
                         extra_args=["--hubspot-rate-limit", "5"]) as url, \
            httpx.Client(base_url=url, timeout=10) as client:
        responses = [upsert(client, contact(f"p{i}@example.com")) for i in range(6)]
        stats = client.get("/_sandbox/stats").json()["counters"]
    assert [r.status_code for r in responses] == [200] * 5 + [429]
    assert [r.headers["X-HubSpot-RateLimit-Remaining"] for r in responses] == \
        ["4", "3", "2", "1", "0", "0"]
    limited = responses[-1]
    body = limited.json()
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["status"] == "error" and body["correlationId"] and body["groupName"]
    assert limited.headers["X-HubSpot-RateLimit-Max"] == "5"
    assert limited.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert "Retry-After" not in limited.headers  # HubSpot sends none for this limit
    assert stats["rate_limited total"] == 1


def test_the_daily_allowance_runs_out():
    with sandbox_in_thread(hubspot_rate_limit=100) as (url, state), \
            httpx.Client(base_url=url, timeout=10) as client:
        state.hubspot_daily_limit = 2
        responses = [upsert(client, contact(f"p{i}@example.com")) for i in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 429]
    assert [r.headers["X-HubSpot-RateLimit-Daily-Remaining"] for r in responses] == \
        ["1", "0", "0"]
    assert responses[-1].json()["policyName"] == "DAILY"
    assert responses[-1].json()["message"] == "You have reached your daily limit."
