"""The Salesforce connector against the sandbox: every row ends exactly once, reruns update the
same records, bad rows fail alone, and the daily allowance reserve stops a sync cleanly."""

from __future__ import annotations

import asyncio
import json

import dagster as dg
import httpx
import pandas as pd
import pytest
from pydantic import ValidationError

from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors.core import FatalCrmError, HttpCore
from crm_sync.connectors.salesforce import SalesforceConnector, SalesforceResource
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

TOKEN = DEFAULT_TOKENS["salesforce"]
SPEC = bundled_unlinked().sync("companies_to_salesforce")
RESERVE = "ALLOWANCE_RESERVE_REACHED"


def rows(n: int, start: int = 0) -> list[tuple[str, dict, str | None]]:
    return [(f"CO-{i:07d}", {"External_Id__c": f"CO-{i:07d}", "Name": f"Company {i}",
                             "Website": f"company{i}.example", "NumberOfEmployees": i % 5000 + 1,
                             "AnnualRevenue": 1000.5 * i}, None)
            for i in range(start, start + n)]


def with_fields(row, **fields):
    key, current, crm_id = row
    return key, {**current, **fields}, crm_id


def accounts(sandbox) -> dict[str, dict]:
    records = stored(sandbox, "salesforce", "Account")
    by_ext = {r["External_Id__c"]: r for r in records}
    assert len(by_ext) == len(records), "two Accounts share an external id"
    return by_ext


@pytest.fixture
def resource(sandbox_url):
    def make(**options) -> SalesforceResource:
        return SalesforceResource(base_url=sandbox_url, token=TOKEN, **options)
    return make


@pytest.fixture
def daily_limit(sandbox):
    def set_limit(value: int) -> None:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": value}).raise_for_status()

    yield set_limit
    set_limit(100_000)


def test_2500_rows_arrive_complete_and_a_rerun_updates_the_same_records(sandbox, resource):
    data = rows(2500)
    outcomes, stats = resource().run(SPEC, data)
    assert sorted(o.key for o in outcomes) == sorted(k for k, _, _ in data)
    assert {o.status for o in outcomes} == {"created"}
    assert stats.requests == 13  # 12 full batches of 200 and one of 100
    assert sandbox.get("/_sandbox/records/salesforce/Account").json()["count"] == 2500
    first_ids = {o.key: o.crm_id for o in outcomes}
    stored_ids = {ext: r["Id"] for ext, r in accounts(sandbox).items()}
    assert stored_ids == first_ids

    # crm_sync hands the known ids back on a rerun; they are never sent, only remembered.
    again, _ = resource().run(SPEC, [(k, f, first_ids[k]) for k, f, _ in data])
    assert {o.status for o in again} == {"updated"}
    assert {o.key: o.crm_id for o in again} == first_ids
    assert sandbox.get("/_sandbox/records/salesforce/Account").json()["count"] == 2500


def test_bad_records_in_the_middle_fail_alone(sandbox, resource):
    data = rows(400)
    data[150] = with_fields(data[150], Name="")
    data[151] = with_fields(data[151], Name="x" * 256)
    data[152] = with_fields(data[152], Id="001xx0000004GxEAAU")
    data[153] = with_fields(data[153], External_Id__c="CO-SHARED")
    data[154] = with_fields(data[154], External_Id__c="CO-SHARED")
    outcomes, stats = resource().run(SPEC, data)
    by_key = {o.key: o for o in outcomes}
    expected = {data[150][0]: ("REQUIRED_FIELD_MISSING", "Name"),
                data[151][0]: ("STRING_TOO_LONG", "Name"),
                data[152][0]: ("MALFORMED_ID", "Id"),
                data[153][0]: ("DUPLICATE_VALUE", "External_Id__c"),
                data[154][0]: ("DUPLICATE_VALUE", "External_Id__c")}
    for key, (code, column) in expected.items():
        outcome = by_key[key]
        assert (outcome.status, outcome.error_code, outcome.column) == ("failed", code, column)
        assert outcome.transient is False and outcome.message
    assert all(o.status == "created" for k, o in by_key.items() if k not in expected)
    assert stats.requests == 2
    assert len(accounts(sandbox)) == 395


