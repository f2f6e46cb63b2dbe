"""Salesforce's request rules and error shapes, in the sandbox's own copy: how a body is read,
which values a field refuses, the versions an org answers to, and the errors it answers with.

From ../shared/crm-docs (REFERENCE.md, Salesforce) and the REST API reference;
docs/sandbox/salesforce.md lists each strict choice made where the documentation is silent.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date, datetime

from crm_sync.sandbox.formats import EMAIL as _EMAIL
from crm_sync.sandbox.salesforce_schema import NUMBER_TYPES, TEXT_TYPES, SfField, SObjectType

MIN_UPSERT_VERSION = 46  # "This request is available in API version 46 and later."
MIN_COLLECTIONS_VERSION = 42  # sObject Collections (create/update/delete): 42.0 and later
OLDEST_VERSION, LATEST_VERSION = 31, 68  # the versions an org answers to (older ones retired)
MAX_RECORDS = 200  # "The list can contain up to 200 objects." (REFERENCE.md, Salesforce max)
ROLLED_BACK = ("ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "Record rolled back because not all records were valid and the request was "
               "using AllOrNone header")
NOT_FOUND = "The requested resource does not exist"

_VERSION = re.compile(r"^(\d{2})\.0$")
_INT32 = 2**31 - 1


# -- errors ------------------------------------------------------------------------------------
class RequestError(Exception):
    """A whole-request failure: answered as `[{"message", "errorCode"}]` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, fields: list[str] | None = None,
                 items: list[dict] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields
        self.items = items

    def body(self) -> list[dict]:
        if self.items is not None:
            return self.items
        item = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            item["fields"] = self.fields
        return [item]


def save_error(code: str, message: str, fields: list[str] | None = None) -> dict:
    return {"statusCode": code, "message": message, "fields": fields or []}


def _token(value) -> str:
    if isinstance(value, bool):
        return "VALUE_TRUE" if value else "VALUE_FALSE"
    return {str: "VALUE_STRING", int: "VALUE_NUMBER_INT", float: "VALUE_NUMBER_FLOAT",
            list: "START_ARRAY", dict: "START_OBJECT"}.get(type(value), "VALUE_EMBEDDED_OBJECT")


def parser_error(java_type: str, value) -> RequestError:
    shown = json.dumps(value)[:80] if not isinstance(value, str) else value[:80]
    return RequestError(400, "JSON_PARSER_ERROR",
                        f"Cannot deserialize instance of {java_type} from {_token(value)} value "
                        f"{shown} or request may be missing a required field")


def check_type(fld: SfField, value) -> None:
    """Raise JSON_PARSER_ERROR when a JSON value cannot be read as the field's type: Salesforce
    deserializes the whole body before it processes any record, so this fails the request."""
    if value is None:
        return
    kind = fld.type
    if kind in TEXT_TYPES:
        ok, java = isinstance(value, str), "string"
    elif kind == "int":
        ok = (isinstance(value, int) and not isinstance(value, bool)) or \
            (isinstance(value, float) and value.is_integer())
        if ok and abs(value) > _INT32:
            raise RequestError(400, "JSON_PARSER_ERROR",
                               f"Numeric value ({value}) out of range of int")
        java = "int"
    elif kind in NUMBER_TYPES:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        java = "double"
    elif kind == "boolean":
        ok, java = isinstance(value, bool), "boolean"
    elif kind == "date":
        ok, java = isinstance(value, str) and _is_date(value), "date"
    else:  # datetime
        ok, java = isinstance(value, str) and _is_datetime(value), "datetime"
    if not ok:
        raise parser_error(java, value)


def _is_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", text))
    except ValueError:
        return False


def _is_datetime(text: str) -> bool:
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
        return True
    except ValueError:
        return False


def blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def field_errors(sobj: SObjectType, changes: dict) -> list[dict]:
    """The per-record errors (SaveResult errors) of one record's values: read-only fields,
    text lengths, email format, numeric range."""
    problems = []
    for name, value in changes.items():
        fld = sobj.fields[name]
        label = sobj.label(name)
        if name == "Id":
            # "Only external ids are supported. Don't use record ids." (the docs' example error)
            problems.append(save_error("MALFORMED_ID", f"{sobj.name} ID: id value of incorrect "
                                       f"type: {value}", ["Id"]))
            continue
        if not fld.writable:
            problems.append(save_error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {name}. Please check the security settings of "
                f"this field and verify that it is read/write for your profile or permission set.",
                [name]))
            continue
        if value is None:
            continue
        if fld.type in TEXT_TYPES and fld.length is not None and len(value) > fld.length:
            problems.append(save_error("STRING_TOO_LONG", f"{label}: data value too large: "
                                       f"{value[:100]} (max length={fld.length})", [name]))
        elif fld.type == "email" and value != "" and not _EMAIL.match(value):
            problems.append(save_error("INVALID_EMAIL_ADDRESS",
                                       f"{label}: invalid email address: {value}", [name]))
        elif fld.digits is not None and (fld.type == "int" or fld.type in NUMBER_TYPES) and \
                (not math.isfinite(value) or abs(value) >= 10 ** fld.digits):
            problems.append(save_error("NUMBER_OUTSIDE_VALID_RANGE", f"{label}: value outside "
                                       f"of valid range on numeric field: {value}", [name]))
    return problems


def required_errors(sobj: SObjectType, changes: dict, creating: bool) -> list[dict]:
    # A create needs every required field; an update may leave them out but not blank them.
    missing = [name for name in sobj.required
               if (creating and blank(changes.get(name))) or
               (not creating and name in changes and blank(changes[name]))]
    if not missing:
        return []
    return [save_error("REQUIRED_FIELD_MISSING",
                       f"Required fields are missing: [{', '.join(missing)}]", missing)]


def parse_body(raw: bytes):
    """The body as JSON, or JSON_PARSER_ERROR (NaN and Infinity are not JSON)."""
    if not raw.strip():
        raise RequestError(400, "JSON_PARSER_ERROR", "No content to map due to end-of-input")

    def refuse(constant):
        raise ValueError(f"Non-standard token '{constant}': not allowed in JSON")

    try:
        return json.loads(raw.decode("utf-8"), parse_constant=refuse)
    except json.JSONDecodeError as exc:
        raise RequestError(400, "JSON_PARSER_ERROR",
                           f"{exc.msg} at [line:{exc.lineno}, column:{exc.colno}]") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, "JSON_PARSER_ERROR", str(exc)) from None


def collection_body(body, sobj: SObjectType) -> tuple[list, bool]:
    """(records, allOrNone) of a collections request, or the 400 Salesforce answers."""
    if not isinstance(body, dict):
        raise parser_error("SObjectCollectionUpsertRequest", body)
    unknown = set(body) - {"allOrNone", "records"}
    if unknown:
        raise RequestError(400, "JSON_PARSER_ERROR",
                           f"Unrecognized field \"{sorted(unknown)[0]}\"")
    all_or_none = body.get("allOrNone", False)
    if not isinstance(all_or_none, bool):
        raise parser_error("boolean", all_or_none)
    records = body.get("records")
    if records is None:
        raise RequestError(400, "MISSING_ARGUMENT", "records: a list of sObjects is required")
    if not isinstance(records, list):
        raise parser_error(f"List<SObject[{sobj.name}]>", records)
    if not records:
        raise RequestError(400, "MISSING_ARGUMENT", "records: the list must not be empty")
    if len(records) > MAX_RECORDS:
        raise RequestError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more "
                                                     f"than {MAX_RECORDS} records into this call")
    return records, all_or_none


def check_version(version: str, minimum: int = OLDEST_VERSION) -> str:
    match = _VERSION.match(version)
    if not match or not minimum <= int(match.group(1)) <= LATEST_VERSION:
        raise RequestError(404, "NOT_FOUND", NOT_FOUND)
    return version


def version_label(major: int) -> str:
    season = ("Spring", "Summer", "Winter")[(major - 60) % 3]
    return f"{season} '{24 + (major - 60 + 1) // 3:02d}"


def record_error(errors: list[dict]) -> RequestError:
    """A single-record resource answers its record's errors as a 400 error list."""
    first = errors[0]
    return RequestError(400, first["statusCode"], first["message"], first["fields"], items=[
        {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
        for e in errors])

