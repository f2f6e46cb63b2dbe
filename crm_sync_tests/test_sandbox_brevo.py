"""The Brevo emulation answers the documented requests with the documented shapes, and the
official brevo-python SDK works against it."""

from __future__ import annotations

import json

import pytest

from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync_tests.conftest import stored

KEY = DEFAULT_TOKENS["brevo"]
AUTH = {"api-key": KEY}
UPSERT = "/v3/objects/project/batch/upsert"
RECORDS = "/v3/objects/project/records"
ERROR_KEYS = {"code", "message"}


@pytest.fixture
def brevo(sandbox):
    """The sandbox with Brevo's run-time settings pinned (2 polls before completion, no rate
    limit), and put back afterwards so no other test sees a change."""
    defaults = {"process_steps": 2, "rate_limit": None}
    sandbox.post("/_sandbox/brevo/settings", json=defaults).raise_for_status()
    yield sandbox
    sandbox.post("/_sandbox/brevo/settings", json=defaults)


def record(ext_id: str | None = None, **attributes) -> dict:
    rec = {"attributes": attributes or {"name": f"Project {ext_id}"}}
    if ext_id is not None:
        rec["identifiers"] = {"ext_id": ext_id}
    return rec


def accepted(client, records: list[dict], path: str = UPSERT) -> int:
    response = client.post(path, headers=AUTH, json={"records": records})
    assert response.status_code == 202, response.text
    return response.json()["processId"]


def finish(client, process_id: int, max_polls: int = 20) -> list[str]:
    """Poll a process until it is done; the statuses seen, in order."""
    seen = []
    for _ in range(max_polls):
        status = client.get(f"/v3/processes/{process_id}", headers=AUTH).json()["status"]
        seen.append(status)
        if status in ("completed", "failed"):
            return seen
    raise AssertionError(f"process {process_id} still {seen[-1]} after {max_polls} polls")


def projects(client) -> dict[str, dict]:
    return {r["identifiers"].get("ext_id"): r for r in stored(client, "brevo", "project")}


def test_upsert_is_accepted_then_written_when_the_process_completes(brevo):
    response = brevo.post(UPSERT, headers=AUTH, json={"records": [
        record("PR-1", name="Apollo", status="active", budget=1200, start_date="2026-11-01",
               company_ext_id="CO-7", cf_0=3),
        record("PR-2", name="Gemini")]})
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"message", "processId"} and isinstance(body["processId"], int)
    assert stored(brevo, "brevo", "project") == []  # accepted, not yet written

    process = brevo.get(f"/v3/processes/{body['processId']}", headers=AUTH)
    assert process.status_code == 200
    assert set(process.json()) <= {"id", "name", "status", "info", "export_url"}
    assert process.json()["id"] == body["processId"] and process.json()["status"] == "queued"
    assert stored(brevo, "brevo", "project") == []
    assert finish(brevo, body["processId"]) == ["in_process", "completed"]
    assert finish(brevo, body["processId"]) == ["completed"]  # stays completed

    written = projects(brevo)
    assert set(written) == {"PR-1", "PR-2"}
    assert written["PR-1"]["attributes"] == {"name": "Apollo", "status": "active",
                                             "budget": 1200, "start_date": "2026-11-01",
                                             "company_ext_id": "CO-7", "cf_0": 3}
    assert isinstance(written["PR-1"]["identifiers"]["id"], int)
    assert written["PR-1"]["createdAt"].endswith("Z")


def test_an_existing_ext_id_is_updated_and_untouched_attributes_stay(brevo):
    finish(brevo, accepted(brevo, [record("PR-1", name="Apollo", budget=10)]))
    first = projects(brevo)["PR-1"]
    finish(brevo, accepted(brevo, [record("PR-1", budget=20), record("PR-3", name="New")]))
    after = projects(brevo)
    assert len(after) == 2
    assert after["PR-1"]["identifiers"]["id"] == first["identifiers"]["id"]
    assert after["PR-1"]["attributes"] == {"name": "Apollo", "budget": 20}
    # ...and by Brevo id, which is update-only.
    finish(brevo, accepted(brevo, [{"identifiers": {"id": first["identifiers"]["id"]},
                                    "attributes": {"status": "done"}}]))
    assert projects(brevo)["PR-1"]["attributes"]["status"] == "done"


def test_unknown_attributes_are_silently_ignored(brevo):
    finish(brevo, accepted(brevo, [record("PR-1", name="A", not_in_schema="x", cf_999=1)]))
    assert projects(brevo)["PR-1"]["attributes"] == {"name": "A"}