def test_all_or_none_one_bad_record_does_not_block_the_other_199(sandbox, resource):
    spec = SPEC.model_copy(update={"all_or_none": True})
    data = rows(200)
    data[100] = with_fields(data[100], Name=None)
    outcomes, stats = resource().run(spec, data)
    bad = [o for o in outcomes if o.status == "failed"]
    assert [(o.key, o.error_code, o.column, o.transient) for o in bad] == \
        [(data[100][0], "REQUIRED_FIELD_MISSING", "Name", False)]
    assert sum(o.status == "created" for o in outcomes) == 199
    assert stats.requests == 2  # the rolled-back 199 were sent once more, without the bad one
    assert len(accounts(sandbox)) == 199


def test_a_request_refused_as_a_whole_is_bisected_down_to_the_bad_record(sandbox, resource):
    data = rows(50)
    data[20] = with_fields(data[20], NumberOfEmployees="many")  # not an int: a 400 for all
    outcomes, stats = resource().run(SPEC, data)
    bad = [o for o in outcomes if o.status == "failed"]
    assert [(o.key, o.error_code, o.transient) for o in bad] == \
        [(data[20][0], "JSON_PARSER_ERROR", False)]
    assert stats.splits >= 1
    assert len(accounts(sandbox)) == 49


def test_the_allowance_reserve_stops_the_sync_and_the_rest_goes_next_run(sandbox, resource,
                                                                          daily_limit):
    daily_limit(10)
    data = rows(3000)  # 15 batches; the reserve (50% of 10 requests) allows about 5
    outcomes, stats = resource(daily_allowance_share=0.5).run(SPEC, data)
    assert sorted(o.key for o in outcomes) == sorted(k for k, _, _ in data)
    created = [o for o in outcomes if o.status == "created"]
    held = [o for o in outcomes if o.status == "failed"]
    # Batches already in flight when the reserve was reached still complete (4 at a time).
    assert 5 * 200 <= len(created) <= 8 * 200 and len(created) % 200 == 0
    assert len(created) + len(held) == 3000
    for outcome in held:
        assert outcome.error_code == RESERVE and outcome.transient is True
        assert "of 10 requests used" in outcome.message
        assert "retried on the next run" in outcome.message
    assert stats.requests == len(created) // 200
    assert len(accounts(sandbox)) == len(created)

    daily_limit(100_000)  # the next day: the held rows go out, nothing is duplicated
    retry = [r for r in data if r[0] in {o.key for o in held}]
    later, _ = resource().run(SPEC, retry)
    assert {o.status for o in later} == {"created"}
    assert len(accounts(sandbox)) == 3000


def test_a_spent_allowance_fails_the_batches_transient(sandbox, resource, daily_limit):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    daily_limit(2)
    for _ in range(2):  # another integration spends the org's allowance
        sandbox.get("/services/data/v62.0/limits", headers=auth).raise_for_status()
    outcomes, stats = resource(daily_allowance_share=1.0).run(SPEC, rows(3000))
    assert all(o.status == "failed" and o.transient for o in outcomes)
    codes = {o.error_code for o in outcomes}
    assert "REQUEST_LIMIT_EXCEEDED" in codes and codes <= {"REQUEST_LIMIT_EXCEEDED", RESERVE}
    refused = next(o for o in outcomes if o.error_code == "REQUEST_LIMIT_EXCEEDED")
    assert refused.http_status == 403 and "daily API request limit is spent" in refused.message
    # Of 15 batches only those already in flight (4 at a time) reached Salesforce.
    assert 1 <= stats.requests <= 4
    assert accounts(sandbox) == {}


