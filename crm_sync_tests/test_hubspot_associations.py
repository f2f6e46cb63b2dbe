"""HubSpot relationships through the connector (crm_sync/connectors/hubspot_associations.py):
hand-built items with RowLinks, upserted over HTTP to the sandbox, which then shows which
company each contact is linked to after create, change and removal; failures of the links turn
the record's outcome into a failed one; association requests are counted."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from crm_sync.connectors.core import HttpCore, HttpSettings
from crm_sync.connectors.hubspot import HubSpotConnector, HubSpotResource
from crm_sync.connectors.hubspot_associations import default_association_type
from crm_sync.connectors.model import RowLinks, TargetRef
from crm_sync.errors import FatalCrmError
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import load_spec
from crm_sync_tests.test_sandbox_hubspot import AUTH, upsert
from crm_sync.spec_links import Association

TOKEN = DEFAULT_TOKENS["hubspot"]
SPEC = load_spec().sync("contacts_to_hubspot")


def companies(sandbox, n: int) -> list[str]:
    """n companies made directly in the sandbox; their HubSpot ids, in order."""
    r = upsert(sandbox, *({"id": f"CO-{i}", "idProperty": "crm_sync_id",
                           "properties": {"name": f"Firm {i}"}, "objectWriteTraceId": f"CO-{i}"}
                          for i in range(n)), obj="companies")
    r.raise_for_status()
    ids = {x["objectWriteTraceId"]: x["id"] for x in r.json()["results"]}
    return [ids[f"CO-{i}"] for i in range(n)]


def company(crm_id: str | None, key: str = "CO-x") -> TargetRef:
    return TargetRef("companies", "companies", crm_id, "crm_sync_id", key)


def person(i: int, **fields) -> tuple[str, dict]:
    return f"CT-{i:07d}", {"email": f"person{i}@example.com", "lastname": f"Last{i}",
                           "crm_sync_id": f"CT-{i:07d}", **fields}


def send(url: str, rows, spec=SPEC):
    """rows: (key, fields, RowLinks | None); -> (outcomes by key, stats)."""
    async def run():
        async with HubSpotResource(base_url=url, token=TOKEN).open(spec) as connector:
            items = [connector.item(key, fields, None, links) for key, fields, links in rows]
            outcomes = await connector.upsert(items)
            return {o.key: o for o in outcomes}, connector.core.stats
    return asyncio.run(run())


def linked(sandbox, contact_id: str) -> list[str]:
    """The companies a contact is linked to, as the sandbox's admin API shows them."""
    body = sandbox.get("/_sandbox/associations/hubspot/contacts",
                       params={"id": contact_id, "to": "companies"}).json()
    return sorted(x["to_id"] for x in body["links"])


def counter(sandbox, name: str) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get(name, 0)


def test_links_after_create_after_change_and_after_removal(sandbox, sandbox_url):
    acme, globex = companies(sandbox, 2)
    rows = [(*person(i), RowLinks(link=(company(acme if i % 2 else globex),)))
            for i in range(150)]
    outcomes, stats = send(sandbox_url, rows)
    assert {o.status for o in outcomes.values()} == {"created"}
    assert stats.association_requests == 2  # 150 links, 100 per request
    for key, _, _ in rows:
        i = int(key[3:])
        assert linked(sandbox, outcomes[key].crm_id) == [acme if i % 2 else globex]
    # The company shows its contacts too (HubSpot shows a link from both records).
    from_acme = sandbox.get("/_sandbox/associations/hubspot/companies",
                            params={"id": acme}).json()["links"]
    assert len(from_acme) == 75 and {x["type_id"] for x in from_acme} == {280}

    # The source value changed: unlink the old company, link the new one.
    key, fields = person(1)
    changed, _ = send(sandbox_url, [(key, fields, RowLinks(link=(company(globex),),
                                                           unlink=(company(acme),)))])
    assert changed[key].status == "updated"
    assert linked(sandbox, changed[key].crm_id) == [globex]

    # The source value was removed: only unlink.
    removed, stats = send(sandbox_url, [(key, fields, RowLinks(unlink=(company(globex),)))])
    assert removed[key].status == "updated" and stats.association_requests == 1
    assert linked(sandbox, removed[key].crm_id) == []
    assert linked(sandbox, outcomes[person(3)[0]].crm_id) == [acme]  # the others stay


def test_rows_without_links_send_no_association_request(sandbox, sandbox_url):
    outcomes, stats = send(sandbox_url, [(*person(0), None), (*person(1), RowLinks())])
    assert {o.status for o in outcomes.values()} == {"created"}
    assert stats.association_requests == 0
    assert counter(sandbox, "requests POST hubspot associations batch/create") == 0


