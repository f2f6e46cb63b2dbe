"""The Superleap schema: the documented email rule, required name, id format."""

from __future__ import annotations

import pandas as pd
import pytest

from crm_sync.spec import load_spec
from crm_sync.transform.validate import SourceTableError, validate_partition
from crm_sync_tests.bundled_spec import bundled_unlinked


def _row(**overrides):
    row = {"lead_id": "LD-1", "superleap_id": "", "name": "Ada Lovelace",
           "email": "ada@example.com", "phone": "+1-555-123-4567", "status": "new",
           "source": "web", "updated_at": "2026-11-01T10:00:00Z"}
    row.update(overrides)
    return row


@pytest.fixture(scope="module")
def sync():
    return bundled_unlinked().sync("leads_to_superleap")


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
    assert failure.source_key == "LD-2" and failure.error_code == code
    assert rule in failure.rules.split(",") and failure.stage == "validation"
    if rule == "email_format":
        assert failure.message == f"invalid email format: {overrides['email']}"


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
    assert set(failure.rules.split(",")) == {"required", "email_format"}
    assert "invalid email format" in failure.message and "name is required" in failure.message


def test_duplicate_source_keys_keep_the_newest(sync):
    frame = pd.DataFrame([_row(lead_id="LD-1", status="old", updated_at="2026-11-01T01:00:00Z"),
                          _row(lead_id="LD-1", status="new", updated_at="2026-11-01T02:00:00Z")])
    result = validate_partition(sync, frame)
    assert list(result.valid["status"]) == ["new"]
    assert [f.error_code for f in result.failures] == ["DUPLICATE_MATCHING_KEY"]


def test_a_missing_column_names_the_table_and_column(sync):
    frame = pd.DataFrame([_row()]).drop(columns=["email"])
    with pytest.raises(SourceTableError, match=r"leads.*email"):
        validate_partition(sync, frame)


# -- HubSpot contacts -------------------------------------------------------------------------
def _contact(**overrides):
    row = {"contact_id": "CT-1", "email": "ada@example.com", "first_name": "Ada",
           "last_name": "Lovelace", "phone": "+1-555-123-4567", "job_title": "CTO",
           "lifecycle_stage": "lead", "company_id": "CO-1",
           "updated_at": "2026-11-01T10:00:00Z"}
    row.update(overrides)
    return row


def _check(sync, good: dict, bad: dict | None, expect_code=None, expect_rule=None):
    """`good` must pass; `bad` (if any) must fail with the expected code and rule."""
    rows = [good] + ([bad] if bad is not None else [])
    result = validate_partition(sync, pd.DataFrame(rows))
    if bad is None:
        assert result.failures == [] and len(result.valid) == 1
        return None
    assert len(result.valid) == 1 and len(result.failures) == 1
    failure = result.failures[0]
    assert failure.error_code == expect_code
    assert expect_rule in failure.rules.split(",")
    return failure


def test_hubspot_id_property_must_be_present_and_valid():
    sync = bundled_unlinked().sync("contacts_to_hubspot")
    _check(sync, _contact(), _contact(contact_id="CT-2", email=""),
           "REQUIRED_FIELD_MISSING", "required")
    _check(sync, _contact(), _contact(contact_id="CT-2", email="ada at example.com"),
           "PARSE_INVALID_FORMAT", "email_format")
    _check(sync, _contact(email="ada+news@example.com"), None)


def test_hubspot_duplicate_id_property_values_keep_the_newest():
    sync = bundled_unlinked().sync("contacts_to_hubspot")
    frame = pd.DataFrame([
        _contact(contact_id="CT-1", updated_at="2026-11-01T10:00:00Z"),
        _contact(contact_id="CT-2", updated_at="2026-11-01T11:00:00Z"),  # same email, newer
    ])
    result = validate_partition(sync, frame)
    assert list(result.valid["_key"]) == ["CT-2"]
    assert result.failures[0].source_key == "CT-1"
    assert result.failures[0].error_code == "DUPLICATE_MATCHING_KEY"


