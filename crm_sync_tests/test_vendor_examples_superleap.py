"""Superleap's documented accept/reject examples (vendor_examples/superleap.yaml), run twice
each: through the client's validation (or its spec check, or its connector where only the
connector can know), and as a raw HTTP request to the sandbox in Superleap's documented wire
format (`POST /api/v1/org/objects/{slug}/record/bulk_create` with a JSON list, or
`.../bulk_upsert` with `{"values": [...]}`, a bearer token), never through crm_sync's connector.
"""

from __future__ import annotations

import pandas as pd
import pydantic
import pytest

from crm_sync.connectors.superleap import SuperleapResource
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import SyncSpec, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.vendor_examples import load_examples
from crm_sync_tests.vendor_examples.table import (
    check_the_table, check_the_verdict, ids, skip_if_the_client_cannot_see,
)
from crm_sync_tests.bundled_spec import bundled_unlinked

EXAMPLES = load_examples("superleap")
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['superleap']}"}
BASE = bundled_unlinked().sync("leads_to_superleap")


def test_the_table_has_ten_entries_each_with_a_source():
    check_the_table(EXAMPLES, "endpoint", ("bulk_create", "bulk_upsert"))


# -- the wire side -------------------------------------------------------------------------------
def wire_record(entry) -> dict:
    record = {"name": "Jane Doe"}
    if entry["field"] != "object_type":
        record[entry["field"]] = entry["value"]
    if entry["field"] == "name" and entry["value"] == "":
        del record["name"]  # a record without its name
    return record


@pytest.mark.parametrize("entry", EXAMPLES, ids=ids(EXAMPLES))
def test_the_sandbox_answers_as_documented(entry, sandbox):
    slug = entry["object"]
    record = wire_record(entry)
    path = f"/api/v1/org/objects/{slug}/record/{entry['endpoint']}"
    if entry["endpoint"] == "bulk_create":
        # The documented failure sends the bad record first, then a good one.
        answer = sandbox.post(path, headers=AUTH, json=[record, {"name": "test-9",
                                                                 "email": "test1@gmail.com"}])
    else:
        answer = sandbox.post(path, headers=AUTH, json={"values": [record]})
    body = answer.json()
    if entry["field"] == "object_type":
        assert answer.status_code == entry["status"] and body["success"] is False
        assert body["data"]["error_code"] == entry["error_code"]
        assert entry["error_text"] in body["data"]["message"]
        return
    if entry["endpoint"] == "bulk_create":
        check_create(entry, answer, sandbox)
    else:
        check_upsert(entry, answer, sandbox)


def check_create(entry, answer, sandbox) -> None:
    body = answer.json()
    if entry["verdict"] == "accept":
        assert answer.status_code == 200
        assert body == {"success": True, "data": {"message": "records added successfully"}}
        values = [r.get(entry["field"]) for r in stored(sandbox, "superleap", "lead")]
        assert entry["value"] in values
        return
    assert answer.status_code == entry["status"] == 400
    assert body["success"] is False and body["data"]["error_code"] == "VALIDATION_FAILED"
    [error] = body["data"]["validation_errors"]
    assert error["field"] == entry["field"] and error["record_index"] == 1
    assert error["error_code"] == entry["error_code"]
    assert entry["error_text"] in error["message"], error["message"]
    assert stored(sandbox, "superleap", "lead") == []  # one bad record: nothing written


def check_upsert(entry, answer, sandbox) -> None:
    assert answer.status_code == 200
    data = answer.json()["data"]
    if entry["verdict"] == "accept":
        assert data["records_created"] == 1 and data["failed_records"] is None
        assert data["records"][0]["action"] == "CREATED"
        assert data["records"][0][entry["field"]] == entry["value"]
        return
    [failed] = data["failed_records"]
    assert failed["action"] == "FAILED" and failed[entry["field"]] == entry["value"]
    assert entry["error_text"] in failed["error_message"], failed["error_message"]
    assert data["records_created"] == 0 and stored(sandbox, "superleap", "lead") == []


# -- the client side -----------------------------------------------------------------------------
def client_row(entry) -> dict:
    row = {"lead_id": "LD-EX-1", "superleap_id": "", "name": "Jane Doe",
           "email": "jane.doe@example.com", "phone": "+1-555-987-6543", "status": "new",
           "source": "web", "updated_at": "2026-11-01T10:00:00Z"}
    column = {"id": "superleap_id", **{n: m.column for n, m in BASE.fields.items()}}
    if entry["field"] in column:
        row[column[entry["field"]]] = entry["value"]
    return row


@pytest.mark.parametrize("entry", EXAMPLES, ids=ids(EXAMPLES))
def test_the_client_decides_as_documented(entry, sandbox, sandbox_url):
    skip_if_the_client_cannot_see(entry)
    if entry["field"] == "object_type":
        with pytest.raises(pydantic.ValidationError, match="not a Superleap slug"):
            SyncSpec.model_validate({**BASE.model_dump(), "object": entry["value"]})
        return
    result = validate_partition(BASE, pd.DataFrame([client_row(entry)]))
    if entry.get("client_connector"):
        # Valid for the client: only Superleap can refuse it; the connector then fails the row.
        assert result.failures == [] and len(result.valid) == 1, result.failures
        check_connector(entry, sandbox_url)
    else:  # the client's codes follow Superleap's (PARSE_INVALID_FORMAT, ...)
        check_the_verdict(result, entry)


def check_connector(entry, sandbox_url: str) -> None:
    row = client_row(entry)
    fields = {name: row[m.column] for name, m in BASE.fields.items() if row[m.column]}
    resource = SuperleapResource(base_url=sandbox_url, token=DEFAULT_TOKENS["superleap"],
                                 requests_per_window=1000, max_backoff_seconds=0.2)
    [outcome], _ = resource.run(BASE, [(row["lead_id"], fields, row["superleap_id"] or None)])
    assert not outcome.ok and not outcome.transient, outcome
    assert outcome.error_code == entry["client_connector"], outcome
    assert entry["error_text"] in outcome.message, outcome.message
