"""Salesforce's documented accept/reject examples (vendor_examples/salesforce.yaml), each run
against the client's validation and, as a raw sObject Collections upsert in Salesforce's wire
format, against the sandbox. Where the client cannot know (`client_rule: null`: only the org's
describe says it), the client's connector must quarantine the row after the sandbox refuses it.
"""

from __future__ import annotations

import pandas as pd
import pytest

from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import FieldMapping, load_spec
from crm_sync.transform.convert import PAYLOAD
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.vendor_examples import load_examples
from crm_sync_tests.bundled_spec import bundled_unlinked

TOKEN = DEFAULT_TOKENS["salesforce"]
EXAMPLES = load_examples("salesforce")
BASE = bundled_unlinked().sync("companies_to_salesforce")
# crm_sync's field type (connectors/fields.py) -> the spec's `type:` that validates it.
SPEC_TYPE = {"string": "string", "text": "string", "enumeration": "string", "url": "string",
             "integer": "integer", "number": "number", "boolean": "boolean", "date": "date",
             "datetime": "datetime", "email": "email"}


def _spec(entry):
    fields = {"External_Id__c": FieldMapping(column="ext_id", required=True),
              "Name": FieldMapping(column="name", required=True)}
    if entry["field"] != "Name":
        fields[entry["field"]] = FieldMapping(column="value", type=SPEC_TYPE[entry["type"]])
    return BASE.model_copy(update={"object": entry["object"], "fields": fields})


def _frame(entry, key: str) -> pd.DataFrame:
    name = entry["value"] if entry["field"] == "Name" else "Example Co"
    return pd.DataFrame([{"company_id": key, "ext_id": key, "name": name,
                          "value": entry["value"], "updated_at": "2026-11-01T10:00:00Z"}])


def test_the_table_has_ten_sourced_entries_at_least():
    assert len(EXAMPLES) >= 10
    assert all(e["source"].strip() for e in EXAMPLES)
    assert {e["verdict"] for e in EXAMPLES} == {"accept", "reject"}


@pytest.mark.parametrize("entry", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_the_sandbox_answers_as_salesforce_documents(entry, sandbox):
    key = f"EX-{entry['id']}"
    record = {"attributes": {"type": entry["object"]}, "External_Id__c": key,
              "Name": "Example Co", entry["field"]: entry.get("wire", entry["value"])}
    response = sandbox.patch(
        f"/services/data/v62.0/composite/sobjects/{entry['object']}/External_Id__c",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"allOrNone": False, "records": [record]})
    body = response.json()
    if entry["verdict"] == "accept":
        assert response.status_code == 200, body
        assert body[0]["success"] is True and body[0]["errors"] == [], body
        return
    assert response.status_code == entry["status"], body
    if entry["status"] == 400:  # the whole request: [{"message", "errorCode"}]
        assert set(body[0]) == {"message", "errorCode"}
        assert body[0]["errorCode"] == entry["error_code"]
        assert entry["error_text"] in body[0]["message"], body
    else:  # the record's UpsertResult, in the documented failed-entry shape
        assert set(body[0]) == {"success", "errors"} and body[0]["success"] is False
        error = body[0]["errors"][0]
        assert error["statusCode"] == entry["error_code"]
        assert entry["error_text"] in error["message"], error
        assert error["fields"] == [entry["field"]]


@pytest.mark.parametrize("entry", EXAMPLES, ids=[e["id"] for e in EXAMPLES])
def test_the_client_refuses_what_salesforce_refuses(entry, sandbox, sandbox_url):
    key = f"CL-{entry['id']}"
    spec = _spec(entry)
    result = validate_partition(spec, _frame(entry, key))
    if entry["verdict"] == "accept" or entry.get("client_rule") is None:
        assert result.failures == [], [f.message for f in result.failures]
    else:
        [failure] = result.failures
        assert entry["client_rule"] in failure.rules.split(",")
        return
    # Past validation: the client's connector sends it; what Salesforce refuses is quarantined
    # with Salesforce's code, what it accepts is created.
    payload = result.valid[PAYLOAD].iloc[0]
    outcomes, _ = SalesforceResource(base_url=sandbox_url, token=TOKEN).run(
        spec, [(key, payload, None)])
    [outcome] = outcomes
    if entry["verdict"] == "accept":
        assert outcome.status == "created", outcome
    else:
        assert (outcome.status, outcome.error_code, outcome.transient) == \
            ("failed", entry["error_code"], False), outcome
