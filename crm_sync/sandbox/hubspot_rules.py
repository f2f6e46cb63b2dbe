"""HubSpot's rules and answer shapes, in the sandbox's own copy: what a batch request must
look like, which property values HubSpot refuses, and the bodies it answers with.

From ../shared/crm-docs (REFERENCE.md, HubSpot) and HubSpot's reference; docs/sandbox/hubspot.md
lists each strict choice made where HubSpot's documentation is silent.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from starlette.responses import JSONResponse

from crm_sync.sandbox.hubspot_objects import PORTAL_ID, ObjectType
from crm_sync.sandbox.hubspot_values import email_problem, value_problem

# "max batch: 100 inputs" (REFERENCE.md, HubSpot, citing developers.hubspot.com contacts#limits).
HUBSPOT_MAX_INPUTS = 100


# -- answers in HubSpot's shapes -----------------------------------------------------------------
def iso(ms: int) -> str:
    """Epoch milliseconds as HubSpot writes timestamps: 2019-10-30T03:30:17.883Z."""
    stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error(status: int, message: str, category: str | None = "VALIDATION_ERROR", *,
          headers: dict | None = None, **extra) -> JSONResponse:
    """HubSpot's standard error body: status, message, correlationId, category, errors?,
    context?. (HubSpot says every field is optional; the sandbox leaves out what it has not.)"""
    body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
    if category:
        body["category"] = category
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status, headers=headers)


def validation_result(prop: str, code: str, message: str, value: str | None = None) -> dict:
    """One entry of HubSpot's `Property values were not valid: [...]` list, with the fields and
    in the order of the captured body in Atlas-Authority/marketing-automation#206: isValid,
    message, error, name, localizedErrorMessage, propertyValue, portalId."""
    result = {"isValid": False, "message": message, "error": code, "name": prop,
              "localizedErrorMessage": message}
    if value is not None:
        result["propertyValue"] = value
    result["portalId"] = PORTAL_ID
    return result


def input_error(problems: list[dict], trace_id: str | None) -> dict:
    """The `errors[]` element of a 207 for one input whose property values were refused."""
    return {
        "status": "error",
        "category": "VALIDATION_ERROR",
        "message": "Property values were not valid: "
                   + json.dumps(problems, separators=(",", ":"), ensure_ascii=False),
        "context": {"objectWriteTraceId": [trace_id]} if trace_id else {},
        "errors": [{"message": p["message"], "code": p["error"],
                    "context": {"propertyName": [p["name"]]}} for p in problems],
        "links": {},
    }


def conflict_error(obj: ObjectType, prop: str, owner: str, trace_id: str | None) -> dict:
    """A unique value the input would set already belongs to another record."""
    message = f"{obj.label} already exists. Existing ID: {owner}"
    context = {"existingId": [owner]}
    if trace_id:
        context["objectWriteTraceId"] = [trace_id]
    return {"status": "error", "category": "CONFLICT", "message": message, "context": context,
            "errors": [{"message": message, "code": "CONFLICT",
                        "context": {"propertyName": [prop]}}],
            "links": {}}


# -- request parsing ------------------------------------------------------------------------------
def json_body(raw: bytes) -> tuple[object, str | None]:
    """(the decoded body, None) or (None, the message of the 400 for a body that is not JSON)."""
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as exc:
        return None, f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
    except UnicodeDecodeError:
        return None, "Invalid input JSON: the body is not UTF-8"


def batch_inputs(raw: bytes) -> tuple[list | None, str | None]:
    """The `inputs` list of a batch request body, or (None, the message of its 400): JSON, an
    object with a list of `inputs`, at least one and at most HUBSPOT_MAX_INPUTS of them."""
    body, problem = json_body(raw)
    if problem:
        return None, problem
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return None, 'Invalid input JSON: expected an object {"inputs": [...]}'
    inputs = body["inputs"]
    if not inputs:
        return None, "inputs must contain at least one input"
    if len(inputs) > HUBSPOT_MAX_INPUTS:
        return None, (f"The maximum number of inputs supported in a batch request is "
                      f"{HUBSPOT_MAX_INPUTS}. Please reduce the number of items and try again")
    return inputs, None


def parse_inputs(raw: bytes) -> tuple[list[dict] | None, str | None]:
    """(inputs, None) or (None, the message of HubSpot's whole-request 400)."""
    inputs, problem = batch_inputs(raw)
    if problem:
        return None, problem
    for index, entry in enumerate(inputs):
        problem = _input_shape_problem(entry)
        if problem:
            return None, f"Invalid input JSON: inputs[{index}] {problem}"
    return inputs, None


def _input_shape_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return "must be an object"
    unknown = set(entry) - {"id", "idProperty", "properties", "objectWriteTraceId"}
    if unknown:
        return f"has unrecognized field(s) {sorted(unknown)}"
    if not isinstance(entry.get("id"), str) or not entry["id"].strip():
        return "needs an `id`: the value of its idProperty, as a non-empty string"
    if not isinstance(entry.get("idProperty"), str) or not entry["idProperty"]:
        return "needs an `idProperty`: the name of a property with unique values"
    properties = entry.get("properties")
    if not isinstance(properties, dict):
        return "needs `properties`: an object of property name -> value"
    for name, value in properties.items():
        if value is not None and not isinstance(value, (str, int, float, bool)):
            return f"property {name!r} must be a string, a number or a boolean"
    trace = entry.get("objectWriteTraceId")
    if trace is not None and not isinstance(trace, str):
        return "objectWriteTraceId must be a string"
    return None


def parse_archive_inputs(raw: bytes) -> tuple[list[str] | None, str | None]:
    """(record ids, None) of a batch/archive request, or (None, the message of its 400)."""
    inputs, problem = batch_inputs(raw)
    if problem:
        return None, problem
    ids = []
    for index, entry in enumerate(inputs):
        if not isinstance(entry, dict) or set(entry) != {"id"} or \
                not isinstance(entry["id"], str) or not entry["id"].strip():
            return None, (f'Invalid input JSON: inputs[{index}] must be {{"id": "<record id>"}} '
                          "with the record id as a non-empty string")
        ids.append(entry["id"])
    return ids, None


def as_text(value) -> str | None:
    """HubSpot property values are strings; numbers and booleans are read as their text."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def property_problems(obj: ObjectType, id_property: str, id_value: str,
                      properties: dict[str, str | None]) -> list[dict]:
    """Every rule the input's properties (and its id) break, as HubSpot's validation results."""
    problems = []
    for prop, value in properties.items():
        kind = obj.properties.get(prop)
        if prop in obj.read_only:
            problems.append(validation_result(
                prop, "READ_ONLY_VALUE", f'"{prop}" is a read only property; its value cannot '
                                         f'be set.', value))
        elif kind is None:
            problems.append(validation_result(
                prop, "PROPERTY_DOESNT_EXIST", f'Property "{prop}" does not exist', value))
        elif value in (None, ""):
            continue  # clears the value
        else:
            refused = value_problem(kind, value, obj.options.get(prop, ()))
            if refused:
                problems.append(validation_result(prop, *refused, value))
    if obj.properties.get(id_property) == "email" and email_problem(id_value) and \
            properties.get(id_property) != id_value:
        problems.append(validation_result(id_property, *email_problem(id_value), id_value))
    if id_property in properties and \
            obj.normalize(id_property, properties[id_property] or "") != \
            obj.normalize(id_property, id_value):
        # The sandbox's own strict rule: the id and the idProperty's value must agree.
        problems.append(validation_result(
            id_property, "INVALID_VALUE",
            f"{id_property} is {properties[id_property]!r} in properties but the input's id is "
            f"{id_value!r}; they must be the same"))
    return problems

