"""The HubSpot connector against the sandbox over real HTTP: volume, reruns, bad records,
faults, the client-side rate limit, fatal errors, and one Dagster partition end to end."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import ClassVar

import dagster as dg
import httpx
import pandas as pd
import pytest

from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors.core import (
    AllowanceReserveReached, FatalCrmError, HttpCore, HttpSettings,
)
from crm_sync.connectors.hubspot import HubSpotConnector, HubSpotResource
from crm_sync.definitions import build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_sandbox_hubspot import sandbox_in_thread
from crm_sync_tests.bundled_spec import bundled_unlinked

TOKEN = DEFAULT_TOKENS["hubspot"]
PARTITION = "2026-11-03"
SPEC = bundled_unlinked().sync("contacts_to_hubspot")


def rows(n: int, start: int = 0, **overrides) -> list[tuple[str, dict, None]]:
    """(source key, mapped fields, known CRM id) as the runner (crm_sync/load/runner.py) hands them to a resource."""
    return [(f"CT-{i:07d}", {"email": f"person{i}@example.com", "firstname": f"First{i}",
                            "lastname": f"Last{i}", "lifecyclestage": "lead",
                            "crm_sync_id": f"CT-{i:07d}", **overrides}, None)
            for i in range(start, start + n)]


def resource(url: str, **options) -> HubSpotResource:
    return HubSpotResource(base_url=url, token=TOKEN, **options)


def by_key(outcomes) -> dict:
    keys = [o.key for o in outcomes]
    assert len(keys) == len(set(keys)), "one outcome per row"
    return {o.key: o for o in outcomes}


def test_2500_rows_arrive_complete_and_a_rerun_updates_the_same_records(sandbox, sandbox_url):
    data = rows(2500)
    outcomes, stats = resource(sandbox_url).run(SPEC, data)
    first = by_key(outcomes)
    assert len(first) == 2500 and {o.status for o in outcomes} == {"created"}
    assert stats.requests == 25 and stats.rate_limited == 0
    records = stored(sandbox, "hubspot", "contacts")
    assert len(records) == 2500
    ids = {r["properties"]["crm_sync_id"]: r["id"] for r in records}
    assert {k: o.crm_id for k, o in first.items()} == ids

    again, _ = resource(sandbox_url).run(SPEC, data)
    assert {o.status for o in again} == {"updated"}
    assert {o.key: o.crm_id for o in again} == ids
    assert len(stored(sandbox, "hubspot", "contacts")) == 2500


def test_bad_records_fail_alone_with_hubspots_code_and_their_neighbours_go_through(
        sandbox, sandbox_url):
    data = rows(250)
    bad_email = {7: "person7 at example.com", 120: "person120@", 121: "person 121@example.com"}
    for i, email in bad_email.items():
        data[i][1]["email"] = email
    data[200][1]["lifecyclestage"] = "royalty"
    outcomes = by_key(resource(sandbox_url).run(SPEC, data)[0])
    for i in bad_email:
        failed = outcomes[data[i][0]]
        assert failed.status == "failed" and not failed.transient
        assert failed.error_code == "INVALID_EMAIL" and failed.column == "email"
        assert failed.message == f"Email address {bad_email[i]} is invalid"
    stage = outcomes[data[200][0]]
    assert stage.error_code == "INVALID_OPTION" and stage.column == "lifecycle_stage"
    good = [key for key, _, _ in data if outcomes[key].ok]
    assert len(good) == 246 and all(outcomes[k].status == "created" for k in good)
    assert len(stored(sandbox, "hubspot", "contacts")) == 246


def test_rows_for_the_same_record_go_out_in_rounds_and_the_last_one_wins(sandbox, sandbox_url):
    data = rows(10)
    data.append(("CT-dup", {**data[3][1], "email": "PERSON3@example.com", "firstname": "Later"},
                 None))
    data.append(("CT-nokey", {"firstname": "Nobody", "lastname": "Nokey"}, None))
    outcomes, stats = resource(sandbox_url).run(SPEC, data)
    result = by_key(outcomes)
    assert result["CT-0000003"].status == "created" and result["CT-dup"].status == "updated"
    assert result["CT-dup"].crm_id == result["CT-0000003"].crm_id
    assert result["CT-nokey"].error_code == "MISSING_MATCHING_KEY"
    assert stats.requests == 2  # one round per copy, no rejected batch
    records = {r["properties"]["email"]: r for r in stored(sandbox, "hubspot", "contacts")}
    assert len(records) == 10 and records["person3@example.com"]["properties"]["firstname"] == \
        "Later"


class NoTraceConnector(HubSpotConnector):
    """Sends no objectWriteTraceId: HubSpot then fails a batch as a whole for one bad input."""

    def build_record(self, key, fields, crm_id):
        record = super().build_record(key, fields, crm_id)
        del record["objectWriteTraceId"]
        return record


class NoTraceResource(HubSpotResource):
    connector_class: ClassVar = NoTraceConnector


def test_a_whole_batch_rejection_is_bisected_down_to_the_bad_record(sandbox, sandbox_url):
    data = rows(40)
    data[25][1]["email"] = "bad@@example.com"
    outcomes, stats = NoTraceResource(base_url=sandbox_url, token=TOKEN).run(SPEC, data)
    result = by_key(outcomes)
    bad = result[data[25][0]]
    assert bad.status == "failed" and bad.error_code == "INVALID_EMAIL" and bad.column == "email"
    # Results without trace ids were matched back by email.
    assert Counter(o.status for o in outcomes) == {"created": 39, "failed": 1}
    assert stats.splits > 0
    records = {r["properties"]["email"]: r["id"] for r in stored(sandbox, "hubspot", "contacts")}
    assert records == {f"person{i}@example.com": result[data[i][0]].crm_id
                       for i in range(40) if i != 25}


def test_under_injected_faults_every_row_ends_once_and_nothing_is_duplicated(
        sandbox, sandbox_url):
    sandbox.post("/_sandbox/faults", json={
        "seed": 3, "rate_429": 0.1, "rate_503": 0.1, "rate_drop": 0.05, "rate_truncated": 0.05,
        "rate_non_json": 0.05, "retry_after_seconds": 0}).raise_for_status()
    data = rows(1000)
    options = {"max_backoff_seconds": 0.5, "batch_size": 50}
    outcomes, stats = resource(sandbox_url, **options).run(SPEC, data)
    result = by_key(outcomes)
    assert set(result) == {key for key, _, _ in data}
    assert stats.retries > 0
    injected = sandbox.get("/_sandbox/faults").json()["injected"]
    assert sum(injected.values()) > 0
    records = stored(sandbox, "hubspot", "contacts")
    emails = [r["properties"]["email"] for r in records]
    assert len(emails) == len(set(emails))  # no duplicate records
    by_crm_id = {r["id"]: r["properties"]["crm_sync_id"] for r in records}
    for key, outcome in result.items():
        assert outcome.status in ("created", "failed")
        if outcome.ok:
            assert by_crm_id[outcome.crm_id] == key
        else:
            assert outcome.transient  # retries ran out: the next run sends it again

    sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    rerun = by_key(resource(sandbox_url, **options).run(SPEC, data)[0])
    assert all(o.ok for o in rerun.values())
    assert len(stored(sandbox, "hubspot", "contacts")) == 1000


def test_the_client_never_exceeds_the_servers_window():
    with sandbox_in_thread(hubspot_rate_limit=20, hubspot_window_seconds=2) as (url, _), \
            httpx.Client(base_url=url) as admin:
        hub = resource(url, requests_per_window=20, window_seconds=2, batch_size=10,
                       max_concurrency=4)
        outcomes, stats = hub.run(SPEC, rows(450))
        counters = admin.get("/_sandbox/stats").json()["counters"]
    assert Counter(o.status for o in outcomes) == {"created": 450}
    assert stats.requests == 45 and stats.rate_limited == 0
    assert counters.get("rate_limited total", 0) == 0
    assert counters["requests POST hubspot batch/upsert"] == 45


def test_a_client_faster_than_the_window_recovers_from_429s():
    with sandbox_in_thread(hubspot_rate_limit=4, hubspot_window_seconds=1) as (url, _), \
            httpx.Client(base_url=url) as admin:
        hub = resource(url, requests_per_window=20, window_seconds=1, batch_size=10,
                       max_attempts=10, max_backoff_seconds=1)
        outcomes, stats = hub.run(SPEC, rows(120))
        records = admin.get("/_sandbox/records/hubspot/contacts").json()["count"]
    assert Counter(o.status for o in outcomes) == {"created": 120} and records == 120
    assert stats.rate_limited > 0


def test_on_response_reads_hubspots_headers():
    connector = HubSpotConnector(SPEC, core=None)

    def answer(status=200, body=b"{}", **headers):
        return httpx.Response(status, content=body, headers={
            f"X-HubSpot-RateLimit-{k.replace('_', '-')}": str(v) for k, v in headers.items()})

    assert connector.on_response(answer(Max=100, Remaining=40,
                                        Interval_Milliseconds=10000)) is None
    assert connector.on_response(answer(Max=100, Remaining=0,
                                        Interval_Milliseconds=10000)) == pytest.approx(0.1)
    assert connector.on_response(answer(Daily=10, Daily_Remaining=0)) is None
    assert connector._daily_spent  # the answer still counts; the next batches do not go out
    with pytest.raises(AllowanceReserveReached):
        connector.on_response(answer(429, b'{"policyName": "DAILY"}'))


def test_a_spent_daily_allowance_stops_sending():
    with sandbox_in_thread() as (url, state):
        state.hubspot_daily_limit = 2
        outcomes, stats = resource(url, batch_size=10).run(SPEC, rows(50))
    result = Counter((o.status, o.error_code) for o in outcomes)
    assert result == {("created", None): 20, ("failed", "ALLOWANCE_RESERVE_REACHED"): 30}
    assert all(o.transient for o in outcomes if not o.ok)
    # A batch already waiting for its turn may still go out once and get 429 DAILY; none of
    # them is retried.
    assert stats.retries == 0 and stats.requests <= 5


def test_a_locked_answer_waits_two_seconds_and_resends():
    """423 Locked is documented but not emulated by the sandbox: a MockTransport answers it."""
    calls = []

    def hubspot(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) == 1:
            return httpx.Response(423, json={"status": "error", "message": "locked"})
        return httpx.Response(200, json={"status": "COMPLETE", "results": [
            {"id": "101", "new": True, "objectWriteTraceId": "CT-0000000",
             "properties": {}, "createdAt": "x", "updatedAt": "x", "archived": False}]})

    async def run():
        settings = HttpSettings(base_url="http://127.0.0.1:9", headers={})
        async with HttpCore(settings) as core:
            await core._client.aclose()
            core._client = httpx.AsyncClient(base_url=settings.base_url,
                                             transport=httpx.MockTransport(hubspot))
            connector = HubSpotConnector(SPEC, core)
            key, fields, crm_id = rows(1)[0]
            return await connector.upsert([connector.item(key, fields, crm_id)])

    [outcome] = asyncio.run(run())
    assert outcome.status == "created" and outcome.crm_id == "101" and len(calls) == 2


def test_fatal_errors_name_the_sync_and_the_variable_never_the_token(sandbox, sandbox_url):
    with pytest.raises(FatalCrmError) as refused:
        HubSpotResource(base_url=sandbox_url, token="secret-wrong-token").run(SPEC, rows(3))
    assert "HUBSPOT_TOKEN" in str(refused.value) and "contacts_to_hubspot" in str(refused.value)
    assert "secret-wrong-token" not in str(refused.value)

    unknown = SPEC.model_copy(update={"object": "widgets"})
    with pytest.raises(FatalCrmError, match="Unable to infer object type from: widgets"):
        resource(sandbox_url).run(unknown, rows(3))

    by_domain = SPEC.model_copy(update={"object": "companies", "matching_key": "domain"})
    company = [("CO-1", {"domain": "example.com", "name": "Example"}, None)]
    with pytest.raises(FatalCrmError, match="non-unique 0-2 property domain"):
        resource(sandbox_url).run(by_domain, company)
    assert stored(sandbox, "hubspot", "contacts") == []


def test_batch_size_cannot_exceed_hubspots_100():
    with pytest.raises(Exception, match="100"):
        HubSpotResource(token=TOKEN, batch_size=101)
    assert HubSpotResource(token=TOKEN).batch_size == 100
    assert (HubSpotResource(token=TOKEN).requests_per_window,
            HubSpotResource(token=TOKEN).window_seconds) == (100, 10.0)


# -- Dagster, end to end -------------------------------------------------------------------------
def _source_rows(day: str) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / "contacts.csv", dtype=str,
                        keep_default_na=False)
    return frame[frame["updated_at"].str.startswith(day)].reset_index(drop=True)


def _materialize(spec):
    selection = [a for a in build_assets(spec) if a.key.path[0] in
                 ("source_contacts", "validated_contacts_to_hubspot", "contacts_to_hubspot")]
    return dg.materialize(selection, partition_key=PARTITION, resources=build_resources())


def test_hubspot_partition_end_to_end(sandbox, store):
    spec = bundled_unlinked()
    sync = spec.sync("contacts_to_hubspot")
    source = _source_rows(PARTITION)
    expected_bad = {f.source_key for f in validate_partition(sync, source).failures}
    assert expected_bad, "the bundled data must contain bad contacts in this partition"

    result = _materialize(spec)
    assert result.success
    contacts = {r["properties"]["crm_sync_id"]: r for r in stored(sandbox, "hubspot", "contacts")}
    good = source[~source["contact_id"].isin(expected_bad)]
    assert set(contacts) == set(good["contact_id"])
    for row in good.itertuples():
        props = contacts[row.contact_id]["properties"]
        assert props["email"] == row.email.lower()
        assert (props["firstname"], props["lastname"]) == (row.first_name, row.last_name)
        assert (props["phone"], props["jobtitle"]) == (row.phone, row.job_title)
        assert props["lifecyclestage"] == row.lifecycle_stage
    meta = result.asset_materializations_for_node("contacts_to_hubspot")[0].metadata
    assert meta["created"].value == len(good) and meta["failed"].value == 0
    assert set(store.quarantine_frame("contacts_to_hubspot")["source_key"]) == expected_bad
    state = store.state_frame("contacts_to_hubspot")
    assert set(state["crm_id"]) == {r["id"] for r in contacts.values()}

    requests_before = sandbox.get("/_sandbox/stats").json()["counters"]["requests total"]
    again = _materialize(spec)
    meta = again.asset_materializations_for_node("contacts_to_hubspot")[0].metadata
    assert meta["unchanged"].value == len(good) and meta["created"].value == 0
    assert sandbox.get("/_sandbox/stats").json()["counters"]["requests total"] == requests_before
