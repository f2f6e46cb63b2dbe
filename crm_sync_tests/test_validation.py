"""The Superleap schema: the documented email rule, required name, id format."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_sync.spec import load_spec
from crm_sync.validation import SourceTableError, validate_partition


def _row(**overrides):
    row = {"lead_id": "LD-1", "superleap_id": "", "name": "Ada Lovelace",
           "email": "ada@example.com", "phone": "+1-555-123-4567", "status": "new",
           "source": "web", "updated_at": "2026-11-01T10:00:00Z"}
    row.update(overrides)
    return row


@pytest.fixture(scope="module")
def sync():
    return load_spec().sync("leads_to_superleap")


@pytest.mark.parametrize("overrides, code, rule", [
    ({"email": "test .sok@gmail.com"}, "PARSE_INVALID_FORMAT", "email_format"),
    ({"email": "ada@@example.com"}, "PARSE_INVALID_FORMAT", "email_format"),
    ({"name": ""}, "REQUIRED_FIELD_MISSING", "required"),
    ({"name": "   "}, "REQUIRED_FIELD_MISSING", "required"),
    ({"superleap_id": "SL-123456"}, "INVALID_ID_FORMAT", "superleap_id_format"),
    ({"superleap_id": "g1koYv_2lLKYVa"}, "INVALID_ID_FORMAT", "superleap_id_format"),
    ({"phone": "call me"}, "PARSE_INVALID_FORMAT", "phone_format"),
])
def test_bad_rows_are_quarantined_with_their_rule(sync, overrides, code, rule):
    frame = pd.DataFrame([_row(lead_id="LD-1"), _row(lead_id="LD-2", **overrides)])
    result = validate_partition(sync, frame)
    assert list(result.valid["_key"]) == ["LD-1"]
    [failure] = result.failures
    assert failure["source_key"] == "LD-2" and failure["error_code"] == code
    assert rule in failure["rules"].split(",") and failure["stage"] == "validation"
    if rule == "email_format":
        assert failure["message"] == f"invalid email format: {overrides['email']}"


@pytest.mark.parametrize("overrides", [
    {"email": "ada+crm@example.com"},  # plus-addressing is valid
    {"email": ""},  # email is optional for Superleap leads
    {"superleap_id": "g1koYv_2lLKYVan"},  # the documented id shape
    {"phone": "+44 20 7946 0958"},
])
def test_rows_just_inside_the_rules_pass(sync, overrides):
    result = validate_partition(sync, pd.DataFrame([_row(**overrides)]))
    assert result.failures == [] and len(result.valid) == 1


def test_every_failure_of_a_row_is_reported(sync):
    result = validate_partition(sync, pd.DataFrame([_row(name="", email="a b@c.com")]))
    [failure] = result.failures
    assert set(failure["rules"].split(",")) == {"required", "email_format"}
    assert "invalid email format" in failure["message"] and "name is required" in failure["message"]


def test_duplicate_source_keys_keep_the_newest(sync):
    frame = pd.DataFrame([_row(lead_id="LD-1", status="old", updated_at="2026-11-01T01:00:00Z"),
                          _row(lead_id="LD-1", status="new", updated_at="2026-11-01T02:00:00Z")])
    result = validate_partition(sync, frame)
    assert list(result.valid["status"]) == ["new"]
    assert [f["error_code"] for f in result.failures] == ["DUPLICATE_MATCHING_KEY"]


def test_a_missing_column_names_the_table_and_column(sync):
    frame = pd.DataFrame([_row()]).drop(columns=["email"])
    with pytest.raises(SourceTableError, match=r"leads.*email"):
        validate_partition(sync, frame)
