"""The Brevo connector against the real sandbox: asynchronous upserts confirmed by reading the
records back, byte-limit batching, bad records, failed processes, faults and the pipeline."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections import Counter

import dagster as dg
import httpx
import pandas as pd
import pytest

from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors.brevo import BrevoConnector, BrevoResource
from crm_sync.connectors.core import FatalCrmError, HttpCore, HttpSettings
from crm_sync.connectors.model import Item
from crm_sync.connectors.wire import make_batches, serialize
from crm_sync.definitions import build_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import PROJECT_ROOT
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

KEY = DEFAULT_TOKENS["brevo"]
SPEC = bundled_unlinked().sync("projects_to_brevo")
PARTITION = "2026-11-03"


@pytest.fixture
def brevo(sandbox):
    """The sandbox with Brevo's run-time settings pinned, put back afterwards."""
    defaults = {"process_steps": 2, "rate_limit": None}
    sandbox.post("/_sandbox/brevo/settings", json=defaults).raise_for_status()
    yield sandbox
    sandbox.post("/_sandbox/brevo/settings", json=defaults)


def resource(url: str, **overrides) -> BrevoResource:
    # Short polls and a generous client-side rate: the sandbox completes a process in 3 polls.
    options = {"base_url": url, "token": KEY, "poll_interval_seconds": 0.01,
               "max_poll_interval_seconds": 0.05, "requests_per_window": 200,
               "max_backoff_seconds": 1.0, **overrides}
    return BrevoResource(**options)


def rows(n: int, start: int = 0, **extra) -> list[tuple[str, dict, str | None]]:
    return [(f"PR-{i:07d}", {"name": f"Project {i}", "status": "active", "budget": 1000 + i,
                             "start_date": "2026-11-01", "company_ext_id": f"CO-{i % 7}",
                             "cf_0": i % 1000, **extra}, None)
            for i in range(start, start + n)]


def by_ext_id(sandbox) -> dict[str, dict]:
    records = stored(sandbox, "brevo", "project")
    found = {r["identifiers"]["ext_id"]: r for r in records}
    assert len(found) == len(records), "two Brevo records share an ext_id"
    return found


def statuses(outcomes) -> Counter:
    return Counter((o.status, o.error_code) for o in outcomes)


def test_2500_rows_arrive_complete_and_a_second_run_updates_them(brevo, sandbox_url):
    data = rows(2500)
    outcomes, stats = resource(sandbox_url).run(SPEC, data)
    assert statuses(outcomes) == {("created", None): 2500}
    assert sorted(o.key for o in outcomes) == sorted(k for k, _, _ in data)
    assert stats.batches == 3  # 1000 + 1000 + 500
    records = by_ext_id(brevo)
    assert len(records) == 2500
    assert records["PR-0000042"]["attributes"] == data[42][1]
    ids = {o.key: o.crm_id for o in outcomes}
    assert {str(r["identifiers"]["id"]) for r in records.values()} == set(ids.values())

    changed = [(key, {**fields, "status": "done"}, ids[key]) for key, fields, _ in data]
    again, _ = resource(sandbox_url).run(SPEC, changed)
    assert statuses(again) == {("updated", None): 2500}
    assert {o.key: o.crm_id for o in again} == ids  # the same Brevo records
    records = by_ext_id(brevo)
    assert len(records) == 2500 and {r["attributes"]["status"] for r in records.values()} == \
        {"done"}


def test_bad_records_in_the_middle_fail_alone(brevo, sandbox_url):
    data = rows(10)
    data[3][1]["name"] = "x" * 1_000_001  # no request could carry it
    data[5][1].update({f"cf_{i}": i for i in range(501)})  # over 500 attributes
    data[7][1]["not_in_schema"] = "dropped"  # Brevo ignores it without an error
    data[8] = (data[8][0], {}, None)  # nothing to send
    outcomes, stats = resource(sandbox_url).run(SPEC, data)
    by_key = {o.key: o for o in outcomes}
    assert len(outcomes) == 10
    assert by_key["PR-0000003"].error_code == "RECORD_TOO_LARGE"
    assert by_key["PR-0000005"].error_code == "TOO_MANY_ATTRIBUTES"
    assert by_key["PR-0000005"].column == "custom_fields"
    assert by_key["PR-0000008"].error_code == "NO_ATTRIBUTES"
    assert not any(by_key[k].transient for k in ("PR-0000003", "PR-0000005", "PR-0000008"))
    assert by_key["PR-0000007"].status == "created"
    assert "not_in_schema" in by_key["PR-0000007"].message
    assert stats.splits == 0  # nothing reached Brevo that it would refuse

    records = by_ext_id(brevo)
    good = {k for k, _, _ in data} - {"PR-0000003", "PR-0000005", "PR-0000008"}
    assert set(records) == good
    assert "not_in_schema" not in records["PR-0000007"]["attributes"]


