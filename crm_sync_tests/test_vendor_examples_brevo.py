"""Brevo's documented accept/reject examples (vendor_examples/brevo.yaml), run twice each:
through the client's validation (or its spec check, or its connector where only the connector
can know), and as a raw HTTP request to the sandbox in Brevo's documented wire format
(`POST /v3/objects/{object_type}/batch/upsert`, `api-key` header; the process polled, the
record read back), never through crm_sync's connector.
"""

from __future__ import annotations

import json

import pandas as pd
import pydantic
import pytest

from crm_sync.connectors.brevo import BrevoResource
from crm_sync.errors import FatalCrmError
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import SyncSpec, load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.vendor_examples import load_examples
from crm_sync_tests.vendor_examples.table import (
    check_the_table, check_the_verdict, ids, skip_if_the_client_cannot_see,
)
from crm_sync_tests.bundled_spec import bundled_unlinked

EXAMPLES = load_examples("brevo")
AUTH = {"api-key": DEFAULT_TOKENS["brevo"]}
BASE = bundled_unlinked().sync("projects_to_brevo")
EXT_ID = "PR-EX-0001"


def test_the_table_has_ten_entries_each_with_a_source():
    check_the_table(EXAMPLES, "stage", ("request", "process"))


# -- the wire side: a raw request as Brevo documents it ------------------------------------------
def wire_value(entry):
    """The attribute value as a JSON body carries it: a number field's text that reads as a
    number goes as a JSON number (what crm_sync's converter sends), any other text as text (what
    a client without the check would send)."""
    value = entry["value"]
    if entry["type"] == "number" and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def wire_body(entry) -> bytes:
    field, value = entry["field"], entry["value"]
    record: dict = {"identifiers": {"ext_id": EXT_ID}, "attributes": {"name": "Example"}}
    if field == "identifiers.ext_id":
        record["identifiers"] = {"ext_id": value}
    elif field == "identifiers.id":
        record["identifiers"] = {"id": value}
    elif field == "attribute_count":
        # The object's own attributes (the sandbox's `project` defines these five and cf_0..):
        # a key it does not define would be dropped silently and not read back.
        named = {"name": "Example", "status": "active", "budget": 1, "start_date": "2026-11-01",
                 "company_ext_id": "CO-1"}
        record["attributes"] = {**named, **{f"cf_{i}": i for i in range(value - len(named))}}
    elif field.startswith("associations."):
        record["associations"] = [{"object_type": field.split(".", 1)[1], "action": "link",
                                   "records": [{"identifiers": {"ext_id": f"VE-{i}"}}
                                               for i in range(value)]}]
    elif field not in ("object_type", "record_bytes"):
        record["attributes"][field] = wire_value(entry)
    if field == "record_bytes":
        record["attributes"]["name"] = ""
        empty = len(json.dumps({"records": [record]}, separators=(",", ":")).encode())
        record["attributes"]["name"] = "x" * (value - empty)
    body = json.dumps({"records": [record]}, separators=(",", ":")).encode()
    assert field != "record_bytes" or len(body) == value
    return body


def read_back(sandbox, object_type: str, ext_id) -> dict | None:
    page = sandbox.get(f"/v3/objects/{object_type}/records", headers=AUTH,
                       params={"limit": 1000, "page_num": 1, "sort": "asc"})
    assert page.status_code == 200, page.text
    return next((r for r in page.json()["records"]
                 if r["identifiers"].get("ext_id") == ext_id), None)


