"""Mirror syncs: the three sandbox delete endpoints (shapes, limits, auth), the connectors'
`delete`, the source's `all_keys`, the store's `forget`, and `mode: mirror` end to end with
Dagster: a row removed from the source takes its CRM record with it, and nothing else."""

from __future__ import annotations

import asyncio
import json

import dagster as dg
import duckdb
import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from hubspot import HubSpot
from hubspot.crm.contacts import BatchInputSimplePublicObjectId, SimplePublicObjectId

from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.sync_steps import sync_asset_names, sync_run_config
from crm_sync.connectors.brevo import BrevoResource
from crm_sync.connectors.hubspot import HubSpotResource
from crm_sync.connectors.salesforce import SalesforceResource
from crm_sync.definitions import build_resources
from crm_sync.load.mirror import QUARANTINE_PATH, mirror_deletes
from crm_sync.state.quarantine import QuarantineEntry, day_of
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.sandbox.salesforce import case_safe_suffix
from crm_sync.extract.sources import SourceError, SourceResource
from crm_sync.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT, SpecError, load_spec
from crm_sync.state.store import SyncStore
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.conftest import stored
from crm_sync_tests.bundled_spec import bundled_raw, bundled_unlinked

HUBSPOT_AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['hubspot']}"}
SALESFORCE_AUTH = {"Authorization": f"Bearer {DEFAULT_TOKENS['salesforce']}"}
BREVO_AUTH = {"api-key": DEFAULT_TOKENS["brevo"]}
DAYS = ["2026-11-02", "2026-11-03"]
SF_DELETE = "/services/data/v62.0/composite/sobjects"
SF_UPSERT = "/services/data/v62.0/composite/sobjects/Account/External_Id__c"


def _counter(sandbox: httpx.Client, name: str) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get(name, 0)


# -- HubSpot: POST /crm/v3/objects/{objectType}/batch/archive ---------------------------------
def _hubspot_contacts(sandbox: httpx.Client, n: int, start: int = 0) -> list[str]:
    inputs = [{"id": f"ada{i}@example.com", "idProperty": "email",
               "properties": {"email": f"ada{i}@example.com", "lastname": "Lovelace"}}
              for i in range(start, start + n)]
    response = sandbox.post("/crm/v3/objects/contacts/batch/upsert", headers=HUBSPOT_AUTH,
                            json={"inputs": inputs})
    assert response.status_code == 200, response.text
    by_email = {r["properties"]["email"]: r["id"] for r in response.json()["results"]}
    return [by_email[i["id"]] for i in inputs]


def _archive(sandbox: httpx.Client, ids, obj: str = "contacts", headers=HUBSPOT_AUTH):
    return sandbox.post(f"/crm/v3/objects/{obj}/batch/archive", headers=headers,
                        json={"inputs": [{"id": i} for i in ids]})


def test_hubspot_archive_answers_204_and_drops_records_and_their_unique_values(sandbox):
    ids = _hubspot_contacts(sandbox, 3)
    response = _archive(sandbox, ids[:2])
    assert response.status_code == 204 and response.content == b""
    assert "X-HubSpot-RateLimit-Remaining" in response.headers
    assert [r["id"] for r in stored(sandbox, "hubspot", "contacts")] == [ids[2]]
    assert sandbox.get(f"/crm/v3/objects/contacts/{ids[0]}", headers=HUBSPOT_AUTH) \
        .status_code == 404
    # The archived contacts' emails are free again: an upsert by them creates new records.
    again = _hubspot_contacts(sandbox, 1)
    assert again[0] not in ids
    # Archiving is idempotent: ids already archived, or never there, still answer 204.
    assert _archive(sandbox, [ids[0], "99999999999"]).status_code == 204
    assert len(stored(sandbox, "hubspot", "contacts")) == 2