def test_an_unknown_id_is_accepted_then_rejected_inside_the_process(brevo):
    process_id = accepted(brevo, [record("PR-1", name="kept"),
                                  {"identifiers": {"id": 987654}, "attributes": {"name": "x"}}])
    assert finish(brevo, process_id)[-1] == "completed"
    assert set(projects(brevo)) == {"PR-1"}  # the good record of the same request is written
    details = brevo.get(f"/_sandbox/brevo/processes/{process_id}").json()
    assert details["written"] == 1
    assert [r["index"] for r in details["rejected"]] == [1]
    assert "987654" in details["rejected"][0]["reason"]


def test_a_value_of_the_wrong_type_and_duplicate_ext_ids_are_rejected_in_the_process(brevo):
    process_id = accepted(brevo, [record("PR-1", name="A", budget="lots"),
                                  record("PR-2", name="B"), record("PR-2", name="C"),
                                  record("PR-3", name="D", start_date="2026-02-30")])
    assert finish(brevo, process_id)[-1] == "completed"
    assert projects(brevo) == {}
    reasons = brevo.get(f"/_sandbox/brevo/processes/{process_id}").json()["rejected"]
    assert [r["index"] for r in reasons] == [0, 1, 2, 3]


def test_a_failed_process_writes_nothing(brevo):
    brevo.post("/_sandbox/faults", json={"seed": 1, "brevo_failed_processes": 1.0})
    process_id = accepted(brevo, [record("PR-1")])
    assert finish(brevo, process_id) == ["queued", "in_process", "failed"]
    assert stored(brevo, "brevo", "project") == []


@pytest.mark.parametrize("count", [0, 1001])
def test_records_must_number_between_1_and_1000(brevo, count):
    response = brevo.post(UPSERT, headers=AUTH,
                          json={"records": [record(f"PR-{i}") for i in range(count)]})
    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS and response.json()["code"] == "out_of_range"


def test_1000_records_are_accepted(brevo):
    assert finish(brevo, accepted(brevo, [record(f"PR-{i}") for i in range(1000)]))[-1] == \
        "completed"
    assert len(stored(brevo, "brevo", "project")) == 1000


def _body_of(size: int) -> bytes:
    """A valid upsert body of exactly `size` bytes."""
    empty = json.dumps({"records": [record("PR-1", name="")]}, separators=(",", ":"))
    return empty.replace('"name":""', '"name":"' + "x" * (size - len(empty)) + '"').encode()


def test_the_body_may_take_1_mb_and_not_one_byte_more(brevo):
    headers = {**AUTH, "content-type": "application/json"}
    at_limit = brevo.post(UPSERT, headers=headers, content=_body_of(1_000_000))
    assert at_limit.status_code == 202
    over = brevo.post(UPSERT, headers=headers, content=_body_of(1_000_001))
    assert over.status_code == 400
    assert over.json()["code"] == "out_of_range" and "1000000" in over.json()["message"]


def test_at_most_500_attributes_per_record(brevo):
    five_hundred = {f"cf_{i}": i for i in range(500)}
    assert brevo.post(UPSERT, headers=AUTH, json={"records": [
        {"identifiers": {"ext_id": "PR-1"}, "attributes": five_hundred}]}).status_code == 202
    response = brevo.post(UPSERT, headers=AUTH, json={"records": [
        {"identifiers": {"ext_id": "PR-2"}, "attributes": {**five_hundred, "name": "x"}}]})
    assert response.status_code == 400 and "500" in response.json()["message"]


def test_at_most_10_associations_per_associated_object_type(brevo):
    def linking(n):
        return [{**record("PR-1"), "associations": [{"object_type": "vendor", "records": [
            {"identifiers": {"ext_id": f"V-{i}"}} for i in range(n)]}]}]
    assert brevo.post(UPSERT, headers=AUTH, json={"records": linking(10)}).status_code == 202
    response = brevo.post(UPSERT, headers=AUTH, json={"records": linking(11)})
    assert response.status_code == 400 and response.json()["code"] == "invalid_parameter"
    unknown_type = [{**record("PR-1"), "associations": [
        {"object_type": "spaceship", "records": [{"identifiers": {"id": 1}}]}]}]
    assert brevo.post(UPSERT, headers=AUTH, json={"records": unknown_type}).status_code == 400