def test_an_unknown_brevo_id_fails_permanently_and_the_rest_update(brevo, sandbox_url):
    created, _ = resource(sandbox_url).run(SPEC, rows(4))
    ids = {o.key: o.crm_id for o in created}
    by_id = SPEC.model_copy(update={"matching_key": "id"})
    keys = list(ids)
    data = [(key, {"status": "done"}, ids[key]) for key in keys]
    data[1] = (keys[1], {"status": "done"}, "987654")  # an id Brevo never issued
    data[2] = (keys[2], {"status": "done"}, "not-an-id")
    data += rows(1, start=100)  # no id yet: created through its ext_id
    outcomes, _ = resource(sandbox_url).run(by_id, data)
    by_key = {o.key: o for o in outcomes}
    assert by_key[keys[1]].error_code == "UNKNOWN_ID" and not by_key[keys[1]].transient
    assert by_key[keys[2]].error_code == "INVALID_ID"
    assert by_key[keys[0]].status == by_key[keys[3]].status == "updated"
    assert by_key["PR-0000100"].status == "created"
    records = by_ext_id(brevo)
    assert len(records) == 5
    assert records[keys[0]]["attributes"]["status"] == "done"
    assert records[keys[1]]["attributes"]["status"] == "active"  # untouched


def test_a_failed_brevo_process_fails_its_rows_transiently_and_a_rerun_succeeds(brevo,
                                                                                sandbox_url):
    data = rows(50)
    brevo.post("/_sandbox/faults", json={"seed": 1, "brevo_failed_processes": 1.0})
    outcomes, _ = resource(sandbox_url, batch_size=20).run(SPEC, data)
    assert statuses(outcomes) == {("failed", "PROCESS_FAILED"): 50}
    assert all(o.transient for o in outcomes)
    assert stored(brevo, "brevo", "project") == []

    brevo.post("/_sandbox/faults", json={"seed": 1, "brevo_failed_processes": 0.0})
    outcomes, _ = resource(sandbox_url, batch_size=20).run(SPEC, data)
    assert statuses(outcomes) == {("created", None): 50}
    assert len(by_ext_id(brevo)) == 50


def test_a_process_that_never_finishes_times_out(brevo, sandbox_url):
    brevo.post("/_sandbox/brevo/settings", json={"process_steps": 1_000_000})
    outcomes, _ = resource(sandbox_url, process_timeout_seconds=0.3).run(SPEC, rows(5))
    assert statuses(outcomes) == {("failed", "PROCESS_TIMEOUT"): 5}
    assert all(o.transient for o in outcomes)


def test_records_of_100_kb_are_batched_under_1_mb(brevo, sandbox_url):
    data = rows(30)
    data = [(k, {**f, "name": f"{k} " + "x" * 100_000}, c) for k, f, c in data]
    outcomes, stats = resource(sandbox_url).run(SPEC, data)
    assert statuses(outcomes) == {("created", None): 30}

    prefix, suffix = BrevoConnector.prefix, BrevoConnector.suffix
    items = [Item(k, r, serialize(r)) for k, r in
             ((k, {"identifiers": {"ext_id": k}, "attributes": f}) for k, f, _ in data)]
    batches, too_large = make_batches(items, 1000, 1_000_000, len(prefix) + len(suffix))
    assert not too_large and max(len(b) for b in batches) < 10
    assert all(len(prefix + b",".join(i.body for i in b) + suffix) <= 1_000_000
               for b in batches)
    counters = brevo.get("/_sandbox/stats").json()["counters"]
    assert counters["requests POST brevo batch/upsert"] == stats.batches == len(batches)
    assert len(by_ext_id(brevo)) == 30


