"""The Superleap emulation answers the documented requests with the documented shapes."""

from __future__ import annotations

import re

from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync_tests.conftest import stored

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['superleap']}"}
UPSERT = "/api/v1/org/objects/lead/record/bulk_upsert"
CREATE = "/api/v1/org/objects/lead/record/bulk_create"
ID = re.compile(r"^[A-Za-z0-9]{6}_[A-Za-z0-9]{8}$")


def test_bulk_upsert_creates_then_updates_as_documented(sandbox):
    first = sandbox.post(UPSERT, headers=AUTH, json={"values": [
        {"name": "testAdmin", "email": "test@gmail.com"}]})
    assert first.status_code == 200
    data = first.json()["data"]
    assert first.json()["success"] is True
    assert data["records_created"] == 1 and data["records_updated"] == 0
    assert data["failed_records"] is None and data["updated_records"] is None
    created = data["created_records"][0]
    assert created["action"] == "CREATED" and ID.match(created["id"])
    assert created["org_id"] == created["id"].split("_")[0]
    assert created["created_at"] > 1_600_000_000_000  # epoch milliseconds
    assert {"created_by", "object_id", "owner", "search_field", "system_created_at",
            "updated_at", "updated_by"} <= set(created)

    second = sandbox.post(UPSERT, headers=AUTH, json={"values": [
        {"name": "testssse", "email": "new@gmail.com"},
        {"id": created["id"], "name": "testSteve"}]})
    data = second.json()["data"]
    assert data["records_created"] == 1 and data["records_updated"] == 1
    assert [r["action"] for r in data["records"]] == ["CREATED", "UPDATED"]
    assert data["updated_records"][0]["id"] == created["id"]
    leads = {r["id"]: r for r in stored(sandbox, "superleap", "lead")}
    assert len(leads) == 2
    assert leads[created["id"]]["name"] == "testSteve"
    assert leads[created["id"]]["email"] == "test@gmail.com"  # untouched fields stay


def test_bulk_upsert_unknown_id_is_a_per_record_failure(sandbox):
    response = sandbox.post(UPSERT, headers=AUTH, json={"values": [
        {"name": "testssse", "email": "test@gmail.com"},
        {"id": "OAASbQ_Ph9vneRS", "name": "testsssdfsdfse"}]})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["records_created"] == 1 and data["records_updated"] == 0
    assert data["failed_records"] == [{"action": "FAILED",
                                       "error_message": "invalid id detected : OAASbQ_Ph9vneRS",
                                       "id": "OAASbQ_Ph9vneRS", "name": "testsssdfsdfse"}]
    assert data["updated_records"] is None
    assert len(stored(sandbox, "superleap", "lead")) == 1


def test_bulk_create_rejects_the_whole_request_for_one_bad_email(sandbox):
    response = sandbox.post(CREATE, headers=AUTH, json=[
        {"name": "test-8", "email": "test .sok@gmail.com"},
        {"name": "test-9", "email": "test1@gmail.com"}])
    assert response.status_code == 400
    body = response.json()
    assert body["success"] is False
    assert body["data"]["error_code"] == "VALIDATION_FAILED"
    assert body["data"]["message"] == "Failed to create records"
    assert body["data"]["validation_errors"] == [{
        "object_slug": "lead", "field": "email",
        "message": "invalid email format: test .sok@gmail.com",
        "error_code": "PARSE_INVALID_FORMAT", "record_index": 1, "meta_data": None}]
    assert stored(sandbox, "superleap", "lead") == []  # nothing was written


def test_bulk_create_success_shape(sandbox):
    response = sandbox.post(CREATE, headers=AUTH, json=[
        {"name": "John Smith", "email": "john.smith@example.com", "phone": "+1-555-123-4567",
         "status": "new", "external_id": "EXT-001"},
        {"name": "Jane Doe", "email": "jane.doe@example.com", "phone": "+1-555-987-6543",
         "status": "qualified", "external_id": "EXT-002"}])
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"message": "records added successfully"}}
    assert sorted(r["external_id"] for r in stored(sandbox, "superleap", "lead")) == \
        ["EXT-001", "EXT-002"]


