"""The sandbox's HubSpot associations v4 API over HTTP: batch create / archive / read, the
per-record read, the documented answers and errors, the official SDK against it, and the admin
API showing the links (crm_sync/sandbox/hubspot_associations.py)."""

from __future__ import annotations

from hubspot import HubSpot
from hubspot.crm.associations.v4 import (AssociationSpec, BatchInputPublicAssociationMultiArchive,
                                         BatchInputPublicAssociationMultiPost,
                                         BatchInputPublicFetchAssociationsBatchRequest,
                                         PublicAssociationMultiArchive,
                                         PublicAssociationMultiPost,
                                         PublicFetchAssociationsBatchRequest, PublicObjectId)

from crm_sync_tests.test_sandbox_hubspot import AUTH, ISO, TOKEN, assert_standard_error, upsert

CREATE = "/crm/v4/associations/contacts/companies/batch/create"
ARCHIVE = "/crm/v4/associations/contacts/companies/batch/archive"
UNLABELED = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 279}]


def make_records(sandbox, contacts: int = 2, companies: int = 2) -> tuple[list[str], list[str]]:
    people = upsert(sandbox, *({"id": f"p{i}@example.com", "idProperty": "email",
                                "properties": {"lastname": "L"}, "objectWriteTraceId": f"p{i}"}
                               for i in range(contacts)))
    firms = upsert(sandbox, *({"id": f"CO-{i}", "idProperty": "crm_sync_id",
                               "properties": {"name": f"Firm {i}"}, "objectWriteTraceId": f"c{i}"}
                              for i in range(companies)), obj="companies")
    by_trace = lambda r: {x["objectWriteTraceId"]: x["id"] for x in r.json()["results"]}  # noqa
    p, c = by_trace(people), by_trace(firms)
    return [p[f"p{i}"] for i in range(contacts)], [c[f"c{i}"] for i in range(companies)]


def link(frm: str, to: str, types=UNLABELED) -> dict:
    return {"from": {"id": frm}, "to": {"id": to}, "types": types}


def links(sandbox, obj: str, record_id: str | None = None, to: str | None = None) -> list[tuple]:
    params = {k: v for k, v in (("id", record_id), ("to", to)) if v}
    body = sandbox.get(f"/_sandbox/associations/hubspot/{obj}", params=params).json()
    return [(x["from_id"], x["to_object"], x["to_id"], x["type_id"]) for x in body["links"]]


def test_batch_create_links_both_ways_and_answers_201(sandbox):
    (ada, bob), (acme, _) = make_records(sandbox)
    r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme), link(bob, acme)]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "COMPLETE" and ISO.match(body["completedAt"])
    assert "errors" not in body
    assert sorted((x["fromObjectId"], x["toObjectId"]) for x in body["results"]) == \
        sorted([(ada, acme), (bob, acme)])
    assert {x["fromObjectTypeId"] for x in body["results"]} == {"0-1"}
    assert {x["toObjectTypeId"] for x in body["results"]} == {"0-2"}
    assert links(sandbox, "contacts", ada) == [(ada, "companies", acme, 279)]
    assert sorted(links(sandbox, "companies", acme)) == \
        sorted([(acme, "contacts", ada, 280), (acme, "contacts", bob, 280)])
    # Creating it again changes nothing (idempotent) and is no error.
    again = sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme)]})
    assert again.status_code == 201
    assert links(sandbox, "contacts", ada) == [(ada, "companies", acme, 279)]