def test_hubspot_archive_limits_shapes_and_auth(sandbox):
    too_many = _archive(sandbox, [str(10_000_000_000 + i) for i in range(101)])
    assert too_many.status_code == 400
    assert too_many.json()["message"].startswith("The maximum number of inputs supported in a "
                                                 "batch request is 100")
    assert _archive(sandbox, [str(10_000_000_000 + i) for i in range(100)]).status_code == 204
    for body in ({"inputs": []}, {"inputs": [{"id": 17}]}, {"inputs": [{"id": ""}]},
                 {"inputs": [{"id": "1", "idProperty": "email"}]}, {"ids": ["1"]}):
        response = sandbox.post("/crm/v3/objects/contacts/batch/archive", headers=HUBSPOT_AUTH,
                                json=body)
        assert response.status_code == 400, body
        assert response.json()["category"] == "VALIDATION_ERROR"
    unknown = _archive(sandbox, ["1"], obj="widgets")
    assert unknown.status_code == 400 and "category" not in unknown.json()
    assert unknown.json()["message"] == "Unable to infer object type from: widgets"
    denied = _archive(sandbox, ["1"], headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()["category"] == "INVALID_AUTHENTICATION"


def test_hubspots_official_sdk_archives_in_the_sandbox(sandbox, sandbox_url):
    ids = _hubspot_contacts(sandbox, 2)
    client = HubSpot(access_token=DEFAULT_TOKENS["hubspot"], host=sandbox_url)
    client.crm.contacts.batch_api.archive(batch_input_simple_public_object_id=(
        BatchInputSimplePublicObjectId(inputs=[SimplePublicObjectId(id=ids[0])])))
    assert [r["id"] for r in stored(sandbox, "hubspot", "contacts")] == [ids[1]]


# -- Salesforce: DELETE /services/data/vXX.X/composite/sobjects?ids=... ------------------------
def _accounts(sandbox: httpx.Client, *ext_ids: str) -> list[str]:
    records = [{"attributes": {"type": "Account"}, "External_Id__c": e, "Name": f"Acme {e}"}
               for e in ext_ids]
    response = sandbox.patch(SF_UPSERT, headers=SALESFORCE_AUTH, json={"records": records})
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()]


def _sf_delete(sandbox: httpx.Client, ids, all_or_none: str | None = None, version="62.0",
               headers=SALESFORCE_AUTH) -> httpx.Response:
    params = {"ids": ",".join(ids)}
    if all_or_none is not None:
        params["allOrNone"] = all_or_none
    return sandbox.delete(f"/services/data/v{version}/composite/sobjects", headers=headers,
                          params=params)


def _unknown_account_id() -> str:
    id15 = "0015g0ZZZZZZZZZ"
    return id15 + case_safe_suffix(id15)