def test_auth_body_and_object_errors(sandbox):
    assert sandbox.post(UPSERT, json={"values": [{"name": "x"}]}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert sandbox.post(UPSERT, headers=wrong, json={"values": [{"name": "x"}]}).status_code == 401
    bad_json = sandbox.post(UPSERT, headers={**AUTH, "content-type": "application/json"},
                            content=b"{not json")
    assert bad_json.status_code == 400 and bad_json.json()["success"] is False
    assert sandbox.post(UPSERT, headers=AUTH, json=[{"name": "x"}]).status_code == 400
    missing = sandbox.post("/api/v1/org/objects/nosuch/record/bulk_upsert", headers=AUTH,
                           json={"values": [{"name": "x"}]})
    assert missing.status_code == 404
    too_many = sandbox.post(UPSERT, headers=AUTH, json={"values": [{"name": "x"}] * 1001})
    assert too_many.status_code == 400
    assert stored(sandbox, "superleap", "lead") == []


def test_sandbox_serves_https_with_a_given_certificate(tmp_path):
    import httpx
    import trustme

    from crm_sync.sandbox.server import sandbox_process

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile, cafile = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    with sandbox_process(tmp_path / "tls.sqlite",
                         extra_args=["--certfile", str(certfile), "--keyfile", str(keyfile)]) as url:
        assert url.startswith("https://127.0.0.1:")
        response = httpx.post(f"{url}{UPSERT}", headers=AUTH, verify=str(cafile),
                              json={"values": [{"name": "over TLS"}]})
        assert response.status_code == 200
        assert response.json()["data"]["records_created"] == 1


def _upsert_under_faults(sandbox, **faults):
    """One bulk_upsert answered under the given faults (switched off again after)."""
    sandbox.post("/_sandbox/faults", json={"seed": 1, **faults}).raise_for_status()
    try:
        return sandbox.post(UPSERT, headers=AUTH, json={"values": [{"name": "x"}]})
    finally:
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()


def test_an_injected_429_is_superleaps_envelope_and_says_it_is_a_guess(sandbox):
    """Superleap documents no rate limit (REFERENCE.md): the sandbox's 429 is a guess, in the
    documented error envelope, and its message says so. On main an injected 429 had HubSpot's
    body (`errorType: RATE_LIMIT`) on Superleap's paths too."""
    answer = _upsert_under_faults(sandbox, rate_429=1.0, retry_after_seconds=3)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "3"
    body = answer.json()
    assert body["success"] is False and "errorType" not in body
    assert body["data"]["status_code"] == 429 and body["data"]["error_code"] == "RATE_LIMITED"
    assert "guess" in body["data"]["message"]
    assert stored(sandbox, "superleap", "lead") == []

    # Without Retry-After when the fault settings say so.
    sandbox.post("/_sandbox/faults", json={"seed": 1, "rate_429": 1.0,
                                            "retry_after": False}).raise_for_status()
    try:
        bare = sandbox.post(UPSERT, headers=AUTH, json={"values": [{"name": "x"}]})
    finally:
        sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    assert bare.status_code == 429 and "retry-after" not in bare.headers


def test_the_rate_limit_answer_hook_for_a_daily_limit():
    from crm_sync.sandbox.superleap import rate_limit_answer

    answer = rate_limit_answer("daily", 59.5)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "60"
    assert "guess" in answer.body.decode() and b"RATE_LIMITED" in answer.body


def test_the_documented_bulk_create_failure_replays_whole(sandbox):
    """superleap-bulk-create.txt, "Request for Failure Scenario": the whole documented answer,
    not only its parts (status, envelope, validation_errors, the trailing meta_data)."""
    documented = {"success": False, "data": {
        "message": "Failed to create records", "status_code": 400,
        "error_code": "VALIDATION_FAILED",
        "validation_errors": [{"object_slug": "lead", "field": "email",
                               "message": "invalid email format: test .sok@gmail.com",
                               "error_code": "PARSE_INVALID_FORMAT", "record_index": 1,
                               "meta_data": None}],
        "meta_data": "validation failed :"}}
    answer = sandbox.post(CREATE, headers=AUTH, json=[
        {"name": "test-8", "email": "test .sok@gmail.com"},
        {"name": "test-9", "email": "test1@gmail.com"}])
    assert answer.status_code == 400 and answer.json() == documented


def test_an_injected_daily_429_says_it_is_a_guess(sandbox):
    answer = _upsert_under_faults(sandbox, rate_429_daily=1.0, retry_after_seconds=600)
    assert answer.status_code == 429 and answer.headers["retry-after"] == "600"
    message = answer.json()["data"]["message"]
    assert message.startswith("daily request limit reached") and "guess" in message


# -- values checked by the object's field types (fixtures/superleap/<slug>.json; a GUESS) -------
def test_bulk_upsert_checks_values_by_the_objects_fixture(sandbox):
    response = sandbox.post(UPSERT, headers=AUTH, json={"values": [
        {"name": "ok", "status": "any text: options are not enforced on write"},
        {"name": "typed", "status": 3},
        {"name": True},
    ]})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["records_created"] == 1
    messages = [r["error_message"] for r in data["failed_records"]]
    assert messages == ["invalid value for field status: expected String",
                        "invalid value for field name: expected String"]
    assert [r["name"] for r in stored(sandbox, "superleap", "lead")] == ["ok"]


def test_bulk_create_names_the_record_whose_value_its_field_cannot_take(sandbox):
    path = "/api/v1/org/objects/account/record/bulk_create"
    response = sandbox.post(path, headers=AUTH, json=[
        {"name": "Acme", "employees": 12}, {"name": "Initech", "employees": "12"}])
    assert response.status_code == 400
    body = response.json()
    assert body["data"]["error_code"] == "VALIDATION_FAILED"
    assert [(e["field"], e["record_index"]) for e in body["data"]["validation_errors"]] == [
        ("employees", 2)]
    assert stored(sandbox, "superleap", "account") == []  # the whole request is refused
