"""HubSpot's CRM v3 single-object writes: create one record, update one record.

    POST  /crm/v3/objects/{objectType}              {"properties": {...}, "associations": []}
                                                     -> 201 {"id", "properties", "createdAt",
                                                             "updatedAt", "archived"}
    PATCH /crm/v3/objects/{objectType}/{objectId}   {"properties": {...}}  (?idProperty=email)
                                                     -> 200 the record as it is now

Sources: HubSpot's reference pages "Create a contact" / "Update a contact"
(developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/create-contact, the
objects guide docs/guides/crm/using-object-apis: "{objectId} refers to the internal object ID by
default, or optionally any unique property value as specified by the idProperty query param");
the official SDK, hubspot-api-client 12, `hubspot/crm/objects/api/basic_api.py` (`create` POSTs
SimplePublicObjectInputForCreate {properties, associations} to /crm/v3/objects/{objectType} and
expects 201 SimplePublicObject; `update` PATCHes SimplePublicObjectInput {properties} to
.../{objectId} with the query parameter `idProperty` and expects 200); REFERENCE.md §3 (the
409 "Contact already exists. Existing ID: X", category CONFLICT). docs/sandbox/hubspot.md lists
each strict choice made where the documentation is silent (marked GUESS below).

Everything else is the batch endpoints' (hubspot.py): the same auth, rolling window, daily
allowance and limit headers, the same property validation (hubspot_rules.property_problems),
the same unique-value index and the same stored records, so a record created here is the
record a batch upsert by `email` (or `crm_sync_id`) updates, and the other way round.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.hubspot import CRM, HubSpotBatchHandlers, whole_batch_error
from crm_sync.sandbox.hubspot_objects import ObjectType
from crm_sync.sandbox.hubspot_rules import (
    as_text, conflict_error, error, input_error, json_body, property_problems,
)
from crm_sync.sandbox.state import now_ms

_BASE = "/crm/v3/objects/{objectType}"
# The documented create body is {properties, associations}; update's is {properties}.
# GUESS: `objectWriteTraceId` is accepted on both and echoed in the answer (HubSpot's 2026-03
# reference lists it in the answer of a create). GUESS: `idProperty` in a create body (drt-core's
# HubSpot destination sends it) is accepted and has no effect: HubSpot's create has no
# idProperty, a create never matches an existing record, uniqueness answers 409 whatever it
# says. Any other field is refused (the strict choice: the documentation does not say).
_CREATE_FIELDS = {"properties", "associations", "objectWriteTraceId", "idProperty"}
_UPDATE_FIELDS = {"properties", "objectWriteTraceId"}


def parse_body(raw: bytes, allowed: set[str]) -> tuple[dict | None, str | None]:
    """(body, None) or (None, the message of the 400): a JSON object of `allowed` fields with
    `properties` an object of name -> string, number, boolean or null."""
    body, problem = json_body(raw)
    if problem:
        return None, problem
    if not isinstance(body, dict):
        return None, 'Invalid input JSON: expected an object {"properties": {...}}'
    unknown = set(body) - allowed
    if unknown:
        return None, f"Invalid input JSON: unrecognized field(s) {sorted(unknown)}"
    properties = body.get("properties")
    if not isinstance(properties, dict):
        # HubSpot's own words for a missing `properties` (its models require it).
        return None, ("Invalid input JSON: Cannot build SimplePublicObjectInput, some of "
                      "required attributes are not set [properties]")
    for name, value in properties.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return None, f"Invalid input JSON: property {name!r} must be a string, a number " \
                         f"or a boolean"
    for name in ("objectWriteTraceId", "idProperty"):
        if name in body and not isinstance(body[name], str):
            return None, f"Invalid input JSON: {name} must be a string"
    associations = body.get("associations", [])
    if not isinstance(associations, list):
        return None, "Invalid input JSON: associations must be a list"
    if associations:
        # Not emulated: create the links with the associations API (hubspot_associations.py)
        # once the record exists. Refused rather than dropped, so nothing is lost unseen.
        return None, ("associations on a single create are not emulated by the sandbox; "
                      "use POST /crm/v4/associations/{from}/{to}/batch/create")
    return body, None


class HubSpotSingleHandlers(HubSpotBatchHandlers):
    """`POST /crm/v3/objects/{objectType}` and `PATCH .../{objectId}`."""

    def routes(self) -> list[Route]:
        # The PATCH shares its path with hubspot.py's GET of one record; Starlette takes the
        # route whose method matches too.
        return [Route(_BASE, self.create, methods=["POST"]),
                Route(f"{_BASE}/{{objectId}}", self.update, methods=["PATCH"])]

    def conflict(self, obj: ObjectType, properties: dict, record_id: str | None,
                 headers) -> JSONResponse | None:
        """409 when a unique value in `properties` belongs to another record."""
        for prop in sorted(obj.unique):
            value = properties.get(prop)
            holder = self.owner(obj, prop, value) if value else None
            if holder is not None and holder != record_id:
                return whole_batch_error(conflict_error(obj, prop, holder, None), headers)
        return None

    @staticmethod
    def refused_values(problems: list[dict], headers) -> JSONResponse:
        """400 VALIDATION_ERROR, the body the batch endpoints answer for one bad input."""
        return whole_batch_error(input_error(problems, None), headers)

    async def create(self, request: Request):
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        body, problem = parse_body(await request.body(), _CREATE_FIELDS)
        if problem:
            return error(400, problem, headers=headers)
        properties = {k: as_text(v) for k, v in body["properties"].items()}
        # No id and no idProperty: the values alone are checked.
        problems = property_problems(obj, "", "", properties)
        if problems:
            return self.refused_values(problems, headers)
        with self.state.db.transaction():
            refused = self.conflict(obj, properties, None, headers)
            if refused:
                return refused
            result = self.write(obj, None, None, None, properties, now_ms())
        self.state.count("hubspot records created")
        return JSONResponse(answer(result, body), 201, headers=headers)

    async def update(self, request: Request):
        obj, headers, refused = self.admit_object(request)
        if refused:
            return refused
        object_id = request.path_params["objectId"]
        id_property = request.query_params.get("idProperty") or None
        if id_property and id_property not in obj.unique | {"hs_object_id"}:
            # The batch endpoints' words for a non-unique idProperty (REFERENCE.md §3).
            return error(400, f"Unable to perform update by non-unique {obj.type_id} property "
                              f"{id_property}", headers=headers)
        body, problem = parse_body(await request.body(), _UPDATE_FIELDS)
        if problem:
            return error(400, problem, headers=headers)
        properties = {k: as_text(v) for k, v in body["properties"].items()}
        by_value = id_property not in (None, "hs_object_id")
        with self.state.db.transaction():
            record_id = self.owner(obj, id_property, object_id) if by_value else object_id
            if record_id is None or self.state.db.get(CRM, obj.name, record_id) is None:
                # The GET's 404 (hubspot.py, read_one).
                return error(404, "Object not found.  objectId are usually numeric.",
                             "OBJECT_NOT_FOUND", context={"id": [object_id]}, headers=headers)
            # By a unique property, the sandbox's rule of the batch upsert holds: a value of
            # that property in `properties` must be the one in the path.
            problems = property_problems(obj, id_property if by_value else "",
                                         object_id if by_value else "", properties)
            if problems:
                return self.refused_values(problems, headers)
            refused = self.conflict(obj, properties, record_id, headers)
            if refused:
                return refused
            result = self.write(obj, record_id, None, None, properties, now_ms())
        self.state.count("hubspot records updated")
        return JSONResponse(answer(result, body), headers=headers)


def answer(result: dict, body: dict) -> dict:
    """HubSpot's SimplePublicObject: id, properties, createdAt, updatedAt, archived."""
    out = {k: result[k] for k in ("id", "properties", "createdAt", "updatedAt", "archived")}
    if body.get("objectWriteTraceId"):
        out["objectWriteTraceId"] = body["objectWriteTraceId"]
    return out


def routes(state) -> list[Route]:
    return HubSpotSingleHandlers(state).routes()