def test_salesforce_delete_gives_delete_results_in_the_order_of_the_ids(sandbox):
    a, b, c = _accounts(sandbox, "A", "B", "C")
    response = _sf_delete(sandbox, [b, a], all_or_none="false")
    assert response.status_code == 200
    assert response.json() == [{"id": b, "success": True, "errors": []},
                               {"id": a, "success": True, "errors": []}]
    assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")
    assert [r["Id"] for r in stored(sandbox, "salesforce", "Account")] == [c]

    # Deleted again: ENTITY_IS_DELETED; malformed: MALFORMED_ID without an id (the docs'
    # example); well formed but never there: INVALID_CROSS_REFERENCE_KEY. allOrNone defaults
    # to false, so the good id in between is deleted.
    unknown = _unknown_account_id()
    results = _sf_delete(sandbox, [a, "001RM000003oLrB000", c, unknown]).json()
    assert results == [
        {"id": a, "success": False, "errors": [
            {"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}]},
        {"success": False, "errors": [{"statusCode": "MALFORMED_ID",
                                       "message": "malformed id 001RM000003oLrB000",
                                       "fields": []}]},
        {"id": c, "success": True, "errors": []},
        {"id": unknown, "success": False, "errors": [
            {"statusCode": "INVALID_CROSS_REFERENCE_KEY",
             "message": "invalid cross reference id", "fields": []}]},
    ]
    assert stored(sandbox, "salesforce", "Account") == []
    # The external ids are free again: an upsert by them creates new records.
    created = sandbox.patch(SF_UPSERT, headers=SALESFORCE_AUTH, json={"records": [
        {"attributes": {"type": "Account"}, "External_Id__c": "A", "Name": "Acme"}]}).json()
    assert created[0]["created"] is True and created[0]["id"] not in (a, b, c)


def test_salesforce_delete_all_or_none_and_15_character_ids(sandbox):
    a, b = _accounts(sandbox, "A", "B")
    rolled = _sf_delete(sandbox, [a, _unknown_account_id()], all_or_none="true").json()
    assert rolled[0] == {"id": a, "success": False, "errors": [{
        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "message": "Record rolled back because not all records were valid and the request was "
                   "using AllOrNone header", "fields": []}]}
    assert rolled[1]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert len(stored(sandbox, "salesforce", "Account")) == 2
    done = _sf_delete(sandbox, [a[:15], b], all_or_none="true").json()
    assert done == [{"id": a, "success": True, "errors": []},
                    {"id": b, "success": True, "errors": []}]


def test_salesforce_delete_keeps_a_shared_external_id_indexed_for_the_other_record(sandbox):
    ids = [sandbox.post("/services/data/v62.0/sobjects/Account/", headers=SALESFORCE_AUTH,
                        json={"Name": f"Acme {i}", "External_Id__c": "SHARED"}).json()["id"]
           for i in range(2)]
    assert _sf_delete(sandbox, [ids[0]]).json()[0]["success"] is True
    result = sandbox.patch(SF_UPSERT, headers=SALESFORCE_AUTH, json={"records": [
        {"attributes": {"type": "Account"}, "External_Id__c": "shared", "Name": "Kept"}]}).json()
    assert result == [{"id": ids[1], "success": True, "errors": [], "created": False}]


def test_salesforce_delete_limits_versions_and_auth(sandbox):
    ids = [_unknown_account_id()] * 201
    too_many = _sf_delete(sandbox, ids)
    assert too_many.status_code == 400
    assert too_many.json() == [{"message": "record limit reached. cannot submit more than 200 "
                                           "records into this call",
                                "errorCode": "EXCEEDED_ID_LIMIT"}]
    assert _sf_delete(sandbox, ids[:200]).status_code == 200
    missing = sandbox.delete(SF_DELETE, headers=SALESFORCE_AUTH)
    assert missing.status_code == 400 and missing.json()[0]["errorCode"] == "MISSING_ARGUMENT"
    assert _sf_delete(sandbox, ids[:1], all_or_none="maybe").status_code == 400
    assert _sf_delete(sandbox, ids[:1], version="41.0").status_code == 404  # 42.0 and later
    assert _sf_delete(sandbox, ids[:1], version="42.0").status_code == 200
    denied = _sf_delete(sandbox, ids[:1], headers={"Authorization": "Bearer nope"})
    assert denied.status_code == 401 and denied.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_salesforce_delete_spends_the_daily_allowance(sandbox):
    sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 1}).raise_for_status()
    try:
        assert _sf_delete(sandbox, [_unknown_account_id()]).status_code == 200
        spent = _sf_delete(sandbox, [_unknown_account_id()])
        assert spent.status_code == 403
        assert spent.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    finally:
        sandbox.post("/_sandbox/limits", json={"salesforce_daily_limit": 100_000})


# -- Brevo: POST /v3/objects/{object_type}/batch/delete ----------------------------------------
@pytest.fixture
def brevo(sandbox):
    defaults = {"process_steps": 2, "rate_limit": None}
    sandbox.post("/_sandbox/brevo/settings", json=defaults).raise_for_status()
    yield sandbox
    sandbox.post("/_sandbox/brevo/settings", json=defaults)


def _finish(sandbox: httpx.Client, process_id: int) -> dict:
    for _ in range(10):
        body = sandbox.get(f"/v3/processes/{process_id}", headers=BREVO_AUTH).json()
        if body["status"] in ("completed", "failed"):
            return body
    raise AssertionError(f"process {process_id} never finished")


def _brevo_upsert(sandbox: httpx.Client, records: list[dict], obj: str = "project") -> None:
    response = sandbox.post(f"/v3/objects/{obj}/batch/upsert", headers=BREVO_AUTH,
                            json={"records": records})
    assert response.status_code == 202, response.text
    assert _finish(sandbox, response.json()["processId"])["status"] == "completed"


def _brevo_delete(sandbox: httpx.Client, identifiers, obj: str = "project", headers=BREVO_AUTH):
    return sandbox.post(f"/v3/objects/{obj}/batch/delete", headers=headers,
                        json={"identifiers": identifiers})


def _projects(sandbox) -> dict[str, int]:
    return {r["identifiers"]["ext_id"]: r["identifiers"]["id"]
            for r in stored(sandbox, "brevo", "project")}


def test_brevo_batch_delete_is_a_process_that_deletes_when_it_completes(brevo):
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": f"PR-{i}"}, "attributes": {"name": f"P{i}"}}
                          for i in range(4)])
    ids = _projects(brevo)
    response = _brevo_delete(brevo, {"ids": [ids["PR-0"], ids["PR-1"]]})
    assert response.status_code == 202
    assert set(response.json()) == {"message", "processId"}
    assert len(_projects(brevo)) == 4  # nothing happens before the process completes
    done = _finish(brevo, response.json()["processId"])
    assert done == {"id": response.json()["processId"], "name": "OBJECT_RECORDS_DELETE",
                    "status": "completed"}
    assert set(_projects(brevo)) == {"PR-2", "PR-3"}

    by_ext = _brevo_delete(brevo, {"ext_ids": ["PR-2", "PR-404"]})
    assert by_ext.status_code == 202
    _finish(brevo, by_ext.json()["processId"])
    assert set(_projects(brevo)) == {"PR-3"}
    details = brevo.get(f"/_sandbox/brevo/processes/{by_ext.json()['processId']}").json()
    assert details["written"] == 1  # PR-404 had no record: skipped, the process completes
    assert details["rejected"] == [{"identifiers": {"ext_id": "PR-404"},
                                    "reason": "no such record"}]
    # The ext_id is free again: an upsert by it creates a record with a new id.
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": "PR-0"}, "attributes": {"name": "again"}}])
    assert _projects(brevo)["PR-0"] not in ids.values()


