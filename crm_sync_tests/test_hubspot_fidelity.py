"""HubSpot, both sides, against the sandbox over HTTP (issue 15): values type-checked by their
property's type with HubSpot's error bodies, rate-limit faults in HubSpot's shape, the
properties API served from the fixtures and read by `HubSpotConnector.describe()`, and the
client narrowing a whole-batch 400 to the input it names.

Documented bodies compared with (sources in crm_sync/sandbox/hubspot_values.py and
docs/sandbox/hubspot.md): the whole-batch 400 captured in
https://github.com/Atlas-Authority/marketing-automation/issues/206 and the 429 of
https://developers.hubspot.com/docs/api/usage-details.
"""

from __future__ import annotations

import asyncio
import json
import re

import httpx
import pytest

from crm_sync.connectors.fields import CrmObjectSchema
from crm_sync.connectors.hubspot import HubSpotConnector, HubSpotResource
from crm_sync.errors import FatalCrmError
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import FieldMapping, load_spec
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

TOKEN = DEFAULT_TOKENS["hubspot"]
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PREFIX = "Property values were not valid: "
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COMPANIES = bundled_unlinked().sync("contacts_to_hubspot").model_copy(update={
    "name": "companies_to_hubspot", "source": "companies", "source_key": "company_id",
    "object": "companies", "matching_key": "crm_sync_id",
    "fields": {"crm_sync_id": FieldMapping(column="company_id", required=True),
               "name": FieldMapping(column="name"),
               "numberofemployees": FieldMapping(column="employees")}})


def company(key: str, trace: bool = True, **properties) -> dict:
    entry = {"id": key, "idProperty": "crm_sync_id",
             "properties": {"crm_sync_id": key, "name": f"Company {key}", **properties}}
    if trace:
        entry["objectWriteTraceId"] = key
    return entry


def upsert(client: httpx.Client, obj: str, inputs: list[dict]) -> httpx.Response:
    return client.post(f"/crm/v3/objects/{obj}/batch/upsert", json={"inputs": inputs},
                       headers=AUTH)


@pytest.fixture
def hub(sandbox, sandbox_url):
    with httpx.Client(base_url=sandbox_url, timeout=30) as client:
        yield client


# -- item 1: values checked by their property's type -----------------------------------------------
def test_a_bad_number_without_trace_ids_fails_the_whole_batch_with_hubspots_body(hub, sandbox):
    response = upsert(hub, "companies", [company("CO-1", trace=False, numberofemployees="12"),
                                         company("CO-2", trace=False, numberofemployees="4,68")])
    assert response.status_code == 400
    body = response.json()
    # The captured body (marketing-automation#206) has exactly these keys, no context/links.
    assert set(body) == {"status", "message", "correlationId", "errors", "category"}
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert UUID.match(body["correlationId"])
    assert body["message"].startswith(PREFIX)
    results = json.loads(body["message"][len(PREFIX):])
    assert list(results[0]) == ["isValid", "message", "error", "name", "localizedErrorMessage",
                                "propertyValue", "portalId"]
    assert results[0] | {"portalId": 0} == {
        "isValid": False, "message": "4,68 was not a valid number.", "error": "INVALID_INTEGER",
        "name": "numberofemployees", "localizedErrorMessage": "4,68 was not a valid number.",
        "propertyValue": "4,68", "portalId": 0}
    assert body["errors"] == [{"message": "4,68 was not a valid number.",
                               "code": "INVALID_INTEGER",
                               "context": {"propertyName": ["numberofemployees"]}}]
    assert stored(sandbox, "hubspot", "companies") == []  # nothing of the batch is written


def test_with_trace_ids_a_207_names_the_bad_input_and_writes_the_others(hub, sandbox):
    response = upsert(hub, "companies", [company("CO-1", numberofemployees="12"),
                                         company("CO-2", numberofemployees="abc")])
    assert response.status_code == 207
    body = response.json()
    assert body["numErrors"] == 1 and len(body["results"]) == 1
    err = body["errors"][0]
    assert set(err) == {"status", "category", "message", "context", "errors", "links"}
    assert err["context"] == {"objectWriteTraceId": ["CO-2"]}
    assert err["errors"][0]["code"] == "INVALID_INTEGER"
    assert json.loads(err["message"][len(PREFIX):])[0]["propertyValue"] == "abc"
    assert [r["properties"]["crm_sync_id"] for r in stored(sandbox, "hubspot", "companies")] \
        == ["CO-1"]


