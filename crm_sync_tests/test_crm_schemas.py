"""CRM field schemas: served by the sandbox (Superleap's Get Object, over HTTP), pulled into
crm_schemas/, checked against the spec (by `crm-sync schema check` and when the spec loads),
and used by validation."""

from __future__ import annotations

import json
import textwrap

import pandas as pd
import pytest
# pandera imports hypothesis on its first validation; under pytest's assertion rewriting, at
# the depth of a test's stack, Python 3.11 can fail that import (SystemError "AST constructor
# recursion depth mismatch", CPython gh-106905): import it here, at module level.
from pandera.backends.pandas import builtin_checks  # noqa: F401

from crm_sync import schema_files
from crm_sync.cli import main
from crm_sync.connectors.fields import CrmField, CrmObjectSchema
from crm_sync.errors import SpecError
from crm_sync.sandbox import superleap as superleap_sandbox
from crm_sync.sandbox import superleap_objects
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import load_spec
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.bundled_spec import bundled_unlinked

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['superleap']}"}

LEADS = """\
  - name: leads_to_superleap
    source: leads
    source_key: lead_id
    crm: superleap
    object: lead
    matching_key: id
    matching_column: superleap_id
    fields:
      name: {{column: name, required: true}}
      {email}: {{column: email, type: email}}
      status: status
{extra}"""
PROJECTS = """\
  - name: projects_to_brevo
    source: projects
    source_key: project_id
    crm: brevo
    object: project
    matching_key: ext_id
    matching_column: project_id
    fields:
      name: name
"""


def _project(tmp_path, monkeypatch, email="email", extra="", brevo=True):
    spec = tmp_path / "syncs.yaml"
    spec.write_text("syncs:\n" + LEADS.format(email=email, extra=extra)
                    + (PROJECTS if brevo else ""))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    monkeypatch.chdir(tmp_path)
    return spec


def _pulled_lead(tmp_path, sandbox, monkeypatch):
    """crm_schemas/superleap/lead.json as `schema pull` writes it (from the sandbox)."""
    _project(tmp_path, monkeypatch, brevo=False)
    assert main(["schema", "pull"]) == 0
    return tmp_path / "crm_schemas" / "superleap" / "lead.json"


