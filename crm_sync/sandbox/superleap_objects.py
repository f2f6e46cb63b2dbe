"""Superleap's object description: `GET /api/v1/appflow/objects/{object_slug}` ("Get Object").

Documented (https://docs.superleap.com/api-reference/appflow/get_object): the answer
`{"success": true, "data": {entity_identifier, label, description, has_nested_entities,
is_writable, fields: [...]}}`, each field with `field_name`, `data_type` ("String"),
`data_type_label` ("varchar"), `label`, `description`, `is_primary_key`, `is_deprecated` and
`read_properties` (`is_retrievable`, `is_nullable`, `is_queryable`,
`is_timestamp_field_for_incremental_queries`).

Inferred: the field shape is the AWS AppFlow custom connector SDK's `FieldDefinition` in
snake case (the endpoint serves Superleap's AppFlow connector; every documented key is one of
the SDK's: github.com/awslabs/aws-appflow-custom-connector-python,
custom_connector_sdk/connector/fields.py). So the sandbox also serves the SDK's
`write_properties` (`is_creatable`, `is_updatable`, `is_nullable`, `is_upsertable`,
`is_defaulted_on_create`) and `constraints` (`allowed_length_range: {min_range, max_range}`,
`allowed_values`), and `data_type` is one of the SDK's FieldDataType names.

GUESS (docs/sandbox/superleap.md): Superleap's documented example shows neither
`write_properties` nor `constraints` (and `is_writable: false`: the AppFlow connector reads);
a field-level `is_unique` (core_concepts names `is_unique` as a field property, not where it is
served); `data_type_label` values `email`, `phone`, `enum`, `reference`, `timestamp`.

The objects are defined by one editable fixture per object, `fixtures/superleap/<slug>.json`
(the answer's `data`, as served).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from crm_sync.sandbox.state import SandboxState, bearer_ok

CRM = "superleap"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / CRM


@lru_cache(maxsize=None)
def _fixture(slug: str) -> dict | None:
    path = FIXTURES / f"{slug}.json"
    if not slug.replace("_", "").isalnum() or not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def object_slugs() -> set[str]:
    """The objects the fixtures define."""
    return {p.stem for p in FIXTURES.glob("*.json")}


def description(slug: str) -> dict | None:
    """The `data` of Get Object for `slug`, None for an object no fixture defines."""
    data = _fixture(slug)
    return json.loads(json.dumps(data)) if data is not None else None  # a copy


# GUESS (Superleap documents no value rules beyond email and phone): a value must fit its
# field's `data_type` (the AppFlow SDK's FieldDataType names) as the object's fixture declares
# it. JSON types are strict: a number field takes a JSON number, not the text "12". The
# fixtures' `allowed_values` and `allowed_length_range` are served (Get Object) but not
# enforced on write: they are themselves guesses (no Superleap object's options or lengths are
# documented), and a text field that takes any text is what the documented examples show.
_JSON_TYPES = {"Integer": int, "Long": int, "Short": int, "BigInteger": int,
               "Float": (int, float), "Double": (int, float), "BigDecimal": (int, float),
               "Boolean": bool, "String": str, "Date": str, "DateTime": str}
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_DATETIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?"
                       r"(?:Z|[+-][0-9]{2}:?[0-9]{2})$")


@lru_cache(maxsize=None)
def _fields(slug: str) -> dict[str, dict]:
    data = _fixture(slug)
    return {f["field_name"]: f for f in (data or {}).get("fields", ())}


def value_problem(slug: str, name: str, value) -> str | None:
    """Why `value` cannot go into field `name` of object `slug` (None: it can, or the fixture
    does not describe the field)."""
    field = _fields(slug).get(name)
    if field is None or value is None:
        return None
    kind = field.get("data_type")
    expected = _JSON_TYPES.get(kind)
    wrong_bool = isinstance(value, bool) and kind != "Boolean"
    if expected is not None and (wrong_bool or not isinstance(value, expected)):
        return f"invalid value for field {name}: expected {kind}"
    if kind == "Date" and not _DATE.match(value) or kind == "DateTime" and \
            not _DATETIME.match(value):
        return f"invalid value for field {name}: expected {kind}"
    return None


def _error(status: int, code: str, message: str) -> JSONResponse:
    # The envelope of Superleap's documented errors (REFERENCE.md §1; superleap.py's `error`).
    return JSONResponse({"success": False, "data": {"message": message, "status_code": status,
                                                    "error_code": code}}, status)


def routes(state: SandboxState) -> list[Route]:
    async def get_object(request: Request):
        if not bearer_ok(request, state.tokens[CRM]):
            return _error(401, "UNAUTHORIZED", "invalid or missing bearer token")
        slug = request.path_params["slug"]
        data = description(slug)
        if data is None:  # GUESS: an unknown slug is 404 OBJECT_NOT_FOUND, as for records
            return _error(404, "OBJECT_NOT_FOUND", f"object not found: {slug}")
        return JSONResponse({"success": True, "data": data})

    return [Route("/api/v1/appflow/objects/{slug}", get_object, methods=["GET"])]