@pytest.mark.parametrize("obj, prop, value, code", [
    ("companies", "numberofemployees", "1.5e3", "INVALID_INTEGER"),  # #206: exponent refused
    ("companies", "numberofemployees", " 12", "INVALID_INTEGER"),  # 2025-04 whitespace rule
    ("companies", "is_public", "yes", "INVALID_OPTION"),
    ("companies", "lifecyclestage", "Lead", "INVALID_OPTION"),
    ("projects", "start_date", "2026-02-30", "INVALID_DATE"),
    ("projects", "start_date", "1764547200001", "INVALID_DATE"),  # not midnight UTC
    ("deals", "closedate", "2026-12-01", "INVALID_LONG"),  # a date alone for a datetime
    ("deals", "closedate", "01/12/2026 10:00", "INVALID_LONG"),
    ("contacts", "email", "x@example.con", "INVALID_EMAIL"),  # a mistyped TLD (#174)
])
def test_each_type_refuses_what_hubspot_refuses(hub, obj, prop, value, code):
    key = {"contacts": "email", "projects": "ext_id"}.get(obj, "crm_sync_id")
    good = "ok@example.com" if key == "email" else "K-1"
    entry = {"id": good, "idProperty": key, "objectWriteTraceId": "t1",
             "properties": {prop: value}}
    response = upsert(hub, obj, [entry])
    assert response.status_code == 207, response.text
    detail = response.json()["errors"][0]["errors"][0]
    assert (detail["code"], detail["context"]) == (code, {"propertyName": [prop]})


@pytest.mark.parametrize("obj, prop, value", [
    ("companies", "numberofemployees", "-12.50"), ("companies", "is_public", "true"),
    ("projects", "start_date", "2026-12-01"), ("projects", "start_date", "1764547200000"),
    ("deals", "closedate", "2026-12-01T10:00:00Z"), ("deals", "closedate", "1764583200000"),
    ("deals", "amount", "1000"), ("contacts", "email", "a.b+c@example.co.uk"),
])
def test_each_type_accepts_what_hubspot_documents(hub, obj, prop, value):
    key = {"contacts": "email", "projects": "ext_id"}.get(obj, "crm_sync_id")
    good = value if prop == "email" else "K-1"
    entry = {"id": good, "idProperty": key, "properties": {prop: value}}
    assert upsert(hub, obj, [entry]).status_code == 200


# -- item 2: rate-limit faults in HubSpot's shape ---------------------------------------------------
@pytest.mark.parametrize("setting, policy, message", [
    ("rate_429", "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit."),
    ("rate_429_daily", "DAILY", "You have reached your daily limit."),
])
def test_injected_429s_carry_hubspots_body_and_headers(hub, sandbox, setting, policy, message):
    sandbox.post("/_sandbox/faults", json={setting: 1.0, "retry_after_seconds": 2}) \
        .raise_for_status()
    response = upsert(hub, "companies", [company("CO-1")])
    assert response.status_code == 429
    body = response.json()
    assert {k: body[k] for k in ("status", "message", "errorType", "policyName")} == {
        "status": "error", "message": message, "errorType": "RATE_LIMIT", "policyName": policy}
    assert UUID.match(body["correlationId"])
    for header in ("X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining",
                   "X-HubSpot-RateLimit-Interval-Milliseconds", "X-HubSpot-RateLimit-Daily",
                   "X-HubSpot-RateLimit-Daily-Remaining"):
        assert header in response.headers
    remaining = "X-HubSpot-RateLimit-Daily-Remaining" if policy == "DAILY" \
        else "X-HubSpot-RateLimit-Remaining"
    assert response.headers[remaining] == "0"
    assert response.headers["retry-after"] == "2"
    sandbox.post("/_sandbox/faults", json={setting: 1.0, "retry_after": False})
    assert "retry-after" not in upsert(hub, "companies", [company("CO-1")]).headers


def test_an_injected_daily_429_stops_the_connectors_sending(sandbox, sandbox_url):
    sandbox.post("/_sandbox/faults", json={"rate_429_daily": 1.0}).raise_for_status()
    rows = [(f"CO-{i}", {"crm_sync_id": f"CO-{i}", "name": "x"}, None) for i in range(3)]
    outcomes, _ = HubSpotResource(base_url=sandbox_url, token=TOKEN, batch_size=1,
                                  max_concurrency=1).run(COMPANIES, rows)
    assert {(o.error_code, o.transient) for o in outcomes} == {("ALLOWANCE_RESERVE_REACHED",
                                                                 True)}
    # Not retried as a burst 429 would be: one request per batch at most (batches already
    # waiting at the limiter when the first DAILY answer arrives are still sent: see notes).
    assert sandbox.get("/_sandbox/faults").json()["injected"]["429_daily"] <= 3


# -- item 3: the properties API, served and read ---------------------------------------------------
def test_the_properties_api_serves_the_fixture(hub):
    response = hub.get("/crm/v3/properties/companies", headers=AUTH)
    assert response.status_code == 200
    results = {p["name"]: p for p in response.json()["results"]}
    assert results["numberofemployees"]["type"] == "number"
    assert results["crm_sync_id"]["hasUniqueValue"] is True
    assert results["hs_object_id"]["modificationMetadata"]["readOnlyValue"] is True
    assert [o["value"] for o in results["is_public"]["options"]] == ["true", "false"]
    for prop in results.values():
        assert {"name", "label", "type", "fieldType", "options", "hasUniqueValue", "calculated",
                "modificationMetadata", "groupName", "description"} <= set(prop)
    one = hub.get("/crm/v3/properties/0-2/is_public", headers=AUTH)
    assert one.status_code == 200 and one.json()["fieldType"] == "booleancheckbox"
    assert hub.get("/crm/v3/properties/companies/nope", headers=AUTH).status_code == 404
    assert hub.get("/crm/v3/properties/companies").status_code == 401