def test_429_and_503_faults_end_every_row_exactly_once_without_duplicates(brevo, sandbox_url):
    data = rows(300)
    brevo.post("/_sandbox/faults", json={"seed": 7, "rate_429": 0.15, "rate_503": 0.15,
                                         "retry_after_seconds": 0})
    outcomes, stats = resource(sandbox_url, batch_size=50, max_attempts=8,
                               max_backoff_seconds=0.1).run(SPEC, data)
    injected = brevo.get("/_sandbox/faults").json()["injected"]
    assert injected.get("429", 0) + injected.get("503", 0) > 0 and stats.retries > 0
    assert sorted(o.key for o in outcomes) == sorted(k for k, _, _ in data)  # once each
    ok = {o.key for o in outcomes if o.ok}
    assert all(o.transient for o in outcomes if not o.ok)
    assert ok <= set(by_ext_id(brevo))  # every confirmed row is in Brevo, once

    brevo.post("/_sandbox/faults", json={"seed": 7})
    retry = [r for r in data if r[0] not in ok]
    if retry:
        again, _ = resource(sandbox_url).run(SPEC, retry)
        assert all(o.ok for o in again)
    records = by_ext_id(brevo)
    assert set(records) == {k for k, _, _ in data} and len(records) == 300


def test_brevo_rate_limit_headers_pace_the_connector(brevo, sandbox_url):
    brevo.post("/_sandbox/brevo/settings", json={"rate_limit": 5, "window_seconds": 1.0})
    outcomes, _ = resource(sandbox_url, batch_size=10, max_attempts=8).run(SPEC, rows(30))
    assert statuses(outcomes) == {("created", None): 30}
    assert len(by_ext_id(brevo)) == 30