def test_brevo_batch_delete_removes_the_links_on_the_other_side(brevo):
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": "V-1"}, "attributes": {"name": "Vendor"}}],
                  obj="vendor")
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": "PR-1"}, "attributes": {"name": "P"},
                           "associations": [{"object_type": "vendor", "records": [
                               {"identifiers": {"ext_id": "V-1"}}]}]}])
    [vendor] = stored(brevo, "brevo", "vendor")
    assert vendor["associations"] == {"project": [_projects(brevo)["PR-1"]]}
    _finish(brevo, _brevo_delete(brevo, {"ext_ids": ["PR-1"]}).json()["processId"])
    [vendor] = stored(brevo, "brevo", "vendor")
    assert vendor.get("associations", {}) == {}


@pytest.mark.parametrize("body, status, code", [
    ({"identifiers": {"ids": [1], "ext_ids": ["x"]}}, 400, "invalid_parameter"),
    ({"identifiers": {}}, 400, "missing_parameter"),
    ({}, 400, "missing_parameter"),
    ({"identifiers": {"ids": []}}, 400, "out_of_range"),
    ({"identifiers": {"ids": list(range(1, 1002))}}, 400, "out_of_range"),
    ({"identifiers": {"ids": [0]}}, 400, "invalid_parameter"),
    ({"identifiers": {"ext_ids": [""]}}, 400, "invalid_parameter"),
    ({"identifiers": {"id": [1]}}, 400, "invalid_parameter"),
])
def test_brevo_batch_delete_refuses_bad_requests(brevo, body, status, code):
    response = brevo.post("/v3/objects/project/batch/delete", headers=BREVO_AUTH, json=body)
    assert (response.status_code, response.json()["code"]) == (status, code)


def test_brevo_batch_delete_limits_objects_and_auth(brevo):
    accepted = _brevo_delete(brevo, {"ids": list(range(1, 1001))})
    assert accepted.status_code == 202  # 1000 ids: the documented maximum
    standard = _brevo_delete(brevo, {"ids": [1]}, obj="company")
    assert (standard.status_code, standard.json()["code"]) == (403, "permission_denied")
    unknown = _brevo_delete(brevo, {"ids": [1]}, obj="widget")
    assert unknown.status_code == 400 and unknown.json()["message"] == "invalid object type"
    denied = _brevo_delete(brevo, {"ids": [1]}, headers={"api-key": "nope"})
    assert denied.status_code == 401 and denied.json()["code"] == "unauthorized"
    assert _counter(brevo, "requests POST brevo batch/delete") == 4


# -- the connectors' delete ---------------------------------------------------------------------
def _hubspot(url: str, **options) -> HubSpotResource:
    return HubSpotResource(base_url=url, token=DEFAULT_TOKENS["hubspot"], **options)


def _salesforce(url: str, **options) -> SalesforceResource:
    return SalesforceResource(base_url=url, token=DEFAULT_TOKENS["salesforce"], **options)


def _brevo(url: str, **options) -> BrevoResource:
    return BrevoResource(base_url=url, token=DEFAULT_TOKENS["brevo"], poll_interval_seconds=0.01,
                         max_poll_interval_seconds=0.05, requests_per_window=200, **options)


async def _connector_delete(resource, sync: str, ids: list[str]):
    async with resource.open(bundled_unlinked().sync(sync)) as connector:
        return await connector.delete(ids), connector.core.stats.requests


def test_hubspot_connector_deletes_in_batches_of_100_and_twice_is_harmless(sandbox, sandbox_url):
    ids = _hubspot_contacts(sandbox, 100) + _hubspot_contacts(sandbox, 50, start=100)
    outcomes, requests = asyncio.run(_connector_delete(_hubspot(sandbox_url),
                                                       "contacts_to_hubspot", ids))
    assert requests == 2 and stored(sandbox, "hubspot", "contacts") == []
    assert sorted(o.key for o in outcomes) == sorted(ids)
    assert {(o.status, o.crm_id == o.key, o.ok) for o in outcomes} == {("deleted", True, True)}
    again, _ = asyncio.run(_connector_delete(_hubspot(sandbox_url), "contacts_to_hubspot",
                                             ids[:3]))
    assert {o.status for o in again} == {"deleted"}