def test_sandbox_serves_superleaps_documented_get_object(sandbox):
    answer = sandbox.get("/api/v1/appflow/objects/lead", headers=AUTH)
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    data = body["data"]
    assert {"entity_identifier", "label", "description", "has_nested_entities", "is_writable",
            "fields"} <= set(data) and data["entity_identifier"] == "lead"
    first = data["fields"][0]  # the documented example's first field
    assert first["field_name"] == "id" and first["data_type"] == "String"
    assert first["data_type_label"] == "varchar" and first["is_primary_key"] is True
    assert set(first["read_properties"]) == {"is_retrievable", "is_nullable", "is_queryable",
                                             "is_timestamp_field_for_incremental_queries"}
    assert sandbox.get("/api/v1/appflow/objects/lead").status_code == 401
    missing = sandbox.get("/api/v1/appflow/objects/nosuch", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["data"]["error_code"] == \
        "OBJECT_NOT_FOUND"
    # one fixture per object the record API serves
    assert superleap_objects.object_slugs() == superleap_sandbox.OBJECTS


def test_pull_writes_the_schema_over_http_and_reports_a_crm_without_one(
        tmp_path, sandbox, monkeypatch, capsys):
    _project(tmp_path, monkeypatch)
    assert main(["schema", "pull"]) == 0  # Brevo has no schema endpoint: not an error
    out = capsys.readouterr().out
    path = tmp_path / "crm_schemas" / "superleap" / "lead.json"
    assert "leads_to_superleap: wrote crm_schemas/superleap/lead.json" in out
    assert "projects_to_brevo: skipped, no schema endpoint" in out
    assert not (tmp_path / "crm_schemas" / "brevo").exists()
    schema = CrmObjectSchema.from_json(path.read_text())
    assert schema.crm == "superleap" and schema.object == "lead"
    assert schema.source == "GET /api/v1/appflow/objects/lead"
    status, name, ident = schema.field("status"), schema.field("name"), schema.field("id")
    assert status.type == "enumeration" and status.options == ("new", "contacted",
                                                               "qualified", "lost")
    assert name.length == 255 and name.required_on_create
    assert ident.unique and ident.read_only and schema.field("created_at").read_only
    assert json.loads(path.read_text())["fields"] == sorted(
        json.loads(path.read_text())["fields"], key=lambda f: f["name"])  # a stable file


def test_a_mistyped_field_is_named_with_the_right_one(tmp_path, sandbox, monkeypatch, capsys):
    _pulled_lead(tmp_path, sandbox, monkeypatch)
    _project(tmp_path, monkeypatch, email="emial", brevo=False)
    capsys.readouterr()
    assert main(["schema", "check"]) == 1
    out = capsys.readouterr().out
    expected = ("sync 'leads_to_superleap': field 'emial' does not exist on superleap object "
                "'lead' (crm_schemas/superleap/lead.json); did you mean 'email'?")
    assert expected in out
    with pytest.raises(SpecError) as raised:  # and the spec never reaches a run
        bundled_unlinked()
    assert expected in str(raised.value)


def test_a_spec_that_matches_the_pulled_schema_checks_clean(tmp_path, sandbox, monkeypatch,
                                                             capsys):
    _pulled_lead(tmp_path, sandbox, monkeypatch)
    capsys.readouterr()
    assert main(["schema", "check"]) == 0
    assert "no problems" in capsys.readouterr().out
    spec = bundled_unlinked()
    assert spec.syncs[0].crm_schema.file == "crm_schemas/superleap/lead.json"


def test_load_spec_refuses_a_read_only_field(tmp_path, sandbox, monkeypatch):
    _pulled_lead(tmp_path, sandbox, monkeypatch)
    _project(tmp_path, monkeypatch, brevo=False, extra="      created_at: created\n")
    with pytest.raises(SpecError, match="field 'created_at' is read-only on superleap"):
        bundled_unlinked()


def test_without_a_pulled_file_nothing_changes(tmp_path, monkeypatch):
    _project(tmp_path, monkeypatch, email="emial")  # no crm_schemas/: not checked
    assert bundled_unlinked().syncs[0].crm_schema is None


def _lead_row(**values):
    row = {"lead_id": "L1", "superleap_id": None, "name": "Ada", "email": "ada@example.com",
           "status": "new", "updated_at": "2026-11-01T08:00:00Z"}
    return row | values


def test_validation_uses_the_pulled_lengths_and_options(tmp_path, sandbox, monkeypatch):
    _pulled_lead(tmp_path, sandbox, monkeypatch)
    sync = bundled_unlinked().syncs[0]
    rows = [_lead_row(lead_id="ok"), _lead_row(lead_id="long", name="x" * 256),
            _lead_row(lead_id="limit", name="x" * 255),
            _lead_row(lead_id="option", status="hot"), _lead_row(lead_id="none", status=None)]
    result = validate_partition(sync, pd.DataFrame(rows))
    failed = {f.source_key: f for f in result.failures}
    assert set(failed) == {"long", "option"}
    assert sorted(result.valid["_key"]) == ["limit", "none", "ok"]
    assert failed["long"].error_code == "STRING_TOO_LONG"
    assert "superleap field name" in failed["long"].message
    assert "crm_schemas/superleap/lead.json" in failed["long"].message
    assert failed["option"].error_code == "INVALID_OPTION"
    assert failed["option"].message == ("hot is not one of the options of superleap field "
                                        "status (crm_schemas/superleap/lead.json): new, "
                                        "contacted, qualified, lost")


# -- CRMs whose describe() other helpers implement: unit-level fakes of its answer ------------
def _fake(tmp_path, schema: CrmObjectSchema):
    path = tmp_path / "crm_schemas" / schema.crm / f"{schema.object}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(schema.to_json())


ACCOUNT = CrmObjectSchema(crm="salesforce", object="Account", fields=(
    CrmField("External_Id__c", "string", "string", unique=True, external_id=True, length=20),
    CrmField("Legacy__c", "string", "string", unique=True),
    CrmField("Name", "string", "string", nullable=False, length=255),
    CrmField("Rating", "enumeration", "picklist", options=("Hot", "Warm", "Cold")),
    CrmField("Founded__c", "datetime", "datetime"),
    CrmField("NumberOfEmployees", "integer", "int"),
    CrmField("Region__c", "string", "string", nullable=False),
    CrmField("Score__c", "number", "double", calculated=True, createable=False,
             updateable=False)))
SALESFORCE = """\
syncs:
  - name: accounts
    source: companies
    source_key: company_id
    crm: salesforce
    object: Account
    matching_key: {key}
    fields:
      {key}: {{column: company_id, required: true}}
      Name: name
      Rating: rating
      Founded__c: founded
      NumberOfEmployees: {{column: employees, type: {employees}}}
{extra}"""


def _salesforce(tmp_path, monkeypatch, key="External_Id__c", employees="integer", extra=""):
    _fake(tmp_path, ACCOUNT)
    spec = tmp_path / "syncs.yaml"
    spec.write_text(SALESFORCE.format(key=key, employees=employees, extra=extra))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    monkeypatch.chdir(tmp_path)


def test_check_names_types_keys_and_calculated_fields(tmp_path, monkeypatch):
    _salesforce(tmp_path, monkeypatch, key="Legacy__c", employees="string",
                extra="      Score__c: {column: score, type: number}\n")
    spec = load_spec(check_schemas=False)
    found, missing = schema_files.check(spec)
    assert missing == []
    text = "\n".join(found)
    assert "matching_key 'Legacy__c' is not an external id field on salesforce" in text
    assert ("field 'NumberOfEmployees' has type 'string', which cannot hold salesforce's int "
            "(integer) field") in text
    assert "use type: integer" in text
    assert "field 'Score__c' is calculated by salesforce" in text
    assert len(found) == 3
    with pytest.raises(SpecError):
        bundled_unlinked()


def test_validation_checks_datetimes_picklists_and_required_on_create(tmp_path, monkeypatch):
    _salesforce(tmp_path, monkeypatch, extra="      Region__c: region\n")
    sync = bundled_unlinked().syncs[0]
    good = {"company_id": "C1", "name": "Acme", "rating": "Hot",
            "founded": "2017-10-17T00:00:00Z", "employees": "12", "region": "EU",
            "updated_at": "2026-11-01T08:00:00Z"}
    rows = [good, good | {"company_id": "C2", "founded": "2017-10-17 00:00:00"},
            good | {"company_id": "C3", "rating": "Lukewarm"},
            good | {"company_id": "C4", "region": None},
            good | {"company_id": "C5", "employees": "4,68"},
            good | {"company_id": "C6", "founded": "2017-10-17T00:00:00.123+02:00",
                    "rating": None}]
    result = validate_partition(sync, pd.DataFrame(rows))
    failed = {f.source_key: f.error_code for f in result.failures}
    assert failed == {"C2": "PARSE_INVALID_FORMAT",
                      "C3": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                      "C4": "REQUIRED_FIELD_MISSING", "C5": "PARSE_INVALID_FORMAT"}
    assert sorted(result.valid["_key"]) == ["C1", "C6"]
    entry = next(f for f in result.failures if f.source_key == "C4")
    assert entry.column_name == "region"
    assert "crm_schemas/salesforce/Account.json" in entry.message


def test_readme_shows_the_mistyped_field_example():
    from crm_sync.paths import PACKAGE_PARENT

    readme = (PACKAGE_PARENT / "README.md").read_text()
    assert ("sync 'leads_to_superleap': field 'emial' does not exist on superleap object "
            "'lead' (crm_schemas/superleap/lead.json); did you mean 'email'?") in readme
    assert "$ crm-sync schema check" in readme and "$ crm-sync schema pull" in readme


def test_the_bundled_spec_fits_the_sandboxs_lead_and_its_data_passes_alike(
        tmp_path, sandbox, monkeypatch, capsys):
    from crm_sync.paths import PACKAGE_PARENT

    spec = tmp_path / "syncs.yaml"
    spec.write_text((PACKAGE_PARENT / "syncs.yaml").read_text())
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    monkeypatch.chdir(tmp_path)
    assert main(["schema", "pull", "leads_to_superleap"]) == 0
    assert main(["schema", "check", "leads_to_superleap"]) == 0
    assert "no problems" in capsys.readouterr().out
    with_schema = bundled_unlinked().sync("leads_to_superleap")
    without = load_spec(check_schemas=False).sync("leads_to_superleap")
    assert with_schema.crm_schema is not None and without.crm_schema is None
    leads = pd.read_csv(PACKAGE_PARENT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    leads = leads.replace({"": None})
    codes = [sorted((f.source_key, f.error_code) for f in validate_partition(s, leads).failures)
             for s in (with_schema, without)]
    assert codes[0] == codes[1]  # the demo's data holds nothing the lead schema refuses


def test_a_backfill_quarantines_what_the_pulled_schema_refuses(tmp_path, sandbox, store,
                                                               monkeypatch):
    from crm_sync.paths import PACKAGE_PARENT
    from crm_sync_tests.conftest import stored

    spec = tmp_path / "syncs.yaml"
    spec.write_text((PACKAGE_PARENT / "syncs.yaml").read_text())
    data = tmp_path / "data"
    data.mkdir()
    leads = pd.read_csv(PACKAGE_PARENT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    day = "2026-11-02"
    ours = leads.index[leads["updated_at"].str.startswith(day)
                       & leads["superleap_id"].eq("")][:2]
    long_key, option_key = leads.loc[ours, "lead_id"]
    leads.loc[ours[0], "name"] = "x" * 256
    leads.loc[ours[1], "status"] = "hot"
    leads.to_csv(data / "leads.csv", index=False)
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    monkeypatch.setenv("CRM_SYNC_DATA_DIR", str(data))
    monkeypatch.chdir(tmp_path)
    assert main(["schema", "pull", "leads_to_superleap"]) == 0
    assert main(["backfill", "leads_to_superleap", "--start", day, "--end", day]) == 0
    codes = dict(store.query("SELECT source_key, error_code FROM quarantine").values.tolist())
    assert codes[long_key] == "STRING_TOO_LONG" and codes[option_key] == "INVALID_OPTION"
    sent = {r["external_id"] for r in stored(sandbox, "superleap", "lead")}
    assert sent and long_key not in sent and option_key not in sent


def test_pull_with_a_refused_token_fails_naming_the_sync(tmp_path, sandbox, monkeypatch,
                                                         capsys):
    _project(tmp_path, monkeypatch, brevo=False)
    monkeypatch.setenv("SUPERLEAP_TOKEN", "not-the-token")
    assert main(["schema", "pull"]) == 1
    out = capsys.readouterr().out
    assert "leads_to_superleap: failed: Superleap refused the token (HTTP 401)" in out
    assert "not-the-token" not in out
    assert not (tmp_path / "crm_schemas").exists()


CONTACTS = CrmObjectSchema(crm="hubspot", object="contacts", fields=(
    CrmField("email", "email", "string"),  # HubSpot matches contacts by email all the same
    CrmField("hs_buying_role", "multi_enumeration", "enumeration",
             options=("BUDGET_HOLDER", "CHAMPION", "END_USER")),
    CrmField("hs_object_source", "string", "string", createable=False, updateable=True)))


def test_multi_select_values_and_write_modes(tmp_path, monkeypatch):
    _fake(tmp_path, CONTACTS)
    spec = tmp_path / "syncs.yaml"
    spec.write_text(textwrap.dedent("""\
        syncs:
          - name: contacts
            source: contacts
            source_key: contact_id
            crm: hubspot
            object: contacts
            matching_key: email
            mode: {mode}
            fields:
              email: {{column: email, type: email, required: true}}
              hs_buying_role: roles
              hs_object_source: origin
        """))
    monkeypatch.setenv("CRM_SYNC_SPEC", str(spec))
    monkeypatch.chdir(tmp_path)
    text = spec.read_text()
    spec.write_text(text.format(mode="create_only"))
    with pytest.raises(SpecError, match="field 'hs_object_source' cannot be set on create on "
                                        "hubspot"):
        bundled_unlinked()
    spec.write_text(text.format(mode="upsert"))
    sync = bundled_unlinked().syncs[0]
    good = {"contact_id": "K1", "email": "a@example.com", "roles": "CHAMPION;END_USER",
            "origin": "x", "updated_at": "2026-11-01T08:00:00Z"}
    rows = [good, good | {"contact_id": "K2", "email": "b@example.com",
                          "roles": "CHAMPION;BOSS"}]
    result = validate_partition(sync, pd.DataFrame(rows))
    assert [(f.source_key, f.error_code) for f in result.failures] == [("K2", "INVALID_OPTION")]
    assert list(result.valid["_key"]) == ["K1"]