def test_faults_every_row_ends_exactly_once_without_duplicates(sandbox, resource):
    # No rate_429: Salesforce answers its limits with 403 REQUEST_LIMIT_EXCEEDED, which stops
    # the sync (test_a_request_limit_in_salesforces_shape_stops_the_sync_transient); the faults
    # that are retried are 5xx and broken answers.
    sandbox.post("/_sandbox/faults", json={
        "seed": 5, "rate_500": 0.1, "rate_503": 0.1, "rate_drop": 0.05, "rate_truncated": 0.05,
        "retry_after_seconds": 0}).raise_for_status()
    data = rows(2000)
    outcomes, stats = resource(max_attempts=8, max_backoff_seconds=1).run(SPEC, data)
    assert sorted(o.key for o in outcomes) == sorted(k for k, _, _ in data)
    assert stats.retries > 0
    ok = {o.key for o in outcomes if o.ok}
    assert all(o.transient for o in outcomes if not o.ok)
    assert set(accounts(sandbox)) == ok

    sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    rest = [r for r in data if r[0] not in ok]
    if rest:
        again, _ = resource().run(SPEC, rest)
        assert all(o.ok for o in again)
    assert len(accounts(sandbox)) == 2000


def test_a_refused_token_is_fatal_and_never_shown(sandbox, resource):
    secret = "not-the-real-token-0123456789"
    with pytest.raises(FatalCrmError) as refused:
        SalesforceResource(base_url=resource().base_url, token=secret).run(SPEC, rows(3))
    message = str(refused.value)
    assert "companies_to_salesforce" in message and "SALESFORCE_TOKEN" in message
    assert secret not in message


def test_an_unknown_sobject_or_field_is_fatal(sandbox, resource):
    with pytest.raises(FatalCrmError, match="NOT_FOUND"):
        resource().run(SPEC.model_copy(update={"object": "Gadget__c"}), rows(3))
    with pytest.raises(FatalCrmError, match="No such column 'Colour__c'"):
        resource().run(SPEC, [with_fields(r, Colour__c="red") for r in rows(3)])
    assert accounts(sandbox) == {}


def test_resource_settings():
    resource = SalesforceResource(token=TOKEN)
    assert (resource.api_version, resource.batch_size, resource.daily_allowance_share) == \
        ("62.0", 200, 0.9)
    assert resource.connector_options() == {"api_version": "62.0", "daily_allowance_share": 0.9,
                                            "bulk_timeout_seconds": 900.0}
    for bad in ({"batch_size": 201}, {"api_version": "45.0"}, {"api_version": "v62"},
                {"daily_allowance_share": 0}, {"max_concurrency": 26},
                {"bulk_timeout_seconds": 0}):
        with pytest.raises(ValidationError):
            SalesforceResource(token=TOKEN, **bad)
    assert TOKEN not in repr(resource)


# -- answers the sandbox does not give: one hard-to-provoke response each --------------------
def _run_against(answer, data, spec=SPEC):
    """Run the connector with httpx.MockTransport answering every request with `answer`."""
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return answer(seen[-1])

    async def go():
        settings = SalesforceResource(token=TOKEN).http_settings()
        async with HttpCore(settings) as core:
            await core._client.aclose()
            core._client = httpx.AsyncClient(base_url=settings.base_url,
                                              transport=httpx.MockTransport(handler))
            connector = SalesforceConnector(spec, core)
            items = [connector.item(k, f, c) for k, f, c in data]
            return await connector.upsert(items)

    return asyncio.run(go()), seen


def test_a_result_list_of_the_wrong_length_fails_the_batch_transient():
    answer = [{"id": "001xx0000004GxDAAU", "success": True, "errors": [], "created": True}]
    outcomes, seen = _run_against(lambda body: httpx.Response(200, json=answer), rows(2))
    assert seen[0]["allOrNone"] is False
    assert [r["attributes"] for r in seen[0]["records"]] == [{"type": "Account"}] * 2
    assert all(o.error_code == "MALFORMED_RESPONSE" and o.transient for o in outcomes)
    assert outcomes[0].raw and "001xx0000004GxDAAU" in outcomes[0].raw