def test_salesforce_connector_deletes_in_batches_of_200_and_twice_is_harmless(sandbox,
                                                                              sandbox_url):
    ids = _accounts(sandbox, *(f"E{i}" for i in range(200))) + _accounts(sandbox, "E200")
    outcomes, requests = asyncio.run(_connector_delete(_salesforce(sandbox_url),
                                                       "companies_to_salesforce", ids))
    assert requests == 2 and stored(sandbox, "salesforce", "Account") == []
    assert {o.status for o in outcomes} == {"deleted"} and len(outcomes) == 201
    unknown = _unknown_account_id()
    again, _ = asyncio.run(_connector_delete(_salesforce(sandbox_url),
                                             "companies_to_salesforce", [ids[0], unknown]))
    by_id = {o.key: o for o in again}
    assert by_id[ids[0]].status == "deleted"  # ENTITY_IS_DELETED: already gone, that is done
    assert (by_id[unknown].status, by_id[unknown].error_code, by_id[unknown].transient) == \
        ("failed", "INVALID_CROSS_REFERENCE_KEY", False)


def test_brevo_connector_deletes_by_id_confirms_by_reading_back(brevo, sandbox_url):
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": f"PR-{i}"}, "attributes": {"name": f"P{i}"}}
                          for i in range(3)])
    ids = [str(i) for i in _projects(brevo).values()]
    outcomes, _ = asyncio.run(_connector_delete(_brevo(sandbox_url), "projects_to_brevo",
                                                ids[:2] + ["x1"]))
    by_id = {o.key: o for o in outcomes}
    assert {by_id[i].status for i in ids[:2]} == {"deleted"}
    assert (by_id["x1"].status, by_id["x1"].error_code) == ("failed", "INVALID_ID")
    assert list(_projects(brevo)) == ["PR-2"]
    again, _ = asyncio.run(_connector_delete(_brevo(sandbox_url), "projects_to_brevo", ids[:1]))
    assert [o.status for o in again] == ["deleted"]


def test_a_failed_brevo_delete_process_fails_transient(brevo, sandbox_url):
    _brevo_upsert(brevo, [{"identifiers": {"ext_id": "PR-1"}, "attributes": {"name": "P"}}])
    brevo.post("/_sandbox/faults", json={"brevo_failed_processes": 1.0}).raise_for_status()
    outcomes, _ = asyncio.run(_connector_delete(_brevo(sandbox_url), "projects_to_brevo",
                                                [str(_projects(brevo)["PR-1"])]))
    assert [(o.status, o.error_code, o.transient) for o in outcomes] == \
        [("failed", "PROCESS_FAILED", True)]
    assert list(_projects(brevo)) == ["PR-1"]


def test_a_refused_token_stops_a_delete_without_showing_it(sandbox, sandbox_url):
    from crm_sync.connectors.core import FatalCrmError

    resource = HubSpotResource(base_url=sandbox_url, token="secret-token-123")
    with pytest.raises(FatalCrmError, match="HUBSPOT_TOKEN") as caught:
        asyncio.run(_connector_delete(resource, "contacts_to_hubspot", ["1"]))
    assert "secret-token-123" not in str(caught.value)


# -- sources and store -------------------------------------------------------------------------
def test_all_keys_from_csv_parquet_duckdb_and_sql(tmp_path):
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    expected = set(leads["lead_id"])
    assert SourceResource().all_keys("leads", "lead_id") == expected
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    csv_path = str(PROJECT_ROOT / "data" / "leads.csv").replace("'", "''")
    target = str(parquet / "leads.parquet").replace("'", "''")
    duckdb.execute(f"COPY (SELECT * FROM read_csv('{csv_path}', all_varchar=true) LIMIT 10) "
                   f"TO '{target}' (FORMAT parquet)")
    assert SourceResource(data_dir=str(parquet)).all_keys("leads", "lead_id") == \
        set(leads.head(10)["lead_id"])
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE leads AS SELECT * FROM leads")
        conn.execute("CREATE TABLE numbered AS SELECT * FROM (VALUES (1), (2), (NULL)) t(n)")
    assert SourceResource(duckdb_path=str(db)).all_keys("leads", "lead_id") == expected
    assert SourceResource(duckdb_path=str(db)).all_keys("numbered", "n") == {"1", "2"}
    url = f"sqlite:///{tmp_path / 'crm.sqlite'}"
    engine = sa.create_engine(url)
    leads.to_sql("leads", engine, index=False)
    pd.DataFrame({"n": [1, 2, None]}, dtype="Int64").to_sql("numbered", engine, index=False)
    engine.dispose()
    assert SourceResource(url=url).all_keys("leads", "lead_id") == expected
    assert SourceResource(url=url).all_keys("numbered", "n") == {"1", "2"}
    with pytest.raises(SourceError, match="invalid table or column"):
        SourceResource().all_keys("leads", "lead_id; drop table x")
    with pytest.raises(SourceError, match="not found"):
        SourceResource(data_dir=str(tmp_path)).all_keys("invoices", "id")