def test_on_response_pauses_when_no_request_is_left():
    core = HttpCore(HttpSettings(base_url="http://127.0.0.1:9", headers={},
                                 max_backoff_seconds=30.0))
    connector = BrevoConnector(SPEC, core)

    def pause(**headers):
        return connector.on_response(httpx.Response(200, headers=headers))

    assert pause() is None
    assert pause(**{"x-sib-ratelimit-remaining": "3", "x-sib-ratelimit-reset": "7"}) is None
    assert pause(**{"x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "7"}) == 7.0
    assert pause(**{"x-sib-ratelimit-remaining": "0", "x-sib-ratelimit-reset": "3600"}) == 30.0
    assert pause(**{"x-sib-ratelimit-remaining": "0"}) == 1.0
    asyncio.run(core.__aexit__(None, None, None))


def test_a_wrong_api_key_stops_the_sync_without_showing_the_key(brevo, sandbox_url):
    secret = "wrong-secret-key-12345"
    with pytest.raises(FatalCrmError) as refused:
        resource(sandbox_url, token=secret).run(SPEC, rows(3))
    message = str(refused.value)
    assert "BREVO_API_KEY" in message and SPEC.name in message and secret not in message
    assert secret not in repr(resource(sandbox_url, token=secret))


def test_an_unknown_object_type_stops_the_sync(brevo, sandbox_url):
    with pytest.raises(FatalCrmError, match="spaceship"):
        resource(sandbox_url).run(SPEC.model_copy(update={"object": "spaceship"}), rows(3))


def test_a_request_brevo_refuses_is_bisected_down_to_the_bad_record(brevo, sandbox_url):
    """Brevo refuses a whole request for one malformed record (400); the connector splits the
    batch so the others still go through. Sent below the connector's own checks."""
    async def send():
        async with HttpCore(resource(sandbox_url).http_settings()) as core:
            connector = BrevoConnector(SPEC, core, poll_interval_seconds=0.01)
            items = [connector.item(k, f, c) for k, f, c in rows(8)]
            bad = {"identifiers": {"ext_id": "PR-BAD"}, "attributes": {"name": "x"},
                   "extra_member": True}
            items.insert(4, Item("PR-BAD", bad, serialize(bad)))
            return await connector.upsert(items), core.stats

    outcomes, stats = asyncio.run(send())
    by_key = {o.key: o for o in outcomes}
    assert by_key["PR-BAD"].status == "failed" and by_key["PR-BAD"].http_status == 400
    assert not by_key["PR-BAD"].transient and "extra_member" in by_key["PR-BAD"].message
    assert sum(o.status == "created" for o in outcomes) == 8 and stats.splits > 0
    assert len(by_ext_id(brevo)) == 8


def _mock_brevo(process_reply: dict | None, accept: dict):
    """A Brevo that accepts with `accept` and reports `process_reply` for every poll."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/records"):
            return httpx.Response(200, json={"count": 0, "records": []})
        if request.method == "POST":
            return httpx.Response(202, json=accept)
        return httpx.Response(200, json=process_reply)
    return handle


@pytest.mark.parametrize("accept, process_reply, code", [
    ({"message": "ok", "processId": 5}, {"id": 5, "name": "x", "status": "cancelled"},
     "PROCESS_FAILED"),
    ({"message": "ok"}, None, "MALFORMED_RESPONSE"),
])
def test_answers_the_sandbox_never_gives(accept, process_reply, code):
    async def send():
        settings = resource("http://127.0.0.1:9").http_settings()
        async with HttpCore(settings) as core:
            await core._client.aclose()
            core._client = httpx.AsyncClient(base_url=settings.base_url, headers=settings.headers,
                                             transport=httpx.MockTransport(
                                                 _mock_brevo(process_reply, accept)))
            connector = BrevoConnector(SPEC, core, poll_interval_seconds=0.01)
            return await connector.upsert([connector.item(k, f, c) for k, f, c in rows(3)])

    outcomes = asyncio.run(send())
    assert statuses(outcomes) == {("failed", code): 3} and all(o.transient for o in outcomes)


def _source_rows(table: str, day: str) -> pd.DataFrame:
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str, keep_default_na=False)
    return frame[frame["updated_at"].str.startswith(day)].reset_index(drop=True)


def test_projects_partition_end_to_end(brevo, store):
    spec = bundled_unlinked()
    sync = spec.sync("projects_to_brevo")
    source = _source_rows("projects", PARTITION)
    invalid = {f.source_key for f in validate_partition(sync, source).failures}
    too_many = {r.project_id for r in source.itertuples()
                if r.custom_fields and len(json.loads(r.custom_fields)) + len(sync.fields) > 500}
    assert invalid and too_many, "the bundled partition must hold bad projects of both kinds"
    expected_bad = invalid | too_many

    resources = build_resources()
    resources["brevo"] = BrevoResource(base_url=os.environ["BREVO_BASE_URL"],
                                       token=dg.EnvVar("BREVO_API_KEY"),
                                       poll_interval_seconds=0.01, max_poll_interval_seconds=0.05)
    assets = [a for a in build_assets(spec) if a.key.path[0] in
              ("source_projects", "validated_projects_to_brevo", "projects_to_brevo")]
    result = dg.materialize(assets, partition_key=PARTITION, resources=resources)
    assert result.success

    records = by_ext_id(brevo)
    good = source[~source["project_id"].isin(expected_bad)]
    assert set(records) == set(good["project_id"])
    for row in good.itertuples():
        attributes = records[row.project_id]["attributes"]
        expected = {"name": row.name, "status": row.status, "budget": int(row.budget),
                    "start_date": row.start_date, "company_ext_id": row.company_id,
                    **(json.loads(row.custom_fields) if row.custom_fields else {})}
        assert attributes == {k: v for k, v in expected.items() if v != ""}

    meta = result.asset_materializations_for_node("projects_to_brevo")[0].metadata
    assert meta["created"].value == len(good) and meta["updated"].value == 0
    quarantine = store.quarantine_frame("projects_to_brevo")
    assert set(quarantine["source_key"]) == expected_bad
    state = store.state_frame("projects_to_brevo")
    assert set(state["crm_id"]) == {str(r["identifiers"]["id"]) for r in records.values()}

    again = dg.materialize(assets, partition_key=PARTITION, resources=resources)
    meta = again.asset_materializations_for_node("projects_to_brevo")[0].metadata
    assert meta["unchanged"].value == len(good) and meta["created"].value == 0
    assert len(by_ext_id(brevo)) == len(good)


def test_resource_defaults():
    res = BrevoResource(token=KEY)
    assert res.auth_headers() == {"api-key": KEY}
    assert res.batch_size == 1000 and res.requests_per_window == 10
    assert BrevoConnector.max_records == 1000 and BrevoConnector.max_bytes == 1_000_000
    with pytest.raises(ValueError):
        BrevoResource(token=KEY, batch_size=1001)
    assert math.isclose(res.window_seconds, 1.0)


def test_a_429_in_brevos_shape_is_waited_out_by_its_reset_header(brevo, sandbox_url):
    """Brevo's 429 names its wait in `x-sib-ratelimit-reset`, with no Retry-After
    (https://developers.brevo.com/docs/limit-headers). The sandbox's injected 429s now have that
    shape (errorModel body, reset = 2 s here); the rows still arrive, once each, and the client
    waited the reset (concurrent requests share one pause, so at least 2 s in all)."""
    brevo.post("/_sandbox/faults", json={"seed": 3, "rate_429": 0.2,
                                         "retry_after_seconds": 2}).raise_for_status()
    try:
        started = time.monotonic()
        outcomes, stats = resource(sandbox_url, batch_size=10, max_attempts=8,
                                   max_backoff_seconds=5.0).run(SPEC, rows(30))
        elapsed = time.monotonic() - started
        injected = brevo.get("/_sandbox/faults").json()["injected"].get("429", 0)
    finally:
        brevo.post("/_sandbox/faults", json={}).raise_for_status()
    assert injected > 0 and stats.rate_limited == injected
    assert statuses(outcomes) == {("created", None): 30}
    assert len(by_ext_id(brevo)) == 30
    assert elapsed >= 1.9, (elapsed, injected)


def test_a_429_whose_reset_is_an_hour_away_stops_sending(brevo, sandbox_url):
    """An hourly limit: Brevo's reset says come back in up to an hour. Like a long Retry-After
    elsewhere, the connector stops the run's sending at once (transient RATE_LIMITED, the rows
    go to the quarantine and the next run sends them) instead of retrying every
    max_backoff_seconds until its attempts run out."""
    brevo.post("/_sandbox/faults", json={"seed": 1, "rate_429": 1.0,
                                         "retry_after_seconds": 3600}).raise_for_status()
    try:
        started = time.monotonic()
        outcomes, stats = resource(sandbox_url, max_attempts=4,
                                   max_backoff_seconds=5.0).run(SPEC, rows(3))
        elapsed = time.monotonic() - started
        requests = brevo.get("/_sandbox/stats").json()["counters"].get("requests total", 0)
    finally:
        brevo.post("/_sandbox/faults", json={}).raise_for_status()
    assert statuses(outcomes) == {("failed", "RATE_LIMITED"): 3}
    assert all(o.transient for o in outcomes)
    assert "3600" in outcomes[0].message or "hour" in outcomes[0].message, outcomes[0].message
    assert elapsed < 5.0 and requests <= 2, (elapsed, requests)


def test_read_backs_of_batches_read_new_pages_at_once_and_no_full_page_twice(brevo, sandbox_url,
                                                                              monkeypatch):
    # 1,500 records from before the run: the run's records start in the middle of page 2.
    before, _ = resource(sandbox_url).run(SPEC, rows(1500, start=900_000))
    assert statuses(before) == {("created", None): 1500}
    reads, in_flight, most = [], [0], [0]
    original = HttpCore.call

    async def call(core, method, path, **options):
        if method != "GET" or not path.endswith("/records"):
            return await original(core, method, path, **options)
        in_flight[0] += 1
        most[0] = max(most[0], in_flight[0])
        try:
            answer = await original(core, method, path, **options)
        finally:
            in_flight[0] -= 1
        reads.append((options["params"]["page_num"], options["params"]["sort"],
                      len(answer[1]["records"])))
        return answer

    monkeypatch.setattr(HttpCore, "call", call)
    data = rows(4500)

    async def scenario():
        async with resource(sandbox_url).open(SPEC) as connector:
            # Three batches complete before anyone reads them back; then one read-back (the
            # first batch's) finds all three, the later two are served from what it saw.
            batches = [[connector.item(*row) for row in data[i:i + 1000]]
                       for i in range(0, 3000, 1000)]
            await connector._note_boundary()
            for batch in batches:
                response, payload, _ = await connector.core.call(
                    "POST", connector.path, content=connector.body(batch))
                assert await connector._wait_for(payload["processId"]) == "completed"
            first = len(reads)
            outcomes = [o for batch in batches
                        for o in await connector._confirm(batch, time.monotonic(), 1)]
            assert statuses(outcomes) == {("created", None): 3000}
            scan = reads[first:]
            # page 2 first (the count), then pages 3-5 at once: 4 reads for 3 batches
            assert [(p, s) for p, s, _ in scan][:1] == [(2, "asc")] and len(scan) == 4
            assert sorted(p for p, _, _ in scan) == [2, 3, 4, 5] and most[0] >= 3
            # the rest through the connector: 2 more batches
            more = await connector.upsert([connector.item(*row) for row in data[3000:]])
            assert statuses(more) == {("created", None): 1500}
            return outcomes + more

    outcomes = asyncio.run(scenario())
    stored_ids = {ext: str(r["identifiers"]["id"]) for ext, r in by_ext_id(brevo).items()}
    assert {o.key: o.crm_id for o in outcomes} == {k: stored_ids[k] for k, _, _ in data}
    full_reads = Counter(page for page, sort, n in reads if sort == "asc" and n == 1000)
    assert all(n == 1 for n in full_reads.values()), reads  # no full page read twice
    # a page read once full is not read again afterwards
    for position, (page, sort, n) in enumerate(reads):
        if sort == "asc" and n == 1000:
            assert page not in [p for p, s, _ in reads[position + 1:] if s == "asc"], reads