def test_links_need_both_records_and_show_on_both_sides(brevo):
    vendors = "/v3/objects/vendor/batch/upsert"
    finish(brevo, accepted(brevo, [record("V-1", name="Acme"), record("V-2", name="Initech")],
                           vendors))
    link = {"object_type": "vendor", "records": [{"identifiers": {"ext_id": "V-1"}},
                                                 {"identifiers": {"ext_id": "V-2"}}]}
    missing = {"object_type": "vendor", "records": [{"identifiers": {"ext_id": "V-404"}}]}
    finish(brevo, accepted(brevo, [{**record("PR-1"), "associations": [link]},
                                   {**record("PR-2"), "associations": [missing]}]))
    assert set(projects(brevo)) == {"PR-1"}  # the link to a missing record rejected PR-2

    page = brevo.get(RECORDS, headers=AUTH,
                     params={"limit": 10, "page_num": 1, "association": "true"}).json()
    assert page["records"][0]["associations"] == [{"object_type": "vendor", "records": [
        {"identifiers": {"id": 1}}, {"identifiers": {"id": 2}}]}]
    vendor_page = brevo.get("/v3/objects/vendor/records", headers=AUTH,
                            params={"limit": 10, "page_num": 1, "association": "true"}).json()
    project_id = page["records"][0]["identifiers"]["id"]
    for vendor in vendor_page["records"]:
        assert vendor["associations"] == [{"object_type": "project", "records": [
            {"identifiers": {"id": project_id}}]}]

    unlink = {**link, "action": "unlink"}
    finish(brevo, accepted(brevo, [{"identifiers": {"ext_id": "PR-1"},
                                    "attributes": {"status": "done"}, "associations": [unlink]}]))
    page = brevo.get(RECORDS, headers=AUTH,
                     params={"limit": 10, "page_num": 1, "association": "true"}).json()
    assert page["records"][0]["associations"] == []


def test_object_types_must_exist(brevo):
    for object_type in ("spaceship", "Project", "a" * 33):
        response = brevo.post(f"/v3/objects/{object_type}/batch/upsert", headers=AUTH,
                              json={"records": [record("PR-1")]})
        assert response.status_code == 400
        assert response.json() == {"code": "invalid_parameter", "message": "invalid object type"}
    standard = brevo.post("/v3/objects/company/batch/upsert", headers=AUTH,
                          json={"records": [record("CO-1")]})
    assert standard.status_code == 403 and standard.json()["code"] == "permission_denied"
    assert brevo.get("/v3/objects/spaceship/records", headers=AUTH,
                     params={"limit": 1, "page_num": 1}).status_code == 400


def test_malformed_requests(brevo):
    headers = {**AUTH, "content-type": "application/json"}
    assert brevo.post(UPSERT, headers=headers, content=b"{not json").status_code == 400
    bad = [
        {"values": [record("PR-1")]},
        {"records": {"identifiers": {"ext_id": "x"}}},
        {"records": [{"identifiers": {"ids": [1]}, "attributes": {"name": "x"}}]},
        {"records": [{"identifiers": {"id": "12"}, "attributes": {"name": "x"}}]},
        {"records": [{"identifiers": {"ext_id": "PR-1"}}]},  # at least 1 attribute
        {"records": [{"identifiers": {"ext_id": "PR-1"}, "attributes": {}}]},
        {"records": [{"identifier": {"ext_id": "PR-1"}, "attributes": {"name": "x"}}]},
    ]
    for body in bad:
        response = brevo.post(UPSERT, headers=AUTH, json=body)
        assert response.status_code == 400, body
        assert set(response.json()) == ERROR_KEYS
    assert brevo.get("/v3/processes/999999", headers=AUTH).json() == {
        "code": "document_not_found", "message": "Process ID not found"}
    assert brevo.get("/v3/processes/abc", headers=AUTH).status_code == 400
    assert stored(brevo, "brevo", "project") == []


def test_the_api_key_is_required_everywhere(brevo):
    process_id = accepted(brevo, [record("PR-1")])
    for headers in ({}, {"api-key": "wrong"}, {"Authorization": f"Bearer {KEY}"}):
        for response in (
            brevo.post(UPSERT, headers=headers, json={"records": [record("PR-1")]}),
            brevo.get(f"/v3/processes/{process_id}", headers=headers),
            brevo.get(RECORDS, headers=headers, params={"limit": 1, "page_num": 1}),
        ):
            assert response.status_code == 401
            assert response.json() == {"code": "unauthorized", "message": "Key not found"}