def test_a_link_hubspot_refuses_fails_that_record_alone(sandbox, sandbox_url):
    (acme,) = companies(sandbox, 1)
    rows = [(*person(0), RowLinks(link=(company(acme),))),
            (*person(1), RowLinks(link=(company("99999999999", "CO-gone"),))),
            (*person(2), RowLinks(link=(company(None, "CO-never"),))),
            (*person(3, email="not an email"), RowLinks(link=(company(acme),)))]
    outcomes, stats = send(sandbox_url, rows)
    ok, refused, missing, bad = (outcomes[r[0]] for r in rows)
    assert ok.status == "created" and linked(sandbox, ok.crm_id) == [acme]
    assert refused.status == "failed" and refused.error_code == "ASSOCIATION_FAILED"
    assert not refused.transient and refused.http_status == 207
    assert "COMPANY=99999999999 is not valid" in refused.message
    assert refused.crm_id  # the contact itself was written; the next run resends it
    assert missing.status == "failed" and missing.error_code == "ASSOCIATION_TARGET_MISSING"
    assert "CO-never" in missing.message and not missing.transient
    assert bad.status == "failed" and bad.error_code == "INVALID_EMAIL"  # upsert failed: no link
    assert stats.association_requests == 1  # one request: the rows 0 and 1
    assert stats.records_failed == 3 and stats.failed_by_code["ASSOCIATION_FAILED"] == 1
    assert counter(sandbox, "hubspot associations created") == 1


def test_rows_of_one_record_in_successive_rounds_are_each_linked_once(sandbox, sandbox_url):
    acme, globex = companies(sandbox, 2)
    key, fields = person(0)
    rows = [(key, fields, RowLinks(link=(company(acme),))),
            ("CT-dup", {**fields, "crm_sync_id": "CT-dup"}, RowLinks(link=(company(globex),)))]
    outcomes, stats = send(sandbox_url, rows)
    assert {o.status for o in outcomes.values()} == {"created", "updated"}
    assert stats.association_requests == 2  # one per round, each row's links once
    assert counter(sandbox, "hubspot associations created") == 2
    assert linked(sandbox, outcomes[key].crm_id) == sorted([acme, globex])


def test_type_id_and_category_come_from_the_spec_else_hubspots_default(sandbox, sandbox_url):
    (acme,) = companies(sandbox, 1)
    primary = SPEC.model_copy(update={"associations": {"companies": Association(
        sync="companies_to_hubspot", column="company_id", type_id=1,
        category="HUBSPOT_DEFINED")}})
    outcomes, _ = send(sandbox_url, [(*person(0), RowLinks(link=(company(acme),)))], primary)
    contact = outcomes["CT-0000000"].crm_id
    types = sandbox.get("/_sandbox/associations/hubspot/contacts",
                        params={"id": contact}).json()["links"]
    assert sorted(x["type_id"] for x in types) == [1, 279]  # Primary, with the unlabeled one
    assert default_association_type("contacts", "companies") == 279
    assert default_association_type("0-2", "contact") == 280
    assert default_association_type("deals", "companies") == 341
    assert default_association_type("projects", "companies") is None


def test_a_pair_without_a_default_type_needs_type_id_in_the_spec(sandbox, sandbox_url):
    projects = SPEC.model_copy(update={"object": "projects", "matching_key": "ext_id",
                                       "fields": {}})
    (acme,) = companies(sandbox, 1)
    rows = [("PR-1", {"ext_id": "PR-1", "name": "Apollo"}, RowLinks(link=(company(acme),)))]
    outcomes, stats = send(sandbox_url, rows, projects)
    assert outcomes["PR-1"].error_code == "ASSOCIATION_FAILED"
    assert "type_id" in outcomes["PR-1"].message and stats.association_requests == 0
    typed = projects.model_copy(update={"associations": {"companies": Association(
        sync="companies_to_hubspot", column="company_id", type_id=75,
        category="USER_DEFINED")}})
    outcomes, _ = send(sandbox_url, rows, typed)
    assert outcomes["PR-1"].status == "updated"
    body = sandbox.get("/_sandbox/associations/hubspot/projects").json()["links"]
    assert [(x["to_id"], x["category"], x["type_id"]) for x in body] == \
        [(acme, "USER_DEFINED", 75)]