def test_unknown_records_and_bad_ids_are_listed_in_a_207_and_the_rest_is_linked(sandbox):
    (ada, bob), (acme, _) = make_records(sandbox)
    r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [
        link(ada, acme), link(bob, "99999999999"), link("not-an-id", acme)]})
    assert r.status_code == 207, r.text
    body = r.json()
    assert [(x["fromObjectId"], x["toObjectId"]) for x in body["results"]] == [(ada, acme)]
    assert body["numErrors"] == 2
    missing, invalid = body["errors"]
    assert missing["category"] == "VALIDATION_ERROR"
    assert missing["message"] == "One or more associations are invalid"
    assert missing["context"]["INVALID_OBJECT_IDS"] == ["COMPANY=99999999999 is not valid"]
    assert invalid["subCategory"] == "crm.associations.INVALID_IDENTIFIER"
    assert invalid["message"] == "not-an-id is not a valid ID"
    assert links(sandbox, "contacts", bob) == []
    assert links(sandbox, "contacts", ada) == [(ada, "companies", acme, 279)]


def test_a_type_not_defined_for_the_pair_refuses_the_request(sandbox):
    (ada, _), (acme, _) = make_records(sandbox)
    for types in ([{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 280}],
                  [{"associationCategory": "USER_DEFINED", "associationTypeId": 279}]):
        r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme, types)]})
        assert r.status_code == 400
        assert_standard_error(r.json())
    assert links(sandbox, "contacts") == []


def test_request_shape_batch_size_object_type_and_auth(sandbox):
    (ada, _), (acme, _) = make_records(sandbox)
    bad_inputs = [
        {"from": {"id": ada}, "to": {"id": acme}},  # no types
        {"from": {"id": ada}, "to": {"id": acme}, "types": []},
        {"from": {"id": ada}, "to": {"id": acme},
         "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": "279"}]},
        {"from": ada, "to": {"id": acme}, "types": UNLABELED},
        {**link(ada, acme), "extra": 1},
    ]
    for entry in bad_inputs:
        r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [entry]})
        assert r.status_code == 400, entry
        assert_standard_error(r.json())
    r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme)] * 101})
    assert r.status_code == 400 and "maximum number of inputs" in r.json()["message"]
    r = sandbox.post("/crm/v4/associations/widgets/companies/batch/create", headers=AUTH,
                     json={"inputs": [link(ada, acme)]})
    assert r.status_code == 400
    assert r.json()["message"] == "Unable to infer object type from: widgets"
    r = sandbox.post(CREATE, json={"inputs": [link(ada, acme)]})
    assert r.status_code == 401 and r.json()["category"] == "INVALID_AUTHENTICATION"
    assert links(sandbox, "contacts") == []


def test_archive_removes_both_directions_and_is_idempotent(sandbox):
    (ada, bob), (acme, globex) = make_records(sandbox)
    sandbox.post(CREATE, headers=AUTH, json={"inputs": [
        link(ada, acme), link(ada, globex), link(bob, acme)]}).raise_for_status()
    r = sandbox.post(ARCHIVE, headers=AUTH,
                     json={"inputs": [{"from": {"id": ada}, "to": [{"id": acme}]}]})
    assert r.status_code == 204 and r.content == b""
    assert links(sandbox, "contacts", ada) == [(ada, "companies", globex, 279)]
    assert links(sandbox, "companies", acme) == [(acme, "contacts", bob, 280)]
    again = sandbox.post(ARCHIVE, headers=AUTH, json={"inputs": [
        {"from": {"id": ada}, "to": [{"id": acme}, {"id": "12345678901"}]}]})
    assert again.status_code == 204
    r = sandbox.post(ARCHIVE, headers=AUTH, json={"inputs": [{"from": {"id": ada}, "to": []}]})
    assert r.status_code == 400