def test_results_without_the_created_flag_and_unreadable_results():
    # The docs' partial-failure example leaves `created` out of a successful result.
    answer = [{"id": "001xx0000004GxDAAU", "success": True, "errors": []},
              {"id": "001xx0000004GxEAAU", "success": True, "errors": []},
              "garbage"]
    data = rows(3)
    data[1] = (data[1][0], data[1][1], "001xx0000004GxEAAU")  # a record crm_sync already knew
    outcomes, seen = _run_against(lambda body: httpx.Response(200, json=answer), data)
    assert [o.status for o in outcomes] == ["created", "updated", "failed"]
    assert outcomes[2].error_code == "MALFORMED_RESPONSE" and outcomes[2].transient
    assert all("Id" not in r and "id" not in r for r in seen[0]["records"])


def test_a_roll_back_with_no_record_to_blame_is_retried_next_run():
    rolled = {"id": None, "success": False, "created": False, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK", "message": "rolled back",
        "fields": []}]}
    spec = SPEC.model_copy(update={"all_or_none": True})
    outcomes, seen = _run_against(lambda body: httpx.Response(200, json=[rolled] * 3),
                                  rows(3), spec)
    assert len(seen) == 1 and seen[0]["allOrNone"] is True
    assert all(o.error_code == "ALL_OR_NONE_OPERATION_ROLLED_BACK" and o.transient
               for o in outcomes)


# -- end to end --------------------------------------------------------------------------------
PARTITION = "2026-11-04"  # companies with blank names and record ids as external ids


def test_salesforce_partition_end_to_end(sandbox, store):
    from crm_sync.definitions import build_resources  # the full project: imported when needed

    spec = bundled_unlinked()
    sync = spec.sync("companies_to_salesforce")
    frame = pd.read_csv(PROJECT_ROOT / "data" / "companies.csv", dtype=str,
                        keep_default_na=False)
    source = frame[frame["updated_at"].str.startswith(PARTITION)].reset_index(drop=True)
    expected_bad = {f.source_key for f in validate_partition(sync, source).failures}
    assert expected_bad, "the bundled data must contain bad companies in this partition"

    selection = [a for a in build_assets(spec) if a.key.path[0] in (
        "source_companies", "validated_companies_to_salesforce", "companies_to_salesforce")]
    result = dg.materialize(selection, partition_key=PARTITION, resources=build_resources())
    assert result.success

    by_ext = accounts(sandbox)
    good = source[~source["company_id"].isin(expected_bad)]
    assert set(by_ext) == set(good["company_id"])
    for row in good.itertuples():
        record = by_ext[row.company_id]
        assert record["Id"].startswith("001") and len(record["Id"]) == 18
        assert record["Name"] == row.name and record["Website"] == row.domain
        assert record["Industry"] == row.industry and record["Phone"] == row.phone
        assert record["BillingCountry"] == row.country
        assert isinstance(record["NumberOfEmployees"], int)
        assert record["NumberOfEmployees"] == int(row.employees)
        assert isinstance(record["AnnualRevenue"], (int, float))
        assert record["AnnualRevenue"] == float(row.annual_revenue)

    meta = result.asset_materializations_for_node("companies_to_salesforce")[0].metadata
    assert meta["created"].value == len(good) and meta["failed"].value == 0
    state = store.state_frame("companies_to_salesforce")
    assert set(state["crm_id"]) == {r["Id"] for r in by_ext.values()}
    quarantine = store.quarantine_frame("companies_to_salesforce")
    assert set(quarantine["source_key"]) == expected_bad


# -- issue 15: describe, a stricter org, limits in Salesforce's shape ---------------------------
def _describe(resource, spec=SPEC):
    async def go():
        async with resource().open(spec) as connector:
            return await connector.describe()
    return asyncio.run(go())


