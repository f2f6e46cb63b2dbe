"""Every validation rule through a real materialization: the bad row lands in the quarantine
with its code (stage `validation`, no API call spent on it) while its valid neighbours reach
the sandbox. Rows just inside a rule reach the sandbox too."""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from crm_sync.pipeline.assets import build_assets
from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_unlinked

DAY = "2026-11-04"
UPDATED = f"{DAY}T12:00:00Z"


def _brevo_custom(n: int) -> str:
    return json.dumps({f"cf_{i}": i for i in range(n)})


# sync -> (crm object, template row, [(overrides, expected quarantine code or None)])
CASES = {
    "leads_to_superleap": ("lead", {
        "superleap_id": "", "name": "Ada Lovelace", "phone": "+1-555-123-4567",
        "status": "new", "source": "web"}, [
        ({"email": "test .sok@gmail.com"}, "PARSE_INVALID_FORMAT"),
        ({"name": ""}, "REQUIRED_FIELD_MISSING"),
        ({"superleap_id": "SL-000123"}, "INVALID_ID_FORMAT"),
        ({"phone": "call me maybe"}, "PARSE_INVALID_FORMAT"),
        ({"email": "ada+crm@example.com"}, None),  # plus-addressing: valid
        ({"superleap_id": "g1koYv_2lLKYVan"}, "INVALID_ID"),  # right shape, unknown: the CRM says no
    ]),
    "contacts_to_hubspot": ("contacts", {
        "first_name": "Ada", "last_name": "Lovelace", "phone": "+1-555-123-4567",
        "job_title": "CTO", "lifecycle_stage": "lead", "company_id": "CO-1"}, [
        ({"email": ""}, "REQUIRED_FIELD_MISSING"),
        ({"email": "ada at example.com"}, "PARSE_INVALID_FORMAT"),
        ({"last_name": ""}, "REQUIRED_FIELD_MISSING"),
        ({"email": "ada+news@example.com"}, None),
    ]),
    "companies_to_salesforce": ("Account", {
        "name": "Acme", "domain": "acme.com", "industry": "Retail", "employees": "42",
        "phone": "+1-555-123-4567", "country": "US", "annual_revenue": "100000.00"}, [
        ({"company_id": "001xx0000004GxDAAU"}, "MALFORMED_ID"),
        ({"name": ""}, "REQUIRED_FIELD_MISSING"),
        ({"employees": "12.5"}, "PARSE_INVALID_FORMAT"),
        ({"company_id": "001xx0000004Gx"}, None),  # 14 characters: not a record id
    ]),
    "projects_to_brevo": ("project", {
        "name": "Apollo", "status": "active", "budget": "1000", "start_date": "2026-10-01",
        "company_id": "CO-1", "custom_fields": ""}, [
        ({"custom_fields": _brevo_custom(501 - 5)}, "TOO_MANY_ATTRIBUTES"),
        ({"custom_fields": "not json"}, "PARSE_INVALID_FORMAT"),
        ({"name": ""}, "REQUIRED_FIELD_MISSING"),
        ({"custom_fields": _brevo_custom(500 - 5)}, None),  # exactly 500 attributes
    ]),
}


def _rows(sync, template: dict, cases) -> pd.DataFrame:
    key = sync.source_key
    rows = []
    for i in range(5):  # valid neighbours
        rows.append({**template, key: f"OK-{i}", "email": f"ok{i}@example.com",
                     "updated_at": UPDATED})
    for i, (overrides, _) in enumerate(cases):
        row = {**template, key: f"CASE-{i}", "email": f"case{i}@example.com",
               "updated_at": UPDATED}
        row.update(overrides)
        rows.append(row)
    columns = pd.read_csv(PROJECT_ROOT / "data" / f"{sync.source}.csv", nrows=0).columns
    frame = pd.DataFrame(rows)
    for col in columns:
        if col not in frame:
            frame[col] = ""
    return frame[list(columns)]


@pytest.mark.parametrize("sync_name", list(CASES))
def test_each_rule_quarantines_its_row_and_spares_the_neighbours(sync_name, sandbox, store,
                                                                tmp_path):
    spec = bundled_unlinked()
    sync = spec.sync(sync_name)
    obj, template, cases = CASES[sync_name]
    data = tmp_path / "data"
    data.mkdir()
    frame = _rows(sync, template, cases)
    frame.to_csv(data / f"{sync.source}.csv", index=False)
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    assets = [a for a in build_assets(spec) if a.key.path[0] in
              (f"source_{sync.source}", f"validated_{sync.name}", sync.name)]
    result = dg.materialize(assets, partition_key=DAY, resources=resources)
    assert result.success

    quarantine = store.quarantine_frame(sync.name).set_index("source_key")
    # A case may override the source key itself (a Salesforce id in the external id column).
    expected = {overrides.get(sync.source_key, f"CASE-{i}"): code
                for i, (overrides, code) in enumerate(cases) if code}
    assert set(quarantine.index) == set(expected)
    for key, code in expected.items():
        entry = quarantine.loc[key]
        assert entry["error_code"] == code, (key, entry["message"])
        assert entry["message"]
        assert entry["stage"] == ("crm" if code == "INVALID_ID" else "validation")

    records = stored(sandbox, sync.crm, obj)
    passing = 5 + sum(code is None for _, code in cases)
    assert len(records) == passing
    validated = result.asset_materializations_for_node(f"validated_{sync.name}")[0].metadata
    assert validated["rows_in"].value == len(frame)
    assert validated["rows_quarantined"].value == sum(
        1 for code in expected.values() if code != "INVALID_ID")