def test_reads_show_a_records_links_with_their_types(sandbox):
    (ada, bob), (acme, _) = make_records(sandbox)
    primary = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]
    sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme, primary)]}
                 ).raise_for_status()
    r = sandbox.get(f"/crm/v4/objects/contacts/{ada}/associations/companies", headers=AUTH)
    assert r.status_code == 200
    (only,) = r.json()["results"]
    assert only["toObjectId"] == acme
    assert sorted((t["typeId"], t["label"]) for t in only["associationTypes"]) == \
        [(1, "Primary"), (279, None)]  # Primary comes with the unlabeled type
    r = sandbox.get(f"/crm/v4/objects/companies/{acme}/associations/contacts", headers=AUTH)
    assert [x["toObjectId"] for x in r.json()["results"]] == [ada]
    r = sandbox.post("/crm/v4/associations/contacts/companies/batch/read", headers=AUTH,
                     json={"inputs": [{"id": ada}, {"id": bob}, {"id": "11111111111"}]})
    assert r.status_code == 207
    body = r.json()
    assert [(x["from"]["id"], [t["toObjectId"] for t in x["to"]]) for x in body["results"]] \
        == [(ada, [acme]), (bob, [])]
    assert body["errors"][0]["context"] == {"id": ["11111111111"]}
    r = sandbox.get("/crm/v4/objects/contacts/11111111111/associations/companies", headers=AUTH)
    assert r.status_code == 404
    r = sandbox.get("/crm/v4/associations/contacts/companies/labels", headers=AUTH)
    assert {(x["typeId"], x["label"]) for x in r.json()["results"]} == {(279, None),
                                                                      (1, "Primary")}


def test_a_new_primary_company_moves_the_primary_label(sandbox):
    (ada, _), (acme, globex) = make_records(sandbox)
    primary = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 1}]
    for company in (acme, globex):
        sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, company, primary)]}
                     ).raise_for_status()
    assert sorted(links(sandbox, "contacts", ada)) == sorted([
        (ada, "companies", acme, 279), (ada, "companies", globex, 1),
        (ada, "companies", globex, 279)])


def test_archiving_a_record_removes_its_links(sandbox):
    (ada, bob), (acme, _) = make_records(sandbox)
    sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme), link(bob, acme)]}
                 ).raise_for_status()
    r = sandbox.post("/crm/v3/objects/companies/batch/archive", headers=AUTH,
                     json={"inputs": [{"id": acme}]})
    assert r.status_code == 204
    assert links(sandbox, "contacts") == [] and links(sandbox, "companies") == []
    sandbox.post("/_sandbox/reset").raise_for_status()
    assert links(sandbox, "contacts") == []


def test_the_official_sdk_creates_reads_and_archives_associations(sandbox, sandbox_url):
    (ada, _), (acme, _) = make_records(sandbox)
    batch = HubSpot(access_token=TOKEN, host=sandbox_url).crm.associations.v4.batch_api
    created = batch.create("contacts", "companies", BatchInputPublicAssociationMultiPost(inputs=[
        PublicAssociationMultiPost(_from=PublicObjectId(id=ada), to=PublicObjectId(id=acme),
                                   types=[AssociationSpec(association_category="HUBSPOT_DEFINED",
                                                          association_type_id=279)])]))
    assert [(r.from_object_id, r.to_object_id) for r in created.results] == [(ada, acme)]
    read = batch.get_page("contacts", "companies", BatchInputPublicFetchAssociationsBatchRequest(
        inputs=[PublicFetchAssociationsBatchRequest(id=ada)]))
    assert [t.to_object_id for t in read.results[0].to] == [acme]
    assert read.results[0].to[0].association_types[0].type_id == 279
    batch.archive("contacts", "companies", BatchInputPublicAssociationMultiArchive(inputs=[
        PublicAssociationMultiArchive(_from=PublicObjectId(id=ada), to=[PublicObjectId(id=acme)])]))
    assert links(sandbox, "contacts") == []


def test_association_requests_count_against_the_rate_limit_and_are_counted(sandbox):
    (ada, _), (acme, _) = make_records(sandbox)
    r = sandbox.post(CREATE, headers=AUTH, json={"inputs": [link(ada, acme)]})
    assert "X-HubSpot-RateLimit-Remaining" in r.headers
    counters = sandbox.get("/_sandbox/stats").json()["counters"]
    assert counters["requests POST hubspot associations batch/create"] == 1
    assert counters["hubspot associations created"] == 1