def test_describe_reads_the_sobjects_fields_from_the_sandbox(sandbox, resource):
    schema = _describe(resource)
    assert schema.crm == "salesforce" and schema.object == "Account"
    assert schema.source == "GET /services/data/v62.0/sobjects/Account/describe"
    ext, name, employees = (schema.field(n) for n in ("External_Id__c", "Name",
                                                      "NumberOfEmployees"))
    assert ext.external_id and not ext.unique and not ext.case_sensitive and ext.type == "string"
    assert name.required_on_create and name.length == 255
    assert (employees.type, employees.crm_type, employees.precision) == ("integer", "int", 8)
    revenue = schema.field("AnnualRevenue")
    assert (revenue.type, revenue.crm_type, revenue.precision, revenue.scale) == \
        ("number", "currency", 18, 0)
    assert schema.field("Id").read_only and schema.field("CreatedDate").type == "datetime"
    assert schema.field("CreatedById").type == "reference"
    priority = schema.field("CustomerPriority__c")
    assert priority.type == "enumeration" and priority.options == ("High", "Low", "Medium")
    assert "Technology" in schema.field("Industry").options
    assert schema.field("Onboarded_At__c").type == "datetime"
    assert not schema.field("IsDeleted").required_on_create  # defaulted on create
    # The CrmObjectSchema round-trips through its lock-file form.
    assert type(schema).from_json(schema.to_json()) == \
        type(schema).from_json(type(schema).from_json(schema.to_json()).to_json())


def test_describe_of_an_unknown_sobject_is_fatal(sandbox, resource):
    with pytest.raises(FatalCrmError, match="no sObject 'Gadget__c'"):
        _describe(resource, SPEC.model_copy(update={"object": "Gadget__c"}))


def test_a_datetime_salesforce_cannot_parse_is_narrowed_to_its_record(sandbox, resource):
    # Salesforce refuses the whole request (400 JSON_PARSER_ERROR) for one "2017-10-17 00:00:00"
    # (https://github.com/regican/Salesforce/issues/2): bisection finds the record.
    data = [with_fields(r, Onboarded_At__c="2026-11-01T08:00:00.000Z") for r in rows(40)]
    data[13] = with_fields(data[13], Onboarded_At__c="2017-10-17 00:00:00")
    data[30] = with_fields(data[30], Contract_Start__c="2026-11-01T00:00:00Z")  # a date field
    outcomes, stats = resource().run(SPEC, data)
    bad = sorted((o.key, o.error_code, o.transient) for o in outcomes if not o.ok)
    assert bad == [(data[13][0], "JSON_PARSER_ERROR", False),
                   (data[30][0], "JSON_PARSER_ERROR", False)]
    message = next(o.message for o in outcomes if o.key == data[13][0])
    assert "Cannot deserialize instance of datetime from VALUE_STRING value 2017-10-17" in message
    assert stats.splits >= 2
    assert set(accounts(sandbox)) == {k for k, _, _ in data} - {data[13][0], data[30][0]}


@pytest.mark.parametrize("fault, what", [("rate_429", "concurrent long-running API request"),
                                         ("rate_429_daily", "daily API request")])
def test_a_request_limit_in_salesforces_shape_stops_the_sync_transient(sandbox, resource, fault,
                                                                       what):
    # Injected limits answer as Salesforce does: 403 REQUEST_LIMIT_EXCEEDED, never a 429.
    sandbox.post("/_sandbox/faults", json={fault: 1.0}).raise_for_status()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    raw = sandbox.get("/services/data/v62.0/limits", headers=auth)
    assert raw.status_code == 403 and "retry-after" not in raw.headers
    assert raw.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    outcomes, stats = resource(max_attempts=3).run(SPEC, rows(1000))
    assert len(outcomes) == 1000 and not any(o.ok for o in outcomes)
    assert all(o.transient for o in outcomes)
    codes = {o.error_code for o in outcomes}
    assert "REQUEST_LIMIT_EXCEEDED" in codes and codes <= {"REQUEST_LIMIT_EXCEEDED", RESERVE}
    refused = next(o for o in outcomes if o.error_code == "REQUEST_LIMIT_EXCEEDED")
    assert refused.http_status == 403 and f"{what} limit is spent" in refused.message
    assert stats.retries == 0  # a 403 is not retried: no request after the ones in flight
    assert stats.requests <= 4
    sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    assert accounts(sandbox) == {}
