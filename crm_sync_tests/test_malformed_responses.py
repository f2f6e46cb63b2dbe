"""Answers a CRM should never give (wrong JSON shape, a result list of the wrong length, an
unknown status or action, a body that is not JSON): the rows involved go to the quarantine as
transient failures with the raw answer attached (truncated), are never counted as synced, and
get no sync state, so the next run sends them again. Each answer comes from an
`httpx.MockTransport`, through the real runner (`run_upsert`) and the real store."""

from __future__ import annotations

import json
import re

import httpx
import pandas as pd
import pytest

from crm_sync.connectors import RESOURCE_CLASSES
from crm_sync.spec import load_spec
from crm_sync.state.store import SyncStore
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.bundled_spec import bundled_unlinked

SPEC = bundled_unlinked()
MARK = "MALFORMED-MARKER"
ROWS = 3


def _valid(sync_name: str) -> pd.DataFrame:
    sync = SPEC.sync(sync_name)
    rows = []
    for i in range(ROWS):
        row = {col: "" for col in sync.source_columns}
        row.update({sync.source_key: f"K-{i}", "updated_at": "2026-11-04T12:00:00Z"})
        for crm_field, mapping in sync.fields.items():
            if mapping.column == sync.source_key:
                continue
            row[mapping.column] = {"email": f"p{i}@example.com", "phone": "+1-555-123-4567",
                                   "integer": "7", "number": "1.5", "date": "2026-10-01",
                                   "boolean": "true"}.get(mapping.type, f"v{i}")
        rows.append(row)
    result = validate_partition(sync, pd.DataFrame(rows))
    assert len(result.valid) == ROWS, result.failures
    return result.valid