# -- Salesforce accounts ----------------------------------------------------------------------
def _company(**overrides):
    row = {"company_id": "CO-0000001", "name": "Acme", "domain": "acme.com",
           "industry": "Retail", "employees": "42", "phone": "+1-555-123-4567", "country": "US",
           "annual_revenue": "100000.00", "updated_at": "2026-11-01T10:00:00Z"}
    row.update(overrides)
    return row


@pytest.mark.parametrize("bad, code, rule", [
    ({"company_id": "001xx0000004GxDAAU"}, "MALFORMED_ID", "salesforce_record_id_as_external_id"),
    ({"company_id": "001xx0000004GxD"}, "MALFORMED_ID", "salesforce_record_id_as_external_id"),
    ({"name": ""}, "REQUIRED_FIELD_MISSING", "required"),
    ({"employees": "12.5"}, "PARSE_INVALID_FORMAT", "integer_format"),
    ({"annual_revenue": "a lot"}, "PARSE_INVALID_FORMAT", "number_format"),
])
def test_salesforce_rules(bad, code, rule):
    sync = bundled_unlinked().sync("companies_to_salesforce")
    bad = _company(**{"company_id": "CO-0000002", **bad})
    failure = _check(sync, _company(), bad, code, rule)
    assert failure.source_key == bad["company_id"]


@pytest.mark.parametrize("good", [
    {"company_id": "001xx0000004Gx"},  # 14 characters: not a record id
    {"company_id": "001xx0000004GxDAAUX"},  # 19 characters: not a record id
    {"employees": "-3"}, {"annual_revenue": "1e6"}, {"annual_revenue": ""},
])
def test_salesforce_values_just_inside_the_rules_pass(good):
    sync = bundled_unlinked().sync("companies_to_salesforce")
    _check(sync, _company(**good), None)


# -- Brevo projects ---------------------------------------------------------------------------
def _project(n_custom: int = 0, **overrides):
    import json

    custom = json.dumps({f"cf_{i}": i for i in range(n_custom)}) if n_custom else ""
    row = {"project_id": "PR-1", "name": "Apollo", "status": "active", "budget": "1000",
           "start_date": "2026-10-01", "company_id": "CO-1", "custom_fields": custom,
           "updated_at": "2026-11-01T10:00:00Z"}
    row.update(overrides)
    return row


def test_brevo_attribute_limit_boundary():
    sync = bundled_unlinked().sync("projects_to_brevo")
    mapped = len(sync.fields)  # every mapped field of _project() is filled
    at_limit = _project(500 - mapped)
    over = _project(501 - mapped, project_id="PR-2")
    result = validate_partition(sync, pd.DataFrame([at_limit, over]))
    assert list(result.valid["_key"]) == ["PR-1"]
    [failure] = result.failures
    assert failure.error_code == "TOO_MANY_ATTRIBUTES" and failure.source_key == "PR-2"
    assert "501 attributes" in failure.message


def test_brevo_attributes_column_must_be_a_json_object_and_fit_one_request():
    sync = bundled_unlinked().sync("projects_to_brevo")
    frame = pd.DataFrame([
        _project(),
        _project(project_id="PR-2", custom_fields="[1, 2]"),
        _project(project_id="PR-3", custom_fields='{"notes": "' + "x" * 1_000_001 + '"}'),
        _project(project_id="PR-4", start_date="2026-13-01"),
    ])
    result = validate_partition(sync, frame)
    assert list(result.valid["_key"]) == ["PR-1"]
    codes = {f.source_key: f.error_code for f in result.failures}
    assert codes == {"PR-2": "PARSE_INVALID_FORMAT", "PR-3": "RECORD_TOO_LARGE",
                     "PR-4": "PARSE_INVALID_FORMAT"}



def test_brevo_unknown_attributes_are_reported_and_not_sent():
    from crm_sync.transform.convert import mapped_fields

    sync = bundled_unlinked().sync("projects_to_brevo").model_copy(update={
        "known_attributes": ["name", "status", "budget", "start_date", "company_ext_id", "cf_0"]})
    result = validate_partition(sync, pd.DataFrame([_project(2)]))
    assert result.failures == []  # a warning, not a rejection
    assert result.warnings == {"cf_1": 1}
    row = result.valid.iloc[0].to_dict()
    fields = mapped_fields(sync, row)
    assert "cf_0" in fields and "cf_1" not in fields and fields["name"] == "Apollo"