def test_forget_drops_state_and_quarantine_entries_in_one_go(tmp_path):
    store = SyncStore(tmp_path / "store.sqlite")
    store.record_results("s", [], [QuarantineEntry("b", "crm", "X", "m")],
                         state_rows=[("a", "1", "h"), ("b", "2", "h"), ("c", "3", "h")])
    store.record_results("t", [], [], state_rows=[("a", "9", "h")])
    assert store.forget("s", ["a", "b", "zz"]) == 2
    assert list(store.state_frame("s")["source_key"]) == ["c"]
    assert store.quarantine_frame("s").empty
    assert list(store.state_frame("t")["source_key"]) == ["a"]  # other syncs untouched


# -- the spec ----------------------------------------------------------------------------------
def _spec_file(tmp_path, sync: str, mode: str):
    raw = bundled_raw()
    for entry in raw["syncs"]:
        if entry["name"] == sync:
            entry["mode"] = mode
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_superleap_mirror_sync_is_refused_at_load_time_with_the_reason(tmp_path, store):
    with pytest.raises(SpecError) as caught:
        load_spec(_spec_file(tmp_path, "leads_to_superleap", "mirror"))
    message = str(caught.value)
    assert "sync 'leads_to_superleap'" in message and "mode 'mirror'" in message
    assert "Superleap documents no API to delete records" in message
    for sync in ("contacts_to_hubspot", "companies_to_salesforce", "projects_to_brevo"):
        assert load_spec(_spec_file(tmp_path, sync, "mirror")).sync(sync).mode == "mirror"
    # A spec built in code without validation is refused when the mirror step runs.
    sneaky = bundled_unlinked().sync("leads_to_superleap").model_copy(update={"mode": "mirror"})
    with pytest.raises(SpecError, match="Superleap documents no API to delete"):
        mirror_deletes(sneaky, SourceResource(), None, store)


# -- mode: mirror, end to end with Dagster -----------------------------------------------------
CASES = {
    # crm: (sync, table, source key, sandbox object, the record's source key)
    "hubspot": ("contacts_to_hubspot", "contacts", "contact_id", "contacts",
                lambda r: r["properties"]["crm_sync_id"]),
    "salesforce": ("companies_to_salesforce", "companies", "company_id", "Account",
                   lambda r: r["External_Id__c"]),
    "brevo": ("projects_to_brevo", "projects", "project_id", "project",
              lambda r: r["identifiers"]["ext_id"]),
}


def _valid_rows(sync: str, table: str, per_day: int) -> pd.DataFrame:
    """`per_day` rows of each of DAYS that pass validation, from the bundled data."""
    spec = bundled_unlinked().sync(sync)
    frame = pd.read_csv(PROJECT_ROOT / "data" / f"{table}.csv", dtype=str, keep_default_na=False)
    if "custom_fields" in frame:
        frame["custom_fields"] = ""  # keep Brevo records small
    if "email" in frame:
        frame = frame.drop_duplicates("email", keep=False)
    picked = []
    for day in DAYS:
        rows = frame[frame["updated_at"].str.startswith(day)]
        bad = {f.source_key for f in validate_partition(spec, rows).failures}
        picked.append(rows[~rows[spec.source_key].isin(bad)].head(per_day))
    return pd.concat(picked, ignore_index=True)


def _mirror_spec(sync: str):
    plain = bundled_unlinked()
    return plain.model_copy(update={"syncs": [
        s.model_copy(update={"mode": "mirror"}) if s.name == sync else s for s in plain.syncs]})


def _resources(data_dir, sandbox_url):
    resources = {**build_resources(), "source": SourceResource(data_dir=str(data_dir))}
    resources["brevo"] = BrevoResource(base_url=sandbox_url, token=dg.EnvVar("BREVO_API_KEY"),
                                       poll_interval_seconds=0.01,
                                       max_poll_interval_seconds=0.05)
    return resources


def _materialize(spec, sync: str, table: str, day: str, resources, dry_run: bool = False):
    steps = sync_asset_names(spec.sync(sync))  # with the mirror step of a mirror sync
    assets = [a for a in build_assets(spec) if a.key.path[0] in steps]
    # These tests remove a large share of a few rows on purpose: the run config allows it
    # (a run without it refuses to delete more than mirror_max_delete_share: test_real_data_safety).
    config = {"ops": sync_run_config(spec.sync(sync), dry_run=dry_run, allow_mass_delete=True)}
    result = dg.materialize(assets, partition_key=day, resources=resources, run_config=config)
    assert result.success
    # the upsert's counts, and the mirror step's (deleted, delete_failed / would_delete)
    mirrored = result.asset_materializations_for_node(f"{sync}_mirror")
    assert len(mirrored) == (spec.sync(sync).mode == "mirror")
    return {**result.asset_materializations_for_node(sync)[0].metadata,
            **(mirrored[0].metadata if mirrored else {})}