def _run(monkeypatch, tmp_path, sync_name: str, handler) -> tuple:
    real = httpx.AsyncClient

    def client(**kwargs):
        return real(transport=httpx.MockTransport(handler), **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    sync = SPEC.sync(sync_name)
    options = {"max_attempts": 2, "max_backoff_seconds": 0.01}
    if sync.crm == "brevo":
        options.update(poll_interval_seconds=0.01, max_poll_interval_seconds=0.02,
                       process_timeout_seconds=0.3)
    resource = RESOURCE_CLASSES[sync.crm](base_url="http://127.0.0.1:9", token="t", **options)
    store = SyncStore(tmp_path / "store.sqlite")
    report = run_upsert(sync, _valid(sync_name), resource, store, partition="2026-11-04")
    return report, store


def _assert_quarantined(report, store, sync_name: str, raw_contains: str | None = MARK,
                        code: str = "MALFORMED_RESPONSE"):
    assert report.created == report.updated == 0
    assert report.failed == report.failed_transient == ROWS
    quarantine = store.quarantine_frame(sync_name)
    assert sorted(quarantine["source_key"]) == [f"K-{i}" for i in range(ROWS)]
    assert set(quarantine["stage"]) == {"crm"}
    assert set(quarantine["transient"]) == {1}
    assert set(quarantine["error_code"]) == {code}, list(quarantine["message"])
    if raw_contains is not None:
        for raw in quarantine["raw"]:
            assert raw and raw_contains in raw and len(raw) <= 2000
    assert store.state_frame(sync_name).empty  # nothing counted as synced


def _json(body, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"})


# -- Superleap -------------------------------------------------------------------------------
def _superleap_records(request: httpx.Request) -> list[dict]:
    return json.loads(request.content)["values"]


SUPERLEAP_ANSWERS = {
    "a list, not an object": lambda req: _json([MARK]),
    "one result short": lambda req: _json({"success": True, "data": {"records": [
        {"action": "CREATED", "id": "g1koYv_AAAAAAAA", "note": MARK}
        for _ in _superleap_records(req)[1:]]}}),
    "an unknown action": lambda req: _json({"success": True, "data": {"records": [
        {"action": "MERGED", "id": "g1koYv_AAAAAAAA", "note": MARK}
        for _ in _superleap_records(req)]}}),
    "results that are not objects": lambda req: _json({"success": True, "data": {"records": [
        MARK for _ in _superleap_records(req)]}}),
    "not JSON": lambda req: httpx.Response(200, content=f"<html>{MARK}</html>".encode()),
    "a huge answer": lambda req: _json({"data": {"records": "x" * 10_000 + MARK}}),
}


@pytest.mark.parametrize("answer", list(SUPERLEAP_ANSWERS))
def test_superleap_malformed_answers_are_quarantined_with_the_raw_answer(answer, monkeypatch,
                                                                         tmp_path):
    report, store = _run(monkeypatch, tmp_path, "leads_to_superleap", SUPERLEAP_ANSWERS[answer])
    _assert_quarantined(report, store, "leads_to_superleap",
                        raw_contains="xxxx" if answer == "a huge answer" else MARK)


# -- HubSpot ---------------------------------------------------------------------------------
def _hubspot_inputs(request: httpx.Request) -> list[dict]:
    return json.loads(request.content)["inputs"]


def _hubspot_result(inp: dict, **overrides) -> dict:
    return {"id": "101", "new": True, "objectWriteTraceId": inp["objectWriteTraceId"],
            "properties": {"note": MARK}, **overrides}


HUBSPOT_ANSWERS = {
    "results is not a list": lambda req: _json({"status": "COMPLETE", "results": MARK}),
    "a list, not an object": lambda req: _json([MARK]),
    "no result at all": lambda req: _json({"status": MARK, "results": []}),
    "results for records not sent": lambda req: _json({"status": "COMPLETE", "results": [
        _hubspot_result(i, objectWriteTraceId=f"other-{n}") for n, i in
        enumerate(_hubspot_inputs(req))]}),
    "two results per record": lambda req: _json({"status": "COMPLETE", "results": [
        _hubspot_result(i) for i in _hubspot_inputs(req) for _ in range(2)]}),
    "a result without new": lambda req: _json({"status": "COMPLETE", "results": [
        _hubspot_result(i, new="perhaps") for i in _hubspot_inputs(req)]}),
    "not JSON": lambda req: httpx.Response(200, content=f"oops {MARK}".encode()),
}


@pytest.mark.parametrize("answer", list(HUBSPOT_ANSWERS))
def test_hubspot_malformed_answers_are_quarantined_with_the_raw_answer(answer, monkeypatch,
                                                                       tmp_path):
    report, store = _run(monkeypatch, tmp_path, "contacts_to_hubspot", HUBSPOT_ANSWERS[answer])
    _assert_quarantined(report, store, "contacts_to_hubspot")


# -- Salesforce ------------------------------------------------------------------------------
def _sf_records(request: httpx.Request) -> list[dict]:
    return json.loads(request.content)["records"]


SALESFORCE_ANSWERS = {
    "an object, not a list": lambda req: _json({"results": MARK}),
    "one result short": lambda req: _json([{"id": "001000000000001AAA", "success": True,
                                            "created": True, "note": MARK}
                                           for _ in _sf_records(req)[1:]]),
    "one result too many": lambda req: _json([{"id": "001000000000001AAA", "success": True,
                                               "created": True, "note": MARK}
                                              for _ in _sf_records(req) + [None]]),
    "an unknown success value": lambda req: _json([{"id": "001000000000001AAA",
                                                    "success": MARK}
                                                   for _ in _sf_records(req)]),
    "success without an id": lambda req: _json([{"success": True, "note": MARK}
                                                for _ in _sf_records(req)]),
    "not JSON": lambda req: httpx.Response(200, content=f"\x00{MARK}".encode()),
}


@pytest.mark.parametrize("answer", list(SALESFORCE_ANSWERS))
def test_salesforce_malformed_answers_are_quarantined_with_the_raw_answer(answer, monkeypatch,
                                                                          tmp_path):
    report, store = _run(monkeypatch, tmp_path, "companies_to_salesforce",
                         SALESFORCE_ANSWERS[answer])
    _assert_quarantined(report, store, "companies_to_salesforce")


# -- Brevo -----------------------------------------------------------------------------------
def _brevo(upsert=None, process=None, records=None):
    """A Brevo whose upsert, process and read-back answers can each be replaced."""
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path.endswith("/batch/upsert"):
            return upsert(request) if upsert else _json({"processId": 7}, 202)
        if path.startswith("/v3/processes/"):
            return process(request) if process else _json({"id": 7, "status": "completed"})
        if re.fullmatch(r"/v3/objects/[^/]+/records", path):
            return records(request) if records else _json({"records": [], "count": 0})
        return _json({"message": "unexpected"}, 404)
    return handler


BREVO_ANSWERS = {
    "accepted without a processId": (_brevo(upsert=lambda r: _json({"note": MARK}, 202)),
                                     "MALFORMED_RESPONSE", MARK),
    "a processId that is text": (_brevo(upsert=lambda r: _json({"processId": MARK}, 202)),
                                 "MALFORMED_RESPONSE", MARK),
    "a list, not an object": (_brevo(upsert=lambda r: _json([MARK], 202)),
                              "MALFORMED_RESPONSE", MARK),
    "not JSON": (_brevo(upsert=lambda r: httpx.Response(202, content=MARK.encode())),
                 "MALFORMED_RESPONSE", MARK),
    "an unknown process status": (_brevo(process=lambda r: _json({"status": MARK})),
                                  "PROCESS_TIMEOUT", None),
    "read-back records of another shape": (_brevo(records=lambda r: _json(
        {"records": [MARK, {"identifiers": MARK}, {"identifiers": {"id": 1, "ext_id": "K-0"},
                                                   "attributes": MARK}], "count": 3})),
        "NOT_CONFIRMED", None),
    "read-back without a records list": (_brevo(records=lambda r: _json({"records": MARK})),
                                         "READ_BACK_FAILED", None),
}


@pytest.mark.parametrize("answer", list(BREVO_ANSWERS))
def test_brevo_malformed_answers_are_quarantined_with_the_raw_answer(answer, monkeypatch,
                                                                     tmp_path):
    handler, code, raw = BREVO_ANSWERS[answer]
    report, store = _run(monkeypatch, tmp_path, "projects_to_brevo", handler)
    _assert_quarantined(report, store, "projects_to_brevo", raw_contains=raw, code=code)


def test_a_raw_answer_never_carries_a_sensitive_value_into_the_store(monkeypatch, tmp_path):
    """With `email` sensitive, a malformed HubSpot answer that echoes every record's email is
    stored with the emails masked, in the raw answer as in the payload."""
    sync = SPEC.sync("contacts_to_hubspot")
    fields = {**sync.fields, "email": sync.fields["email"].model_copy(update={"sensitive": True})}
    sensitive = sync.model_copy(update={"fields": fields})

    def echo(request):
        return _json({"results": [{"echo": i["properties"]} for i in _hubspot_inputs(request)],
                      "status": MARK, "errors": "x"})

    real = httpx.AsyncClient
    monkeypatch.setattr(httpx, "AsyncClient",
                        lambda **kw: real(transport=httpx.MockTransport(echo), **kw))
    resource = RESOURCE_CLASSES["hubspot"](base_url="http://127.0.0.1:9", token="t")
    store = SyncStore(tmp_path / "store.sqlite")
    report = run_upsert(sensitive, _valid(sync.name), resource, store)
    assert report.failed == ROWS
    data = (tmp_path / "store.sqlite").read_bytes() + b"".join(
        p.read_bytes() for p in tmp_path.glob("store.sqlite-*"))
    quarantine = store.quarantine_frame(sync.name)
    assert all(MARK in raw and "***" in raw for raw in quarantine["raw"])
    for i in range(ROWS):
        assert f"p{i}@example.com".encode() not in data
        assert f"p{i}@example.com" not in " ".join(quarantine["payload"])
