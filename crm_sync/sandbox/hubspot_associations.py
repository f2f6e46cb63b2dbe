"""HubSpot's associations API (v4): links between records, created and removed after both exist.

    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create
         {"inputs": [{"from": {"id"}, "to": {"id"}, "types": [{"associationCategory",
                                                               "associationTypeId"}]}]}
         -> 201 (all created) | 207 (some refused, in `errors`)
    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive
         {"inputs": [{"from": {"id"}, "to": [{"id"}, ...]}]}  -> 204 (every type between them)
    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/read
         {"inputs": [{"id"}]} -> 200 {"results": [{"from": {"id"}, "to": [{"toObjectId",
                                                  "associationTypes": [...]}]}]} | 207
    GET  /crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}
         -> 200 {"results": [{"toObjectId", "associationTypes": [{"category", "typeId",
                                                                  "label"}]}]}
    GET  /crm/v4/associations/{fromObjectType}/{toObjectType}/labels -> the pair's types

Sources: the request and answer models of the official SDK, hubspot-api-client 12,
`hubspot/crm/associations/v4/models/` (PublicAssociationMultiPost {from, to, types},
AssociationSpec {associationCategory in HUBSPOT_DEFINED | USER_DEFINED | INTEGRATOR_DEFINED,
associationTypeId}, PublicAssociationMultiArchive {from, to[]}, LabelsBetweenObjectPair,
MultiAssociatedObjectWithLabel, AssociationSpecWithLabel) and `api/batch_api.py` (batch create
answers 201 or 207, batch read 200 or 207, batch archive has no answer body); HubSpot's
reference pages (developers.hubspot.com/docs/api-reference/crm-associations-v4/...); the
default type ids of HubSpot's `AssociationTypes` enum in HubSpot/hubspot-api-nodejs
(src/enums/AssociationTypes.ts: contactToCompany 279, companyToContact 280, primary 1 / 2,
dealToContact 3, contactToDeal 4, dealToCompany 341, companyToDeal 342, primary 5 / 6); the
batch-read limit of 1000 ids (HubSpot developer changelog "Bug Fix: Batch Read Limit for
HubSpot Associations API", February 2025); answers captured from HubSpot: a 207 of batch
create (amp-labs/connectors, providers/hubspot/internal/associations/test/
err-contact-to-contact.json: `"<id> is not a valid ID"`, subCategory
crm.associations.INVALID_IDENTIFIER) and a refused association to a record that does not exist
(HubSpot/hubspot-api-nodejs#646: "One or more associations are invalid", context
INVALID_OBJECT_IDS ["CONTACT=38374264688 is not valid"]). docs/sandbox/hubspot.md lists what is
emulated and each GUESS.

Links are kept in the sandbox database (db.py, table `associations`), one row per direction:
creating contact -> company 279 also stores company -> contact 280, as HubSpot shows a link
from both records. Archiving (or deleting) a record removes its links. The admin API shows
them: GET /_sandbox/associations/hubspot/<object>.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.hubspot import CRM, HubSpotAPI
from crm_sync.sandbox.hubspot_objects import ObjectType, object_type
from crm_sync.sandbox.hubspot_rules import error, iso
from crm_sync.sandbox.state import now_ms

HUBSPOT_DEFINED, USER_DEFINED, INTEGRATOR_DEFINED = \
    "HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"
CATEGORIES = frozenset({HUBSPOT_DEFINED, USER_DEFINED, INTEGRATOR_DEFINED})
# GUESS: the create/archive limit. HubSpot's batch endpoints take 100 inputs; no figure for
# these two was found (Workato's batch action takes 2000 records, perhaps in several calls).
MAX_WRITE_INPUTS = 100
MAX_READ_INPUTS = 1000  # documented (changelog, February 2025)
PRIMARY = "Primary"

# (from object, to object) -> {(category, typeId): (label, inverse typeId)}: the account's
# association definitions. HubSpot's defaults (AssociationTypes enum, above); the Primary
# label of each pair implies the unlabeled type as well, as HubSpot lists both.
# GUESS: projects (a custom object) <-> companies, the sandbox account's own USER_DEFINED
# definition: custom-object type ids are made per account; these two are the sandbox's.
_DEFINED = (  # (from, to, category, typeId, label, the inverse typeId: to -> from)
    ("contacts", "companies", HUBSPOT_DEFINED, 279, None, 280),
    ("contacts", "companies", HUBSPOT_DEFINED, 1, PRIMARY, 2),
    ("deals", "contacts", HUBSPOT_DEFINED, 3, None, 4),
    ("deals", "companies", HUBSPOT_DEFINED, 341, None, 342),
    ("deals", "companies", HUBSPOT_DEFINED, 5, PRIMARY, 6),
    ("projects", "companies", USER_DEFINED, 75, None, 76),
)
DEFINITIONS: dict[tuple[str, str], dict[tuple[str, int], tuple[str | None, int]]] = {}
for _from, _to, _category, _type, _label, _inverse in _DEFINED:  # both directions
    DEFINITIONS.setdefault((_from, _to), {})[(_category, _type)] = (_label, _inverse)
    DEFINITIONS.setdefault((_to, _from), {})[(_category, _inverse)] = (_label, _type)
UNLABELED = {pair: next(t for (cat, t), (label, _) in types.items() if label is None)
             for pair, types in DEFINITIONS.items()}
_BASE = "/crm/v4/associations/{fromObjectType}/{toObjectType}"


class _Refused(Exception):
    def __init__(self, response: JSONResponse):
        super().__init__("refused")
        self.response = response


class HubSpotAssociationHandlers(HubSpotAPI):
    """The v4 associations endpoints (module docstring)."""

    def routes(self) -> list[Route]:
        return [
            Route(f"{_BASE}/batch/create", self.batch_create, methods=["POST"]),
            Route(f"{_BASE}/batch/archive", self.batch_archive, methods=["POST"]),
            Route(f"{_BASE}/batch/read", self.batch_read, methods=["POST"]),
            Route(f"{_BASE}/labels", self.labels, methods=["GET"]),
            Route("/crm/v4/objects/{objectType}/{objectId}/associations/{toObjectType}",
                  self.read_one, methods=["GET"]),
        ]

    # -- shared ------------------------------------------------------------------------------
    def _pair(self, request: Request) -> tuple[ObjectType, ObjectType, dict]:
        """Auth and limits, then the two object types of the path (or _Refused)."""
        denied, headers = self.admit(request)
        if denied:
            raise _Refused(denied)
        names = (request.path_params.get("fromObjectType") or
                 request.path_params["objectType"], request.path_params["toObjectType"])
        types = []
        for name in names:
            obj = object_type(name)
            if obj is None:  # as the v3 objects API answers an unknown type
                raise _Refused(error(400, f"Unable to infer object type from: {name}", None,
                                     headers=headers))
            types.append(obj)
        return types[0], types[1], headers

    def _exists(self, obj: ObjectType, record_id: str) -> bool:
        return self.state.db.get(CRM, obj.name, record_id) is not None

    @staticmethod
    def _inputs(raw: bytes, limit: int, headers) -> list:
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Refused(error(400, f"Invalid input JSON: {exc}", headers=headers)) from None
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or \
                set(body) != {"inputs"}:
            raise _Refused(error(400, 'Invalid input JSON: expected an object {"inputs": '
                                      '[...]}', headers=headers))
        inputs = body["inputs"]
        if not inputs:
            raise _Refused(error(400, "inputs must contain at least one input",
                                 headers=headers))
        if len(inputs) > limit:
            raise _Refused(error(400, f"The maximum number of inputs supported in a batch "
                                      f"request is {limit}. Please reduce the number of items "
                                      f"and try again", headers=headers))
        return inputs

    @staticmethod
    def _shape(index: int, entry, headers, *, many_to: bool) -> tuple[str, list[str], list]:
        """from id, to ids and types of one input, or a 400 (strict: unknown fields too)."""
        expected = {"from", "to"} if many_to else {"from", "to", "types"}
        bad = None
        if not isinstance(entry, dict) or set(entry) != expected:
            bad = f"must have exactly the fields {sorted(expected)}"
        elif not _object_id(entry["from"]):
            bad = 'needs "from": {"id": "<record id>"}'
        elif many_to and not (isinstance(entry["to"], list) and entry["to"]
                              and all(_object_id(t) for t in entry["to"])):
            bad = 'needs "to": [{"id": "<record id>"}, ...]'
        elif not many_to and not _object_id(entry["to"]):
            bad = 'needs "to": {"id": "<record id>"}'
        elif not many_to and not (isinstance(entry["types"], list) and entry["types"] and all(
                isinstance(t, dict) and set(t) == {"associationCategory", "associationTypeId"}
                and t["associationCategory"] in CATEGORIES
                and type(t["associationTypeId"]) is int for t in entry["types"])):
            bad = ('needs "types": [{"associationCategory": "HUBSPOT_DEFINED" | '
                   '"USER_DEFINED" | "INTEGRATOR_DEFINED", "associationTypeId": <integer>}]')
        if bad:
            raise _Refused(error(400, f"Invalid input JSON: inputs[{index}] {bad}",
                                 headers=headers))
        to = [t["id"] for t in entry["to"]] if many_to else [entry["to"]["id"]]
        types = [] if many_to else [(t["associationCategory"], t["associationTypeId"])
                                    for t in entry["types"]]
        return entry["from"]["id"], to, types

    def _record_problem(self, source: ObjectType, from_id: str, target: ObjectType,
                        to_id: str) -> dict | None:
        """The `errors[]` element for an input naming an id that is not a record's."""
        for record_id in (from_id, to_id):
            if not record_id.isdigit():  # captured: amp-labs/connectors (module docstring)
                return {"status": "error", "category": "VALIDATION_ERROR",
                        "subCategory": "crm.associations.INVALID_IDENTIFIER",
                        "message": f"{record_id} is not a valid ID",
                        "context": {"id": [record_id]}}
        for obj, record_id in ((source, from_id), (target, to_id)):
            if not self._exists(obj, record_id):
                # Captured for the single PUT (hubspot-api-nodejs#646); in a batch, as its
                # element (GUESS: the same body per input).
                kind = obj.label.upper()
                return {"status": "error", "category": "VALIDATION_ERROR",
                        "message": "One or more associations are invalid",
                        "context": {"INVALID_OBJECT_IDS": [f"{kind}={record_id} is not valid"],
                                    "objectId": [record_id], "objectType": [kind]}}
        return None

    async def _write_request(self, request: Request, many_to: bool):
        """(from type, to type, limit headers, parsed inputs) of a create or archive."""
        source, target, headers = self._pair(request)
        inputs = self._inputs(await request.body(), MAX_WRITE_INPUTS, headers)
        return source, target, headers, [self._shape(i, e, headers, many_to=many_to)
                                         for i, e in enumerate(inputs)]

    # -- endpoints ---------------------------------------------------------------------------
    async def batch_create(self, request: Request):
        requested = now_ms()
        try:
            source, target, headers, parsed = await self._write_request(request, False)
        except _Refused as refused:
            return refused.response
        definitions = DEFINITIONS.get((source.name, target.name), {})
        for _, _, types in parsed:
            for category, type_id in types:
                if (category, type_id) not in definitions:
                    # GUESS: the wording; a type that is not defined for the pair refuses the
                    # request as a whole (HubSpot checks the type against the pair).
                    return error(400, f"{category} association type {type_id} is not defined "
                                      f"from {source.type_id} to {target.type_id}",
                                 context={"associationTypeId": [str(type_id)]},
                                 headers=headers)
        results, errors = [], []
        with self.state.db.transaction():
            for from_id, (to_id,), types in parsed:
                problem = self._record_problem(source, from_id, target, to_id)
                if problem:
                    errors.append(problem)
                    continue
                labels = self._create(source, from_id, target, to_id, types, definitions)
                results.append({"fromObjectTypeId": source.type_id, "fromObjectId": from_id,
                                "toObjectTypeId": target.type_id, "toObjectId": to_id,
                                "labels": labels})
        self.state.count("hubspot associations created", len(results))
        body = {"status": "COMPLETE", "results": results, "requestedAt": iso(requested),
                "startedAt": iso(requested), "completedAt": iso(now_ms()), "links": {}}
        if errors:
            body.update(numErrors=len(errors), errors=errors)
        return JSONResponse(body, 207 if errors else 201, headers=headers)

    def _create(self, source: ObjectType, from_id: str, target: ObjectType, to_id: str,
                types: list[tuple[str, int]], definitions) -> list[str]:
        db, pair = self.state.db, (source.name, target.name)
        wanted = set(types)
        if any(definitions[t][0] == PRIMARY for t in wanted):
            wanted.add((HUBSPOT_DEFINED, UNLABELED[pair]))  # Primary implies the unlabeled link
        for category, type_id in sorted(wanted):
            label, inverse = definitions[(category, type_id)]
            if label == PRIMARY:  # one primary per record: it moves from the previous one
                for _, _, old_to, old_cat, old_type in db.links(CRM, source.name, from_id,
                                                                 target.name):
                    if (old_cat, old_type) == (category, type_id) and old_to != to_id:
                        self._drop(source, from_id, target, old_to, category, type_id, inverse)
            db.link(CRM, source.name, from_id, target.name, to_id, category, type_id)
            db.link(CRM, target.name, to_id, source.name, from_id, category, inverse)
        return sorted({definitions[t][0] for t in wanted if definitions[t][0]})

    def _drop(self, source, from_id, target, to_id, category, type_id, inverse) -> None:
        db = self.state.db
        db.unlink(CRM, source.name, from_id, target.name, to_id, (category, type_id))
        db.unlink(CRM, target.name, to_id, source.name, from_id, (category, inverse))

    async def batch_archive(self, request: Request):
        """Remove every link between each pair, in both directions. Like the objects API's
        archive, pairs that are not linked (or records that are not there) are no error:
        204 all the same (GUESS: HubSpot documents no error for them)."""
        try:
            source, target, headers, parsed = await self._write_request(request, True)
        except _Refused as refused:
            return refused.response
        removed = 0
        with self.state.db.transaction():
            for from_id, to_ids, _ in parsed:
                for to_id in to_ids:
                    removed += self.state.db.unlink(CRM, source.name, from_id, target.name,
                                                    to_id)
                    self.state.db.unlink(CRM, target.name, to_id, source.name, from_id)
        self.state.count("hubspot associations archived", removed)
        return Response(status_code=204, headers=headers)

    async def batch_read(self, request: Request):
        requested = now_ms()
        try:
            source, target, headers = self._pair(request)
            inputs = self._inputs(await request.body(), MAX_READ_INPUTS, headers)
        except _Refused as refused:
            return refused.response
        results, errors = [], []
        for index, entry in enumerate(inputs):
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or \
                    set(entry) - {"id", "after"}:
                return error(400, f'Invalid input JSON: inputs[{index}] must be {{"id": '
                                  f'"<record id>"}}', headers=headers)
            record_id = entry["id"]
            if not self._exists(source, record_id):
                # GUESS: an id that holds no record is named in `errors`.
                errors.append({"status": "error", "category": "OBJECT_NOT_FOUND",
                               "message": f"No {source.label} with ID {record_id} exists",
                               "context": {"id": [record_id]}})
                continue
            results.append({"from": {"id": record_id},
                            "to": self._targets(source, record_id, target)})
        body = {"status": "COMPLETE", "results": results, "requestedAt": iso(requested),
                "startedAt": iso(requested), "completedAt": iso(now_ms()), "links": {}}
        if errors:
            body.update(numErrors=len(errors), errors=errors)
        return JSONResponse(body, 207 if errors else 200, headers=headers)

    def _targets(self, source: ObjectType, record_id: str, target: ObjectType) -> list[dict]:
        """A record's links to one object: [{toObjectId, associationTypes}], by target."""
        definitions = DEFINITIONS.get((source.name, target.name), {})
        grouped: dict[str, list[dict]] = {}
        for _, _, to_id, category, type_id in self.state.db.links(CRM, source.name, record_id,
                                                                  target.name):
            label = definitions.get((category, type_id), (None, 0))[0]
            grouped.setdefault(to_id, []).append(
                {"category": category, "typeId": type_id, "label": label})
        return [{"toObjectId": to_id, "associationTypes": types}
                for to_id, types in grouped.items()]

    async def read_one(self, request: Request):
        try:
            source, target, headers = self._pair(request)
        except _Refused as refused:
            return refused.response
        record_id = request.path_params["objectId"]
        if not self._exists(source, record_id):
            return error(404, "Object not found.  objectId are usually numeric.",
                         "OBJECT_NOT_FOUND", context={"id": [record_id]}, headers=headers)
        return JSONResponse({"results": self._targets(source, record_id, target)},
                            headers=headers)

    async def labels(self, request: Request):
        try:
            source, target, headers = self._pair(request)
        except _Refused as refused:
            return refused.response
        return JSONResponse({"results": [
            {"category": category, "typeId": type_id, "label": label}
            for (category, type_id), (label, _) in
            DEFINITIONS.get((source.name, target.name), {}).items()]}, headers=headers)


def _object_id(value) -> bool:
    return isinstance(value, dict) and set(value) == {"id"} and isinstance(value["id"], str) \
        and bool(value["id"].strip())


def routes(state) -> list[Route]:
    return HubSpotAssociationHandlers(state).routes()