def test_records_read_endpoint_pages_and_sorts(brevo):
    finish(brevo, accepted(brevo, [record(f"PR-{i}", name=f"P{i}") for i in range(25)]))

    def page(**params):
        response = brevo.get(RECORDS, headers=AUTH, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    first = page(limit=10, page_num=1, sort="asc")
    assert first["count"] == 25
    assert [r["identifiers"]["ext_id"] for r in first["records"]] == \
        [f"PR-{i}" for i in range(10)]
    assert set(first["records"][0]) == {"identifiers", "attributes", "createdAt", "updatedAt"}
    assert len(page(limit=10, page_num=3, sort="asc")["records"]) == 5
    assert page(limit=10, page_num=4)["records"] == []
    assert page(limit=1, page_num=1)["records"][0]["identifiers"]["ext_id"] == "PR-24"  # desc
    for params in ({"page_num": 1}, {"limit": 10}, {"limit": 1001, "page_num": 1},
                   {"limit": 10, "page_num": 0}, {"limit": 10, "page_num": 1, "sort": "up"}):
        response = brevo.get(RECORDS, headers=AUTH, params=params)
        assert response.status_code == 400 and set(response.json()) == ERROR_KEYS


def test_rate_limit_headers_and_429(brevo):
    # A long window, so the fourth request is refused whatever the machine's speed.
    brevo.post("/_sandbox/brevo/settings", json={"rate_limit": 3, "window_seconds": 60})
    answers = [brevo.get(RECORDS, headers=AUTH, params={"limit": 1, "page_num": 1})
               for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-sib-ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["x-sib-ratelimit-limit"] == "3" for a in answers)
    assert 1 <= int(answers[3].headers["x-sib-ratelimit-reset"]) <= 60
    assert set(answers[3].json()) == ERROR_KEYS
    assert brevo.post(UPSERT, headers=AUTH, json={"records": [record("PR-1")]}).status_code == 429


def test_the_official_sdk_upserts_and_tracks_the_process(brevo, sandbox_url):
    from brevo import Brevo
    from brevo.core.api_error import ApiError
    from brevo.custom_objects import (
        UpsertrecordsRequestRecordsItem, UpsertrecordsRequestRecordsItemIdentifiers,
    )
    from brevo.errors import BadRequestError

    client = Brevo(api_key=KEY, base_url=f"{sandbox_url}/v3", max_retries=0, timeout=30)
    accepted_ = client.custom_objects.upsertrecords("project", records=[
        UpsertrecordsRequestRecordsItem(
            identifiers=UpsertrecordsRequestRecordsItemIdentifiers(ext_id="PR-SDK-1"),
            attributes={"name": "From the SDK", "budget": 99, "start_date": "2026-12-01"}),
        UpsertrecordsRequestRecordsItem(
            identifiers=UpsertrecordsRequestRecordsItemIdentifiers(ext_id="PR-SDK-2"),
            attributes={"name": "Second", "label_not_key": "ignored"}),
    ])
    assert isinstance(accepted_.process_id, int) and accepted_.message

    statuses = []
    for _ in range(10):
        process = client.process.get_process(accepted_.process_id)
        assert process.id == accepted_.process_id
        statuses.append(process.status)
        if process.status == "completed":
            break
    assert statuses == ["queued", "in_process", "completed"]

    page = client.custom_objects.getrecords("project", limit=10, page_num=1, sort="asc")
    assert page.count == 2
    first = page.records[0]
    assert first.identifiers.ext_id == "PR-SDK-1" and isinstance(first.identifiers.id, int)
    assert first.attributes == {"name": "From the SDK", "budget": 99, "start_date": "2026-12-01"}
    assert first.created_at is not None and first.updated_at is not None
    assert page.records[1].attributes == {"name": "Second"}

    with pytest.raises(BadRequestError):
        client.custom_objects.upsertrecords("spaceship", records=[
            UpsertrecordsRequestRecordsItem(attributes={"name": "x"})])
    stranger = Brevo(api_key="wrong", base_url=f"{sandbox_url}/v3", max_retries=0)
    with pytest.raises(ApiError) as refused:
        stranger.process.get_process(accepted_.process_id)
    assert refused.value.status_code == 401


# -- rate-limit headers and 429s in Brevo's shape (https://developers.brevo.com/docs/limit-headers)
LIMIT_HEADERS = ("x-sib-ratelimit-limit", "x-sib-ratelimit-remaining", "x-sib-ratelimit-reset")
DEFAULT_LIMIT = "36000"  # the sandbox's guess for /v3/objects (docs/sandbox/brevo.md)


def test_rate_limit_headers_on_every_answer_without_a_configured_limit(brevo):
    """Brevo: "all rate-limited endpoints include" the three headers. On main the sandbox sent
    them only when started with a limit; now every answer to an authenticated request carries
    them, with the default (guessed) limit: successes, 400s, 404s, process polls."""
    process_id = accepted(brevo, [record("PR-HDR")])
    answers = [
        brevo.get(RECORDS, headers=AUTH, params={"limit": 1, "page_num": 1}),  # 200
        brevo.post(UPSERT, headers=AUTH, json={"records": []}),  # 400
        brevo.get(f"/v3/processes/{process_id}", headers=AUTH),  # 200
        brevo.get("/v3/processes/999999999", headers=AUTH),  # 404
        brevo.post(UPSERT, headers=AUTH, json={"records": [record("PR-HDR-2")]}),  # 202
    ]
    assert [a.status_code for a in answers] == [200, 400, 200, 404, 202]
    for answer in answers:
        assert all(name in answer.headers for name in LIMIT_HEADERS), answer.headers
        assert answer.headers["x-sib-ratelimit-limit"] == DEFAULT_LIMIT
        assert 1 <= int(answer.headers["x-sib-ratelimit-reset"]) <= 3600
        assert "retry-after" not in answer.headers
    remaining = [int(a.headers["x-sib-ratelimit-remaining"]) for a in answers]
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == 5, remaining
    assert brevo.get("/_sandbox/brevo/settings").json()["rate_limit"] == int(DEFAULT_LIMIT)
    # A request without the key is refused before the account is known: no headers.
    unauthenticated = brevo.get(RECORDS, params={"limit": 1, "page_num": 1})
    assert unauthenticated.status_code == 401 and set(unauthenticated.json()) == ERROR_KEYS


def test_an_injected_429_has_brevos_shape_not_hubspots(brevo, sandbox_url):
    """On main an injected 429 carried HubSpot's body (`errorType: RATE_LIMIT`) and
    `Retry-After` on Brevo's paths. Brevo answers with its errorModel and x-sib-ratelimit-*
    (reset = the fault's retry_after_seconds), and documents no Retry-After."""
    from brevo import Brevo
    from brevo.core.api_error import ApiError

    brevo.post("/_sandbox/faults", json={"seed": 1, "rate_429": 1.0,
                                          "retry_after_seconds": 7}).raise_for_status()
    try:
        answers = [brevo.post(UPSERT, headers=AUTH, json={"records": [record("PR-429")]}),
                   brevo.get("/v3/processes/1", headers=AUTH),
                   brevo.get(RECORDS, headers=AUTH, params={"limit": 1, "page_num": 1})]
        client = Brevo(api_key=KEY, base_url=f"{sandbox_url}/v3", max_retries=0, timeout=30)
        with pytest.raises(ApiError) as refused:
            client.custom_objects.getrecords("project", limit=1, page_num=1)
    finally:
        brevo.post("/_sandbox/faults", json={}).raise_for_status()
    for answer in answers:
        assert answer.status_code == 429
        assert answer.json() == {"code": "too_many_requests",
                                 "message": "The expected rate limit is reached."}
        assert answer.headers["x-sib-ratelimit-remaining"] == "0"
        assert answer.headers["x-sib-ratelimit-reset"] == "7"
        assert answer.headers["x-sib-ratelimit-limit"] == DEFAULT_LIMIT
        assert "retry-after" not in answer.headers
    # What the official SDK sees: a 429 with Brevo's body and headers.
    assert refused.value.status_code == 429
    assert refused.value.body["code"] == "too_many_requests"
    assert refused.value.headers["x-sib-ratelimit-reset"] == "7"
    assert stored(brevo, "brevo", "project") == []  # refused before anything was written


def test_the_rate_limit_answer_hook_for_the_hourly_limit():
    from crm_sync.sandbox.brevo import rate_limit_answer

    answer = rate_limit_answer("daily", 1800.2)
    assert answer.status_code == 429
    assert json.loads(answer.body) == {"code": "too_many_requests",
                                       "message": "The hourly rate limit is reached."}
    assert answer.headers["x-sib-ratelimit-reset"] == "1801"
    assert answer.headers["x-sib-ratelimit-remaining"] == "0"
    assert "retry-after" not in answer.headers


def test_an_injected_daily_429_is_brevos_hourly_limit(brevo):
    """`rate_429_daily` (the CRM's long allowance): Brevo's long limits are per hour (RPH)."""
    brevo.post("/_sandbox/faults", json={"seed": 1, "rate_429_daily": 1.0,
                                          "retry_after_seconds": 1800}).raise_for_status()
    try:
        answer = brevo.get(RECORDS, headers=AUTH, params={"limit": 1, "page_num": 1})
    finally:
        brevo.post("/_sandbox/faults", json={}).raise_for_status()
    assert answer.status_code == 429 and "retry-after" not in answer.headers
    assert answer.json() == {"code": "too_many_requests",
                             "message": "The hourly rate limit is reached."}
    assert answer.headers["x-sib-ratelimit-reset"] == "1800"