def mocked(answer_links):
    """A connector whose HTTP goes to a MockTransport: the upsert succeeds, the association
    requests get `answer_links(request)`; -> (outcomes, requests sent)."""
    calls = []

    def hubspot(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if "/batch/upsert" in request.url.path:
            return httpx.Response(200, json={"status": "COMPLETE", "results": [
                {"id": "101", "new": True, "objectWriteTraceId": "CT-0000000",
                 "properties": {}, "createdAt": "x", "updatedAt": "x", "archived": False}]})
        return answer_links(request)

    async def run():
        settings = HttpSettings(base_url="http://127.0.0.1:9", headers={}, max_attempts=1)
        async with HttpCore(settings) as core:
            await core._client.aclose()
            core._client = httpx.AsyncClient(base_url=settings.base_url,
                                             transport=httpx.MockTransport(hubspot))
            connector = HubSpotConnector(SPEC, core)
            key, fields = person(0)
            item = connector.item(key, fields, None, RowLinks(link=(company("202"),)))
            return await connector.upsert([item])

    return asyncio.run(run()), calls


def test_transient_answers_fail_the_record_transient_and_the_body_is_v4():
    (outcome,), calls = mocked(lambda r: httpx.Response(207, json={
        "status": "COMPLETE", "results": [], "numErrors": 1, "errors": [
            {"status": "error", "category": "INTERNAL_ERROR", "message": "try again",
             "context": {"id": ["202"]}}]}))
    assert outcome.status == "failed" and outcome.error_code == "ASSOCIATION_FAILED"
    assert outcome.transient and "try again" in outcome.message
    sent = calls[1]
    assert sent.url.path == "/crm/v4/associations/contacts/companies/batch/create"
    assert json.loads(sent.content) == {"inputs": [{
        "from": {"id": "101"}, "to": {"id": "202"},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]}]}

    (outcome,), _ = mocked(lambda r: httpx.Response(423, json={"message": "locked"}))
    assert outcome.error_code == "ASSOCIATION_FAILED" and outcome.transient
    (outcome,), _ = mocked(lambda r: httpx.Response(400, json={"message": "bad type"}))
    assert outcome.error_code == "ASSOCIATION_FAILED" and not outcome.transient
    assert "bad type" in outcome.message
    (outcome,), _ = mocked(lambda r: httpx.Response(201, json={"status": "COMPLETE",
                                                                "results": []}))
    assert outcome.status == "created"


def test_a_token_without_association_scopes_is_fatal():
    with pytest.raises(FatalCrmError, match="HUBSPOT_TOKEN") as refused:
        mocked(lambda r: httpx.Response(403, json={"message": "missing scopes"}))
    assert "contacts_to_hubspot" in str(refused.value)
    assert AUTH["Authorization"] not in str(refused.value)


# -- end to end: the bundled syncs.yaml's companies_to_hubspot and contacts_to_hubspot, the
# contacts linked to their companies (`associations:`) -------------------------------------
DAY = "2026-11-03T10:00:00Z"
LINKED = {"companies": {"sync": "companies_to_hubspot", "column": "company_id"}}


@pytest.fixture
def linked_spec(tmp_path):
    """The bundled spec's two HubSpot syncs, contacts_to_hubspot with `associations:`."""
    import yaml

    from crm_sync.spec import PROJECT_ROOT

    bundled = yaml.safe_load((PROJECT_ROOT / "syncs.yaml").read_text())
    syncs = [s for s in bundled["syncs"] if s["crm"] == "hubspot"]
    assert sorted(s["name"] for s in syncs) == ["companies_to_hubspot", "contacts_to_hubspot"]
    next(s for s in syncs if s["name"] == "contacts_to_hubspot")["associations"] = LINKED
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({**bundled, "syncs": syncs}))
    return load_spec(path, check_schemas=False)


def run_sync(spec, name: str, frame, store, url: str):
    from crm_sync.load.runner import run_upsert
    from crm_sync.transform.validate import validate_partition

    sync = spec.sync(name)
    result = validate_partition(sync, frame)
    assert result.failures == []
    return run_upsert(sync, result.valid, HubSpotResource(base_url=url, token=TOKEN), store,
                      partition=DAY[:10])


def company_rows(*keys: str):
    import pandas as pd

    return pd.DataFrame([{"company_id": k, "name": f"Company {k}", "domain": f"{k}.example",
                          "industry": "Technology", "employees": "10", "phone": None,
                          "country": "DE", "annual_revenue": "1000.50", "updated_at": DAY}
                         for k in keys])


def contact_rows(links: dict[int, str | None]):
    import pandas as pd

    return pd.DataFrame([{"contact_id": f"CT-{i:07d}", "email": f"person{i}@example.com",
                          "first_name": "Ada", "last_name": f"Last{i}", "phone": None,
                          "job_title": "Engineer", "lifecycle_stage": "lead",
                          "company_id": company, "updated_at": DAY}
                         for i, company in links.items()])


