"""HubSpot's documented accept/reject examples (vendor_examples/hubspot.yaml), each run twice:
as a raw batch/upsert in HubSpot's documented wire format against the sandbox, and through the
client: its validation (`validate_partition`) and, where validation cannot know (`client_rule:
null`), its connector, which must quarantine what HubSpot refuses with HubSpot's code."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest

from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import FieldMapping, load_spec
from crm_sync.transform.convert import PAYLOAD
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.vendor_examples import load_examples
from crm_sync_tests.bundled_spec import bundled_unlinked

TOKEN = DEFAULT_TOKENS["hubspot"]
EXAMPLES = load_examples("hubspot")
KEY = {"contacts": "email", "projects": "ext_id"}  # the unique idProperty, else crm_sync_id
PREFIX = "Property values were not valid: "


def test_the_table_has_ten_entries_with_sources():
    assert len(EXAMPLES) >= 10
    assert all(e["source"].strip() for e in EXAMPLES)
    assert {e["verdict"] for e in EXAMPLES} == {"accept", "reject"}


def _id_of(example: dict) -> tuple[str, str]:
    prop = KEY.get(example["object"], "crm_sync_id")
    if prop == example["field"]:
        return prop, example["value"]
    return prop, "ex1@example.com" if prop == "email" else "EX-1"


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_the_sandbox_answers_as_documented(example, sandbox, sandbox_url):
    prop, record_id = _id_of(example)
    body = {"inputs": [{"idProperty": prop, "id": record_id, "objectWriteTraceId": "t-1",
                        "properties": {example["field"]: example["value"]}}]}
    response = httpx.post(f"{sandbox_url}/crm/v3/objects/{example['object']}/batch/upsert",
                          json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    if example["verdict"] == "accept":
        assert response.status_code == 200, response.text
        [record] = stored(sandbox, "hubspot", example["object"])
        assert record["properties"][example["field"]].lower() == example["value"].lower()
        return
    assert response.status_code == example.get("status", 207), response.text
    [error] = response.json()["errors"]
    assert error["context"] == {"objectWriteTraceId": ["t-1"]}
    assert error["errors"][0]["code"] == example["error_code"]
    assert error["errors"][0]["context"] == {"propertyName": [example["field"]]}
    [result] = json.loads(error["message"][len(PREFIX):])
    assert result["propertyValue"] == example["value"]
    assert example["error_text"] in result["message"] == result["localizedErrorMessage"]
    assert stored(sandbox, "hubspot", example["object"]) == []


def _spec(example: dict):
    prop, _ = _id_of(example)
    fields = {example["field"]: FieldMapping(column="v", type=example["type"],
                                             required=prop == example["field"])}
    if prop != example["field"]:
        fields[prop] = FieldMapping(column="key_id", required=True)
    return bundled_unlinked().sync("contacts_to_hubspot").model_copy(update={
        "name": f"{example['object']}_examples", "source": "examples", "source_key": "key_id",
        "object": example["object"], "matching_key": prop, "fields": fields})


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_the_client_validates_or_quarantines_as_hubspot_does(example, sandbox, sandbox_url):
    spec = _spec(example)
    frame = pd.DataFrame([{"key_id": _id_of(example)[1], "v": example["value"],
                           "updated_at": "2026-11-01T00:00:00Z"}])
    result = validate_partition(spec, frame)
    if example.get("client_rule"):
        assert example["verdict"] == "reject"
        [failure] = result.failures
        assert example["client_rule"] in failure.rules.split(","), failure
        return
    assert not result.failures, [f.message for f in result.failures]
    rows = [(key, payload, None) for key, payload in
            zip(result.valid["_key"], result.valid[PAYLOAD])]
    [outcome], _ = HubSpotResource(base_url=sandbox_url, token=TOKEN).run(spec, rows)
    if example["verdict"] == "accept":
        assert outcome.status == "created", outcome
        return
    # Validation cannot know this one: HubSpot refuses it, the connector quarantines it.
    assert (outcome.status, outcome.error_code, outcome.transient) == (
        "failed", example["error_code"], False), outcome
    assert example["error_text"] in outcome.message
