"""Salesforce's request rules and error shapes, in the sandbox's own copy: how a body is read,
which values a field refuses, the versions an org answers to, and the errors it answers with.

From ../shared/crm-docs (REFERENCE.md, Salesforce) and the REST API reference;
docs/sandbox/salesforce.md lists each strict choice made where the documentation is silent.
"""

from __future__ import annotations

import json
import math
import re
from datetime import date

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


# Salesforce's REST API, "Valid Date and DateTime Formats"
# (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/
# intro_valid_date_formats.htm): dateTime is yyyy-MM-ddTHH:mm:ss.SSS+/-HH:mm or
# yyyy-MM-ddTHH:mm:ss.SSSZ ("SSS is the optional three-digit milliseconds"), date is yyyy-MM-dd
# ("Specifying an offset for date is not supported"). Anything else fails the whole request
# with JSON_PARSER_ERROR, e.g. the captured answer to "2017-10-17 00:00:00" (a space, no zone):
# [{"message":"Cannot deserialize instance of datetime from VALUE_STRING value 2017-10-17
# 00:00:00 or request may be missing a required field at [line:1, column:129]",
# "errorCode":"JSON_PARSER_ERROR"}] (https://github.com/regican/Salesforce/issues/2; the same
# for "2024-07-30 20:54:16 UTC": https://github.com/restforce/restforce/issues/897, and for a
# dateTime sent to a date field: https://github.com/qoretechnologies/qore/issues/3908).
# Inferred: the offset without a colon (+0000), which is how Salesforce writes its own
# dateTimes. Guess (strict): no zone at all (2017-10-17T00:00:00) is refused.
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME_TEXT = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})T([01][0-9]|2[0-3]):[0-5][0-9]:"
                            r"[0-5][0-9](?:\.[0-9]{3})?(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])")


def _is_date(text: str) -> bool:
    if not _DATE_TEXT.fullmatch(text):
        return False
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _is_datetime(text: str) -> bool:
    match = _DATETIME_TEXT.fullmatch(text)
    return bool(match) and _is_date(match.group(1))


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
        elif fld.restricted and fld.type == "picklist" and \
                value not in {v for v, active in fld.picklist if active}:
            # "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: <value>: bad value for restricted
            # picklist field" (https://salesforcedictionary.com/errors/invalid-or-null-for-
            # restricted-picklist; Gearset's data-deployment docs). An unrestricted picklist
            # takes any text. Inferred: matched with case, fields [<name>].
            problems.append(save_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                                       f"{label}: bad value for restricted picklist field: "
                                       f"{value}", [name]))
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