def test_the_spec_links_contacts_to_companies_after_create_change_and_removal(
        sandbox, sandbox_url, store, linked_spec):
    from crm_sync.load.links import TARGET_MISSING

    spec = linked_spec
    assert spec.sync("contacts_to_hubspot").associations["companies"].sync == \
        "companies_to_hubspot"
    first = run_sync(spec, "companies_to_hubspot", company_rows("CO-1", "CO-2"), store,
                     sandbox_url)
    assert first.created == 2
    ids = {r["properties"]["crm_sync_id"]: r["id"] for r in
           sandbox.get("/_sandbox/records/hubspot/companies").json()["records"]}

    def contact_ids():
        return {r["properties"]["crm_sync_id"]: r["id"] for r in
                sandbox.get("/_sandbox/records/hubspot/contacts").json()["records"]}

    # create: each contact linked to its company; one without a company; one whose company
    # was never synced waits in the quarantine (the runner's ASSOCIATION_TARGET_MISSING)
    rows = {0: "CO-1", 1: "CO-2", 2: "CO-1", 3: None, 4: "CO-9"}
    report = run_sync(spec, "contacts_to_hubspot", contact_rows(rows), store, sandbox_url)
    assert (report.created, report.targets_missing, report.links_created) == (4, 1, 3)
    assert report.failed_by_code == {TARGET_MISSING: 1}
    contacts = contact_ids()
    assert {k: linked(sandbox, contacts[f"CT-{i:07d}"]) for i, k in
            ((0, "a"), (1, "b"), (2, "c"), (3, "d"))} == \
        {"a": [ids["CO-1"]], "b": [ids["CO-2"]], "c": [ids["CO-1"]], "d": []}
    assert "CT-0000004" not in contacts

    # change: contact 0 moves to CO-2 (only its company_id changed)
    rows[0] = "CO-2"
    moved = run_sync(spec, "contacts_to_hubspot", contact_rows(rows), store, sandbox_url)
    assert (moved.updated, moved.links_created, moved.links_removed) == (1, 1, 1)
    assert linked(sandbox, contacts["CT-0000000"]) == [ids["CO-2"]]
    assert linked(sandbox, contacts["CT-0000002"]) == [ids["CO-1"]]  # untouched

    # removal: contact 1 has no company any more
    rows[1] = None
    removed = run_sync(spec, "contacts_to_hubspot", contact_rows(rows), store, sandbox_url)
    assert (removed.updated, removed.links_removed) == (1, 1)
    assert linked(sandbox, contacts["CT-0000001"]) == []
    from_co2 = sandbox.get("/_sandbox/associations/hubspot/companies",
                           params={"id": ids["CO-2"]}).json()["links"]
    assert [x["to_id"] for x in from_co2] == [contacts["CT-0000000"]]
    assert removed.stats.association_requests == 1  # the archive; no link to create


def test_one_dagster_partition_links_each_contact_to_its_company(sandbox, store, linked_spec):
    """The companies' upsert asset runs first (an asset dependency), then the contacts' links
    to them: the sandbox shows each contact linked to its company's HubSpot record."""
    import dagster as dg

    from crm_sync.definitions import build_resources
    from crm_sync.load.links import TARGET_MISSING
    from crm_sync.pipeline.assets import build_assets

    assets = build_assets(linked_spec)
    upsert = next(a for a in assets if a.key.path[0] == "contacts_to_hubspot")
    assert dg.AssetKey("companies_to_hubspot") in set(upsert.dependency_keys)
    names = {"source_companies", "validated_companies_to_hubspot", "companies_to_hubspot",
             "source_contacts", "validated_contacts_to_hubspot", "contacts_to_hubspot"}
    result = dg.materialize([a for a in assets if a.key.path[0] in names],
                            partition_key="2026-11-03", resources=build_resources())
    assert result.success
    companies_state = store.state_frame("companies_to_hubspot")
    company_id = dict(zip(companies_state["source_key"], companies_state["crm_id"]))
    contacts = {r["properties"]["crm_sync_id"]: r["id"] for r in
                sandbox.get("/_sandbox/records/hubspot/contacts").json()["records"]}
    import pandas as pd

    from crm_sync.spec import PROJECT_ROOT

    source = pd.read_csv(PROJECT_ROOT / "data" / "contacts.csv", dtype=str,
                         keep_default_na=False).set_index("contact_id")["company_id"]
    assert contacts, "the partition's good contacts are in HubSpot"
    with_company = [k for k in contacts if source[k] in company_id]
    assert with_company, "some contacts' companies are in this partition"
    for key in with_company:
        assert linked(sandbox, contacts[key]) == [str(company_id[source[key]])]
    quarantine = store.quarantine_frame("contacts_to_hubspot")
    waiting = set(quarantine[quarantine["error_code"] == TARGET_MISSING]["source_key"])
    assert waiting and not waiting & set(contacts)  # not sent until their company is synced
    assert all(source[k] and source[k] not in company_id for k in waiting)
    meta = result.asset_materializations_for_node("contacts_to_hubspot")[0].metadata
    assert meta["created"].value == len(contacts)