@pytest.mark.parametrize("crm", ["hubspot", "salesforce", "brevo"])
def test_a_row_removed_from_the_source_takes_its_crm_record_with_it(crm, brevo, store, tmp_path,
                                                                   sandbox_url):
    sync, table, key, obj, record_key = CASES[crm]
    rows = _valid_rows(sync, table, per_day=3)
    data = tmp_path / "data"
    data.mkdir()
    rows.to_csv(data / f"{table}.csv", index=False)
    spec, resources = _mirror_spec(sync), _resources(data, sandbox_url)
    for day in DAYS:
        meta = _materialize(spec, sync, table, day, resources)
        assert meta["created"].value == 3 and meta["deleted"].value == 0
    before = {record_key(r): r for r in stored(brevo, crm, obj)}
    assert set(before) == set(rows[key])

    # One row of each day leaves the source; only the second day is materialized again: the
    # mirror step looks at the whole table, not at the partition.
    removed = {rows[key][0], rows[key][3]}
    rows[~rows[key].isin(removed)].to_csv(data / f"{table}.csv", index=False)
    meta = _materialize(spec, sync, table, DAYS[1], resources)
    assert (meta["deleted"].value, meta["delete_failed"].value) == (2, 0)
    assert meta["unchanged"].value == 2 and meta["sent"].value == 0
    after = {record_key(r): r for r in stored(brevo, crm, obj)}
    assert set(after) == set(rows[key]) - removed
    assert all(after[k] == before[k] for k in after)  # the others are untouched
    assert set(store.state_frame(sync)["source_key"]) == set(rows[key]) - removed
    assert store.quarantine_frame(sync).empty

    meta = _materialize(spec, sync, table, DAYS[1], resources)
    assert meta["deleted"].value == 0 and len(stored(brevo, crm, obj)) == 4


def test_a_dry_run_reports_what_it_would_delete_and_deletes_nothing(sandbox, store, tmp_path,
                                                                    sandbox_url):
    sync, table, key, obj, record_key = CASES["hubspot"]
    rows = _valid_rows(sync, table, per_day=2)
    data = tmp_path / "data"
    data.mkdir()
    rows.to_csv(data / f"{table}.csv", index=False)
    spec, resources = _mirror_spec(sync), _resources(data, sandbox_url)
    for day in DAYS:
        _materialize(spec, sync, table, day, resources)
    rows.iloc[1:].to_csv(data / f"{table}.csv", index=False)

    meta = _materialize(spec, sync, table, DAYS[1], resources, dry_run=True)
    assert meta["would_delete"].value == 1 and "deleted" not in meta
    assert len(stored(sandbox, "hubspot", obj)) == 4
    assert len(store.state_frame(sync)) == 4
    assert _counter(sandbox, "requests POST hubspot batch/archive") == 0

    meta = _materialize(spec, sync, table, DAYS[1], resources)
    assert meta["deleted"].value == 1 and "would_delete" not in meta
    assert {record_key(r) for r in stored(sandbox, "hubspot", obj)} == set(rows[key][1:])


def test_other_modes_never_delete(sandbox, store, tmp_path, sandbox_url):
    sync, table, key, obj, _ = CASES["hubspot"]
    rows = _valid_rows(sync, table, per_day=2)
    data = tmp_path / "data"
    data.mkdir()
    rows.to_csv(data / f"{table}.csv", index=False)
    spec, resources = bundled_unlinked(), _resources(data, sandbox_url)
    _materialize(spec, sync, table, DAYS[0], resources)
    rows.iloc[1:].to_csv(data / f"{table}.csv", index=False)
    meta = _materialize(spec, sync, table, DAYS[0], resources)
    assert "deleted" not in meta and len(stored(sandbox, "hubspot", obj)) == 2


# -- the mirror step on its own: failures, shared records, an empty source --------------------
def _synced(sync: str, table: str, resource, store, data, per_day: int = 2):
    """Sync a few valid rows straight through run_upsert; (spec, rows, source resource)."""
    spec = _mirror_spec(sync).sync(sync)
    rows = _valid_rows(sync, table, per_day=per_day)
    rows.to_csv(data / f"{table}.csv", index=False)
    report = run_upsert(spec, validate_partition(spec, rows).valid, resource, store)
    assert report.created == len(rows)
    return spec, rows, SourceResource(data_dir=str(data))


