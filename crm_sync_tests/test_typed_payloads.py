"""Issue 14, "Validation is split": validation yields the typed CRM payloads (one converter, one
digest, crm_sync/transform/convert.py); the runner only plans and sends.

Structure (ast): the runner defines and calls no converter and builds no validation-stage
quarantine entry; one converter exists; replay compares digests made by validation. Behaviour
(validate_partition, run_upsert, replay and dg.materialize against the sandbox): a row that
cannot be converted is quarantined by validation and never reaches the upsert; a replayed
unchanged permanent failure is not resent, a changed one is; state and quarantine entries
holding the old sha256 payload hashes are recognised as unchanged.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dagster as dg
import pandas as pd
import yaml

import crm_sync
from crm_sync.pipeline.assets import build_assets
from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.transform.convert import DIGEST, PAYLOAD, legacy_payload_hash, mapped_fields
from crm_sync.definitions import build_resources
from crm_sync.state.quarantine import QuarantineEntry
from crm_sync.load.replay import replay_sync
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.extract.sources import SourceResource
from crm_sync.spec import load_spec
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.test_real_data_state import HUBSPOT as CONTACTS
from crm_sync_tests.ast_source import parse as parse_source

PACKAGE = Path(crm_sync.__file__).parent
CONVERTERS = {"convert", "_number", "mapped_fields", "mapped_columns", "typed_payloads",
              "payload_hash", "legacy_payload_hash", "change_digests", "add_payloads"}
DAY = "2026-11-04"
UPDATED = f"{DAY}T12:00:00Z"


def _tree(relative: str) -> ast.Module:
    path = PACKAGE / relative
    return parse_source(path.read_text(), filename=str(path))


def _called_names(node: ast.AST) -> set[str]:
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            func = sub.func
            names.add(func.id if isinstance(func, ast.Name) else getattr(func, "attr", ""))
    return names


def _defined(tree: ast.AST) -> set[str]:
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))}


# -- structure -------------------------------------------------------------------------------
def test_the_runner_defines_and_calls_no_converter_and_writes_no_validation_rows():
    # (the old sha256 is still compared with state written by older versions, once)
    converters = CONVERTERS - {"legacy_payload_hash"}
    tree = _tree("load/runner.py")
    assert not _defined(tree) & converters
    calls = _called_names(tree)
    assert not calls & converters
    assert "conversion_failure" not in calls and "validation_failure" not in calls
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert "PARSE_INVALID_FORMAT" not in strings and "validation" not in strings
    plan = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_plan")
    assert not _called_names(plan) & converters  # _plan plans: the payloads come typed


def test_one_converter_and_one_digest_exist_in_one_module():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "sandbox" or rel.parts[:2] == ("devtools", "bench"):
            continue
        tree = parse_source(path.read_text(), filename=str(path))
        for name in _defined(tree) & CONVERTERS:
            found.setdefault(name, []).append(str(rel))
        if "hash_pandas_object" in path.read_text():
            found.setdefault("hash_pandas_object", []).append(str(rel))
    assert all(places == ["transform/convert.py"] for places in found.values()), found
    tree = _tree("transform/convert.py")
    one_row = next(n for n in tree.body if isinstance(n, ast.FunctionDef)
                   and n.name == "mapped_fields")
    assert "typed_payloads" in _called_names(one_row)  # the one-row case, not a second one


def test_replay_compares_the_digest_validation_made():
    tree = _tree("load/replay.py")
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert not names & {"mapped_fields", "mapped_columns", "typed_payloads", "payload_hash",
                        "convert"}
    assert "DIGEST" in names


# -- behaviour: conversion in validation ------------------------------------------------------
def _spec(tmp_path: Path, sync: dict, table: str, rows: list[dict]):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(data / f"{table}.csv", index=False)
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"start_date": "2026-11-01", "syncs": [sync]}))
    return load_spec(path), data


COMPANIES = {
    "name": "companies_to_salesforce", "source": "companies", "source_key": "company_id",
    "crm": "salesforce", "object": "Account", "matching_key": "External_Id__c",
    "fields": {"External_Id__c": {"column": "company_id", "required": True},
               "Name": {"column": "name", "required": True},
               "NumberOfEmployees": {"column": "employees", "type": "integer"},
               "AnnualRevenue": {"column": "revenue", "type": "number"}},
}


def _companies():
    base = {"name": "Acme", "employees": "42", "revenue": "1000.5", "updated_at": UPDATED}
    return [{**base, "company_id": f"CO-{i}"} for i in range(4)] + [
        {**base, "company_id": "CO-TEXT", "employees": "twelve"},  # not a whole number
        {**base, "company_id": "CO-INF", "revenue": "1e999"},  # the format fits; infinite
    ]


def test_validation_quarantines_what_cannot_be_converted_and_types_the_rest(
        sandbox, sandbox_url, store, tmp_path):
    spec, _ = _spec(tmp_path, COMPANIES, "companies", _companies())
    sync = spec.syncs[0]
    result = validate_partition(sync, pd.DataFrame(_companies()), partition=DAY)
    failures = {f.source_key: f for f in result.failures}
    assert set(failures) == {"CO-TEXT", "CO-INF"}
    assert {(f.stage, f.error_code) for f in failures.values()} == \
        {("validation", "PARSE_INVALID_FORMAT")}
    assert failures["CO-INF"].message == \
        "cannot convert the row's values: '1e999' is not a finite number"
    assert failures["CO-INF"].partition == DAY
    assert set(result.valid["_key"]) == {f"CO-{i}" for i in range(4)}
    payload = result.valid[PAYLOAD].iloc[0]
    assert payload == {"External_Id__c": "CO-0", "Name": "Acme", "NumberOfEmployees": 42,
                       "AnnualRevenue": 1000.5}
    assert payload == mapped_fields(sync, result.valid.iloc[0].to_dict())  # the one-row case
    assert result.valid[DIGEST].str.startswith("h1:").all()

    resource = SalesforceResource(base_url=sandbox_url, token=DEFAULT_TOKENS["salesforce"])
    report = run_upsert(sync, result.valid, resource, store, partition=DAY)
    assert (report.rows_in, report.created, report.failed) == (4, 4, 0)
    assert {r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")} == \
        {f"CO-{i}" for i in range(4)}


def test_the_validated_asset_quarantines_an_unconvertible_row_before_the_upsert(
        sandbox, store, tmp_path):
    spec, data = _spec(tmp_path, COMPANIES, "companies", _companies())
    sync = spec.syncs[0]
    assets = [a for a in build_assets(spec) if a.key.path[-1] in
              {"source_companies", f"validated_{sync.name}", sync.name}]
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data))}
    result = dg.materialize(assets, partition_key=DAY, resources=resources)
    valid = result.output_for_node(f"validated_{sync.name}")
    assert "CO-INF" not in set(valid["_key"]) and PAYLOAD in valid.columns
    validated = result.asset_materializations_for_node(f"validated_{sync.name}")[0].metadata
    assert validated["rows_quarantined"].value == 2
    upsert = result.asset_materializations_for_node(sync.name)[0].metadata
    assert (upsert["rows_in"].value, upsert["failed"].value) == (4, 0)  # it never got there
    entry = store.quarantine_frame(sync.name).set_index("source_key").loc["CO-INF"]
    assert (entry["stage"], entry["error_code"], entry["path"]) == \
        ("validation", "PARSE_INVALID_FORMAT", "sync")


# -- behaviour: one digest for change detection and replay -----------------------------------
def _contacts(last: str = "Lovelace") -> list[dict]:
    return [{"contact_id": "C-1", "email": "ada@example.com", "last_name": last,
             "lifecycle_stage": "not-a-stage", "updated_at": UPDATED},  # HubSpot refuses it
            {"contact_id": "C-2", "email": "grace@example.com", "last_name": "Hopper",
             "lifecycle_stage": "lead", "updated_at": UPDATED}]


def _requests(sandbox) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get("requests total", 0)


def _refused_once(sandbox_url, store, tmp_path):
    spec, data = _spec(tmp_path, CONTACTS, "contacts", _contacts())
    sync = spec.syncs[0]
    resource = HubSpotResource(base_url=sandbox_url, token=DEFAULT_TOKENS["hubspot"])
    valid = validate_partition(sync, pd.DataFrame(_contacts())).valid
    report = run_upsert(sync, valid, resource, store, partition=DAY)
    assert (report.created, report.failed) == (1, 1)
    entry = store.quarantine_frame(sync.name).set_index("source_key").loc["C-1"]
    assert (entry["stage"], bool(entry["transient"])) == ("crm", False)
    # the quarantine keeps the digest the sync state would keep: the one validation made
    assert entry["payload_digest"] == valid.set_index("_key").loc["C-1", DIGEST]
    return sync, data, resource


def test_a_replayed_permanent_failure_is_resent_only_once_its_row_changed(
        sandbox, sandbox_url, store, tmp_path):
    sync, data, resource = _refused_once(sandbox_url, store, tmp_path)
    source = SourceResource(data_dir=str(data))
    before = _requests(sandbox)
    report = replay_sync(sync, source, resource, store)
    assert (report.unchanged_permanent, report.resent) == (1, None)
    assert _requests(sandbox) == before  # same digest: nothing sent

    pd.DataFrame(_contacts(last="King")).to_csv(data / "contacts.csv", index=False)
    report = replay_sync(sync, source, resource, store)
    assert report.unchanged_permanent == 0 and report.resent.rows_in == 1
    assert _requests(sandbox) > before  # changed: sent again (and refused again)


def test_state_and_quarantine_entries_of_older_versions_are_recognised_as_unchanged(
        sandbox, sandbox_url, store, tmp_path):
    sync, data, resource = _refused_once(sandbox_url, store, tmp_path)
    valid = validate_partition(sync, pd.DataFrame(_contacts())).valid.set_index("_key")
    # What older versions wrote: sha256 payload hashes, in the state and in the quarantine.
    (crm_id, _), = store.get_state(sync.name, ["C-2"]).values()
    store.record_results(sync.name, succeeded=["C-2"], quarantined=[], state_rows=[
        ("C-2", crm_id, legacy_payload_hash(valid.loc["C-2", PAYLOAD]))])
    store.record_results(sync.name, succeeded=[], quarantined=[QuarantineEntry(
        "C-1", "crm", "INVALID_OPTION", "refused", partition=DAY,
        payload_digest=legacy_payload_hash(valid.loc["C-1", PAYLOAD]))])
    before = _requests(sandbox)
    replayed = replay_sync(sync, SourceResource(data_dir=str(data)), resource, store)
    assert (replayed.unchanged_permanent, replayed.resent) == (1, None)
    report = run_upsert(sync, valid.reset_index().loc[lambda f: f["_key"] == "C-2"], resource,
                        store, partition=DAY)
    assert (report.unchanged, report.sent) == (1, 0)
    assert _requests(sandbox) == before  # nothing resent after the upgrade
    assert store.get_state(sync.name, ["C-2"])["C-2"][1] == valid.loc["C-2", DIGEST]