@pytest.mark.parametrize("entry", EXAMPLES, ids=ids(EXAMPLES))
def test_the_sandbox_answers_as_documented(entry, sandbox):
    sandbox.post("/_sandbox/brevo/settings", json={"process_steps": 2, "rate_limit": None})
    object_type = entry["object"]
    answer = sandbox.post(f"/v3/objects/{object_type}/batch/upsert", content=wire_body(entry),
                          headers={**AUTH, "content-type": "application/json"})
    if entry["stage"] == "request":
        assert entry["verdict"] == "reject"
        assert answer.status_code == entry["status"], answer.text
        body = answer.json()
        assert set(body) == {"code", "message"}  # Brevo's errorModel
        assert body["code"] == entry["error_code"]
        assert entry["error_text"] in body["message"], body["message"]
        return
    assert answer.status_code == 202, answer.text
    process_id = answer.json()["processId"]
    for _ in range(10):
        status = sandbox.get(f"/v3/processes/{process_id}", headers=AUTH).json()["status"]
        if status in ("completed", "failed"):
            break
    assert status == "completed"
    ext_id = entry["value"] if entry["field"] == "identifiers.ext_id" else EXT_ID
    found = read_back(sandbox, object_type, ext_id)
    if entry["verdict"] == "reject":
        assert found is None, found  # dropped inside the process; Brevo reports nothing
        return
    assert found is not None
    if entry["field"] == "attribute_count":
        assert len(found["attributes"]) == entry["value"]
    elif entry["field"] not in ("identifiers.ext_id", "record_bytes"):
        assert found["attributes"][entry["field"]] == wire_value(entry)


# -- the client side: validation, the spec, or the connector -------------------------------------
def client_row(entry) -> dict:
    row = {"project_id": EXT_ID, "name": "Example", "status": "active", "budget": "1",
           "start_date": "2026-11-01", "company_id": "CO-1", "custom_fields": "",
           "updated_at": "2026-11-01T10:00:00Z"}
    field, value = entry["field"], entry["value"]
    mapped = {name: m.column for name, m in BASE.fields.items()}
    if field == "identifiers.ext_id":
        row["project_id"] = value
    elif field == "attribute_count":  # the five mapped attributes + the JSON column's
        row["custom_fields"] = json.dumps({f"cf_{i}": i for i in range(value - len(mapped))})
    elif field in mapped:
        row[mapped[field]] = value
    return row


@pytest.mark.parametrize("entry", EXAMPLES, ids=ids(EXAMPLES))
def test_the_client_decides_as_documented(entry, sandbox, sandbox_url):
    skip_if_the_client_cannot_see(entry)
    if entry["field"] == "object_type":
        check_spec(entry)
    elif entry.get("client_connector"):
        check_connector(entry, sandbox_url)
    else:  # Brevo's codes are its errorModel's; the client's quarantine codes are its own
        check_the_verdict(validate_partition(BASE, pd.DataFrame([client_row(entry)])),
                          {**entry, "client_code_is_the_crms": False})


def check_spec(entry) -> None:
    """An object type's name is checked when the spec is loaded (the profile's pattern)."""
    settings = {**BASE.model_dump(), "object": entry["value"]}
    if entry["verdict"] == "accept" or entry.get("client_rule") != "object_pattern":
        SyncSpec.model_validate(settings)  # the name is fine; Brevo alone decides
        return
    with pytest.raises(pydantic.ValidationError, match="not a Brevo name"):
        SyncSpec.model_validate(settings)


def check_connector(entry, sandbox_url: str) -> None:
    """Where only a request can tell, the connector's answer: a permanent failure of the row
    (without a request, or after Brevo refused it) or a stop of the sync."""
    spec = BASE.model_copy(update={"object": entry["object"]})
    row = client_row(entry)
    fields = {name: row[m.column] for name, m in BASE.fields.items() if row[m.column]}
    if entry["field"] == "record_bytes":  # the wire side's record, byte for byte
        fields = {"name": json.loads(wire_body(entry))["records"][0]["attributes"]["name"]}
    resource = BrevoResource(base_url=sandbox_url, token=DEFAULT_TOKENS["brevo"],
                             poll_interval_seconds=0.01, max_poll_interval_seconds=0.05,
                             requests_per_window=200, max_backoff_seconds=0.2)
    expected = entry["client_connector"]
    if expected == "FatalCrmError":
        with pytest.raises(FatalCrmError):
            resource.run(spec, [(row["project_id"], fields, None)])
        return
    [outcome], _ = resource.run(spec, [(row["project_id"], fields, None)])
    assert not outcome.ok and not outcome.transient and outcome.error_code == expected, outcome