def test_a_failed_deletion_is_quarantined_and_kept_until_it_succeeds(sandbox, store, tmp_path,
                                                                     sandbox_url):
    resource = _salesforce(sandbox_url)
    spec, rows, source = _synced("companies_to_salesforce", "companies", resource, store,
                                 tmp_path)
    gone = rows["company_id"][0]
    real_id, digest = store.get_state(spec.name, [gone])[gone]
    store.record_results(spec.name, [], [], state_rows=[(gone, _unknown_account_id(), digest)])
    rows.iloc[1:].to_csv(tmp_path / "companies.csv", index=False)

    report = mirror_deletes(spec, source, resource, store, allow_mass_delete=True)
    assert (report.candidates, report.deleted, report.failed) == (1, 0, 1)
    assert report.failed_by_code == {"INVALID_CROSS_REFERENCE_KEY": 1}
    [entry] = store.quarantine_frame(spec.name).to_dict("records")
    # its path says mirror; its partition is the gone row's day (the state keeps updated_at)
    assert (entry["source_key"], entry["stage"], entry["error_code"], entry["transient"],
            entry["path"], entry["partition"]) == (gone, "crm", "INVALID_CROSS_REFERENCE_KEY", 0,
                                                   QUARANTINE_PATH, day_of(rows["updated_at"][0]))
    assert "deleting salesforce Account record" in entry["message"]
    assert "invalid cross reference id" in entry["message"]
    assert json.loads(entry["payload"]) == {"operation": "delete",
                                            "crm_id": _unknown_account_id()}
    assert gone in set(store.state_frame(spec.name)["source_key"])  # nothing is lost

    store.record_results(spec.name, [], [], state_rows=[(gone, real_id, digest)])
    report = mirror_deletes(spec, source, resource, store, allow_mass_delete=True)
    assert (report.deleted, report.failed) == (1, 0)
    assert store.quarantine_frame(spec.name).empty
    assert {r["External_Id__c"] for r in stored(sandbox, "salesforce", "Account")} == \
        set(rows["company_id"][1:])


def test_a_transient_failure_is_quarantined_transient_and_the_next_run_deletes(
        sandbox, store, tmp_path, sandbox_url):
    spec, rows, source = _synced("contacts_to_hubspot", "contacts", _hubspot(sandbox_url),
                                 store, tmp_path)
    rows.iloc[1:].to_csv(tmp_path / "contacts.csv", index=False)
    sandbox.post("/_sandbox/faults", json={"rate_503": 1.0}).raise_for_status()
    report = mirror_deletes(spec, source, _hubspot(sandbox_url, max_attempts=1), store,
                            allow_mass_delete=True)
    assert (report.failed, report.failed_transient, report.failed_by_code) == \
        (1, 1, {"HTTP_503": 1})
    assert bool(store.quarantine_frame(spec.name)["transient"].iloc[0]) is True
    sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    report = mirror_deletes(spec, source, _hubspot(sandbox_url), store, allow_mass_delete=True)
    assert report.deleted == 1 and store.quarantine_frame(spec.name).empty
    assert len(stored(sandbox, "hubspot", "contacts")) == 3


def test_a_record_another_row_still_maps_to_is_not_deleted(sandbox, store, tmp_path,
                                                           sandbox_url):
    spec, rows, source = _synced("contacts_to_hubspot", "contacts", _hubspot(sandbox_url),
                                 store, tmp_path)
    kept = rows["contact_id"][0]
    crm_id, digest = store.get_state(spec.name, [kept])[kept]
    # An old row, gone from the source, had matched the same HubSpot record (same email).
    store.record_results(spec.name, [], [], state_rows=[("CT-OLD", crm_id, digest)])
    report = mirror_deletes(spec, source, _hubspot(sandbox_url), store)
    assert (report.candidates, report.forgotten, report.deleted, report.requests) == (1, 1, 0, 0)
    assert len(stored(sandbox, "hubspot", "contacts")) == 4
    assert "CT-OLD" not in set(store.state_frame(spec.name)["source_key"])


def test_an_empty_source_table_deletes_nothing(sandbox, store, tmp_path, sandbox_url):
    spec, rows, source = _synced("contacts_to_hubspot", "contacts", _hubspot(sandbox_url),
                                 store, tmp_path)
    rows.head(0).to_csv(tmp_path / "contacts.csv", index=False)
    said = []
    report = mirror_deletes(spec, source, _hubspot(sandbox_url), store, log=said.append)
    assert report.candidates == 4 and report.deleted == 0 and "holds no rows" in report.skipped
    assert said and len(stored(sandbox, "hubspot", "contacts")) == 4


def test_the_sandbox_counts_delete_requests_per_endpoint(brevo):
    _archive(brevo, ["1"])
    _sf_delete(brevo, [_unknown_account_id()])
    _brevo_delete(brevo, {"ids": [1]})
    counters = brevo.get("/_sandbox/stats").json()["counters"]
    assert counters["requests POST hubspot batch/archive"] == 1
    assert counters["requests DELETE salesforce composite"] == 1
    assert counters["requests POST brevo batch/delete"] == 1