def test_the_official_sdk_reads_the_properties(sandbox_url):
    from hubspot import HubSpot

    api = HubSpot(access_token=TOKEN, host=sandbox_url).crm.properties.core_api
    names = {p.name: p for p in api.get_all(object_type="contacts").results}
    assert names["email"].has_unique_value is True
    assert names["lifecyclestage"].type == "enumeration"
    assert names["createdate"].modification_metadata.read_only_value is True


def _describe(url: str, spec) -> CrmObjectSchema:
    async def go():
        async with HubSpotResource(base_url=url, token=TOKEN).open(spec) as connector:
            return await connector.describe()
    return asyncio.run(go())


def test_describe_reads_the_properties_into_a_schema(sandbox_url):
    schema = _describe(sandbox_url, COMPANIES)
    assert schema.crm == "hubspot" and schema.object == "companies"
    assert schema.source == "GET /crm/v3/properties/companies"
    employees = schema.field("numberofemployees")
    assert (employees.type, employees.crm_type, employees.read_only) == ("number", "number",
                                                                         False)
    assert schema.field("crm_sync_id").unique is True
    assert schema.field("is_public").type == "boolean"
    assert schema.field("lifecyclestage").options[:2] == ("subscriber", "lead")
    object_id = schema.field("hs_object_id")
    assert not object_id.createable and not object_id.updateable and object_id.read_only
    assert schema.field("phone").type == "phone"
    contacts = _describe(sandbox_url, bundled_unlinked().sync("contacts_to_hubspot"))
    assert contacts.field("email").type == "email" and contacts.field("email").unique
    assert CrmObjectSchema.from_json(schema.to_json()) == CrmObjectSchema.from_json(
        CrmObjectSchema.from_json(schema.to_json()).to_json())


def test_describe_of_an_unknown_object_names_hubspots_answer(sandbox_url):
    spec = COMPANIES.model_copy(update={"object": "nosuchobject"})
    with pytest.raises(FatalCrmError, match="Unable to infer object type from: nosuchobject"):
        _describe(sandbox_url, spec)


# -- item 4: the client narrows a whole-batch 400 to the input it names ---------------------------
def _ten_with_one_bad() -> list[tuple[str, dict, None]]:
    return [(f"CO-{i}", {"crm_sync_id": f"CO-{i}", "name": f"Company {i}",
                         "numberofemployees": "abc" if i == 6 else str(10 * i)}, None)
            for i in range(10)]


def _check_nine_created_one_quarantined(outcomes, sandbox):
    by_key = {o.key: o for o in outcomes}
    assert len(outcomes) == 10 == len(by_key)
    bad = by_key.pop("CO-6")
    assert (bad.status, bad.error_code, bad.transient) == ("failed", "INVALID_INTEGER", False)
    assert bad.message == "abc was not a valid number." and bad.column == "employees"
    assert {o.status for o in by_key.values()} == {"created"}
    assert sorted(r["properties"]["crm_sync_id"] for r in stored(sandbox, "hubspot",
                                                                 "companies")) == sorted(by_key)


def test_a_batch_of_ten_with_one_bad_number_creates_nine(sandbox, sandbox_url):
    outcomes, stats = HubSpotResource(base_url=sandbox_url, token=TOKEN).run(
        COMPANIES, _ten_with_one_bad())
    _check_nine_created_one_quarantined(outcomes, sandbox)
    assert stats.requests == 1  # with trace ids: one 207


class _NoTraceIds(HubSpotConnector):
    """A HubSpot that ignores objectWriteTraceId (or a request without them): one bad input
    fails the whole batch with 400."""

    def build_record(self, key, fields, crm_id):
        record = super().build_record(key, fields, crm_id)
        record.pop("objectWriteTraceId")
        return record


class _NoTraceIdsResource(HubSpotResource):
    connector_class = _NoTraceIds


def test_a_whole_batch_400_is_narrowed_to_the_named_input_and_the_rest_resent(sandbox,
                                                                                sandbox_url):
    outcomes, stats = _NoTraceIdsResource(base_url=sandbox_url, token=TOKEN).run(
        COMPANIES, _ten_with_one_bad())
    _check_nine_created_one_quarantined(outcomes, sandbox)
    # Named by property and value: one split (the named input, the rest), no bisection: one
    # resend of the nine (bisecting 10 would take 7 requests).
    assert (stats.requests, stats.splits) == (2, 1)
