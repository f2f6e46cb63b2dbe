"""HubSpot's single-object create and update in the sandbox (crm_sync/sandbox/hubspot_single.py),
over HTTP: the documented shapes, the batch endpoints' validation, conflicts and limits, the
official SDK's basic_api against it, and the same records the batch upsert sees."""

from __future__ import annotations

import httpx
import pytest
from hubspot import HubSpot
from hubspot.crm.contacts import ApiException, SimplePublicObjectInput
from hubspot.crm.contacts import SimplePublicObjectInputForCreate

from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_sandbox_hubspot import ISO, LIMIT_HEADERS, sandbox_in_thread

TOKEN = DEFAULT_TOKENS["hubspot"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTACTS = "/crm/v3/objects/contacts"


def create(sandbox, properties: dict, obj: str = "contacts", headers=AUTH, **extra):
    return sandbox.post(f"/crm/v3/objects/{obj}", headers=headers,
                        json={"properties": properties, **extra})


def update(sandbox, object_id: str, properties: dict, id_property: str | None = None,
           headers=AUTH):
    params = {"idProperty": id_property} if id_property else {}
    return sandbox.patch(f"{CONTACTS}/{object_id}", headers=headers, params=params,
                         json={"properties": properties})


def test_create_answers_201_with_the_object_and_stores_it(sandbox):
    response = create(sandbox, {"email": "Ada@Example.com", "lastname": "Lovelace"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "properties", "createdAt", "updatedAt", "archived"}
    assert body["id"].isdigit() and body["archived"] is False
    assert ISO.match(body["createdAt"]) and ISO.match(body["updatedAt"])
    assert body["properties"]["email"] == "ada@example.com"  # stored lowercased, as HubSpot
    assert body["properties"]["hs_object_id"] == body["id"]
    assert all(h in response.headers for h in LIMIT_HEADERS)
    (record,) = stored(sandbox, "hubspot", "contacts")
    assert record["id"] == body["id"] and record["properties"]["lastname"] == "Lovelace"


def test_update_by_id_and_by_unique_property(sandbox):
    record_id = create(sandbox, {"email": "ada@example.com", "lastname": "L"}).json()["id"]
    by_id = update(sandbox, record_id, {"jobtitle": "Analyst"})
    assert by_id.status_code == 200, by_id.text
    assert by_id.json()["properties"]["jobtitle"] == "Analyst"
    by_email = update(sandbox, "ADA@example.com", {"lastname": "Lovelace", "jobtitle": ""},
                      id_property="email")
    assert by_email.status_code == 200, by_email.text
    assert by_email.json()["id"] == record_id
    (record,) = stored(sandbox, "hubspot", "contacts")
    assert record["properties"]["lastname"] == "Lovelace"
    assert "jobtitle" not in record["properties"]  # "" clears a value


def test_update_of_a_missing_record_is_404(sandbox):
    for object_id, id_property in (("12345678901", None), ("nobody@example.com", "email")):
        response = update(sandbox, object_id, {"lastname": "X"}, id_property)
        assert response.status_code == 404
        assert response.json()["category"] == "OBJECT_NOT_FOUND"
    assert stored(sandbox, "hubspot", "contacts") == []


def test_update_by_a_non_unique_property_is_refused(sandbox):
    create(sandbox, {"email": "ada@example.com", "lastname": "Lovelace"})
    response = update(sandbox, "Lovelace", {"jobtitle": "X"}, id_property="lastname")
    assert response.status_code == 400
    assert "non-unique 0-1 property lastname" in response.json()["message"]


def test_a_unique_value_that_exists_is_409_conflict_on_create_and_update(sandbox):
    first = create(sandbox, {"email": "ada@example.com", "lastname": "L"}).json()["id"]
    again = create(sandbox, {"email": "ADA@example.com", "lastname": "L"})
    assert again.status_code == 409
    body = again.json()
    assert body["category"] == "CONFLICT"
    assert body["message"] == f"Contact already exists. Existing ID: {first}"
    second = create(sandbox, {"email": "grace@example.com", "lastname": "H"}).json()["id"]
    taken = update(sandbox, second, {"email": "ada@example.com"})
    assert taken.status_code == 409 and taken.json()["category"] == "CONFLICT"
    assert len(stored(sandbox, "hubspot", "contacts")) == 2


def test_refused_values_answer_the_batch_endpoints_validation_body(sandbox):
    response = create(sandbox, {"email": "not-an-email", "lifecyclestage": "nope",
                                "no_such_property": "x", "hs_object_id": "1"})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: ")
    codes = {e["code"] for e in body["errors"]}
    assert {"INVALID_EMAIL", "INVALID_OPTION", "PROPERTY_DOESNT_EXIST",
            "READ_ONLY_VALUE"} <= codes
    record_id = create(sandbox, {"email": "ada@example.com", "lastname": "L"}).json()["id"]
    bad = update(sandbox, record_id, {"phone": {"nested": 1}})
    assert bad.status_code == 400 and "phone" in bad.json()["message"]
    assert len(stored(sandbox, "hubspot", "contacts")) == 1


@pytest.mark.parametrize("body", [
    b"{not json",
    b'["properties"]',
    b'{"lastname": "x"}',
    b'{"properties": {"lastname": "x"}, "inputs": []}',
    b'{"properties": {"lastname": "x"}, "associations": [{"to": {"id": "1"}, "types": []}]}',
])
def test_malformed_create_bodies_are_400(sandbox, body):
    response = sandbox.post(CONTACTS, headers={**AUTH, "content-type": "application/json"},
                            content=body)
    assert response.status_code == 400
    assert response.json()["status"] == "error" and response.json()["correlationId"]
    assert stored(sandbox, "hubspot", "contacts") == []


def test_auth_and_unknown_object_type(sandbox):
    assert create(sandbox, {"lastname": "x"}, headers={"Authorization": "Bearer no"}
                  ).status_code == 401
    unknown = create(sandbox, {"lastname": "x"}, obj="nothing")
    assert unknown.status_code == 400 and "Unable to infer object type" in \
        unknown.json()["message"]
    assert update(sandbox, "1", {"lastname": "x"}, headers={}).status_code == 401


def test_single_writes_and_batch_upsert_see_the_same_records(sandbox):
    record_id = create(sandbox, {"email": "ada@example.com", "lastname": "L",
                                 "crm_sync_id": "c-1"}).json()["id"]
    batch = sandbox.post(f"{CONTACTS}/batch/upsert", headers=AUTH, json={"inputs": [
        {"id": "c-1", "idProperty": "crm_sync_id", "properties": {"jobtitle": "Analyst"}}]})
    assert batch.status_code == 200, batch.text
    assert batch.json()["results"][0]["id"] == record_id
    patched = update(sandbox, "c-1", {"firstname": "Ada"}, id_property="crm_sync_id")
    assert patched.json()["properties"]["jobtitle"] == "Analyst"
    read = sandbox.get(f"{CONTACTS}/ada@example.com", headers=AUTH,
                       params={"idProperty": "email"}).json()
    assert read["id"] == record_id and read["properties"]["firstname"] == "Ada"


def test_the_rolling_window_counts_single_writes():
    with sandbox_in_thread(hubspot_rate_limit=2, hubspot_window_seconds=30) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            answers = [create(client, {"email": f"u{i}@example.com", "lastname": "x"})
                       for i in range(3)]
            assert [a.status_code for a in answers] == [201, 201, 429]
            assert answers[2].json()["policyName"] == "TEN_SECONDLY_ROLLING"
            assert len(stored(client, "hubspot", "contacts")) == 2


def test_the_official_sdk_creates_and_updates(sandbox, sandbox_url):
    contacts = HubSpot(access_token=TOKEN, host=sandbox_url).crm.contacts.basic_api
    created = contacts.create(SimplePublicObjectInputForCreate(
        properties={"email": "ada@example.com", "lastname": "Lovelace"}, associations=[]))
    assert created.id.isdigit() and created.properties["lastname"] == "Lovelace"
    updated = contacts.update("ada@example.com", SimplePublicObjectInput(
        properties={"jobtitle": "Analyst"}), id_property="email")
    assert updated.id == created.id and updated.properties["jobtitle"] == "Analyst"
    with pytest.raises(ApiException) as conflict:
        contacts.create(SimplePublicObjectInputForCreate(
            properties={"email": "ada@example.com"}, associations=[]))
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as missing:
        contacts.update("99999999999", SimplePublicObjectInput(properties={"lastname": "x"}))
    assert missing.value.status == 404
