"""Salesforce REST API: the sObject Collections upsert, as ../shared/crm-docs describe it, plus
the few REST resources the official SDK (simple-salesforce) reaches for.

    PATCH /services/data/vXX.X/composite/sobjects/{SObject}/{ExternalIdField}   (v46.0+)
          {"allOrNone": false, "records": [{"attributes": {"type": "Account"}, ...}]}
      ->  200 [{"id", "success", "errors": [{"statusCode", "message", "fields"}], "created"}]
    DELETE /services/data/vXX.X/composite/sobjects?ids=<id>,<id>[&allOrNone=false]  (v42.0+)
      ->  200 [{"id", "success", "errors"}]   (DeleteResults, in the order of the ids)

Every authenticated request spends one unit of the org's daily allowance (a rolling 24 hours,
kept in the sandbox database so a restart or a second process sees the same usage) and every
answer to it carries `Sforce-Limit-Info: api-usage=N/M`; once the allowance is spent the answer
is 403 REQUEST_LIMIT_EXCEEDED. docs/sandbox/salesforce.md lists what is emulated and every
strict choice made where Salesforce's documentation is silent.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import string
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from functools import cached_property

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from crm_sync.sandbox.formats import EMAIL as _EMAIL
from crm_sync.sandbox.state import SandboxState, bearer_ok, now_ms

CRM = "salesforce"
MIN_UPSERT_VERSION = 46  # "This request is available in API version 46 and later."
MIN_COLLECTIONS_VERSION = 42  # sObject Collections (create/update/delete): 42.0 and later
RECYCLE_BIN = "_recycle_bin"  # where deleted records' ids are kept (ENTITY_IS_DELETED)
OLDEST_VERSION, LATEST_VERSION = 31, 68  # the versions an org answers to (older ones retired)
MAX_RECORDS = 200  # "The list can contain up to 200 objects." (REFERENCE.md, Salesforce max)
SCHEMA_OBJECT = "_sobject_types"  # where sObject types registered at run time are stored

ROLLED_BACK = ("ALL_OR_NONE_OPERATION_ROLLED_BACK",
               "Record rolled back because not all records were valid and the request was "
               "using AllOrNone header")
NOT_FOUND = "The requested resource does not exist"

_VERSION = re.compile(r"^(\d{2})\.0$")
_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_CHARS = string.ascii_uppercase + "012345"
_USAGE_PREFIX = "salesforce api-usage "
_INT32 = 2**31 - 1


# -- sObject types ---------------------------------------------------------------------------
TEXT_TYPES = frozenset({"string", "email", "phone", "url", "picklist", "textarea", "id"})
NUMBER_TYPES = frozenset({"double", "currency", "percent"})
FIELD_TYPES = TEXT_TYPES | NUMBER_TYPES | {"int", "boolean", "date", "datetime"}


@dataclass(frozen=True)
class SfField:
    type: str = "string"
    length: int | None = 255  # text fields: max characters
    digits: int | None = None  # numeric fields: max digits left of the decimal point
    label: str | None = None
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False  # text external ids match case-insensitively unless this
    writable: bool = True


@dataclass(frozen=True)
class SObjectType:
    name: str
    key_prefix: str
    fields: dict[str, SfField]
    required: tuple[str, ...] = ()

    @cached_property
    def _by_lower(self) -> dict[str, str]:
        return {name.lower(): name for name in self.fields}

    def field(self, name: str) -> tuple[str, SfField] | None:
        """(API name, field) of a field, found case-insensitively as Salesforce does."""
        canonical = self._by_lower.get(name.lower())
        return (canonical, self.fields[canonical]) if canonical else None

    def label(self, name: str) -> str:
        return self.fields[name].label or name.removesuffix("__c").replace("_", " ")


def _system_fields() -> dict[str, SfField]:
    stamp = SfField("datetime", length=None, writable=False)
    ref = SfField("id", length=18, writable=False)
    return {"Id": SfField("id", length=18, writable=False, label="Record ID"),
            "IsDeleted": SfField("boolean", length=None, writable=False), "CreatedDate": stamp,
            "CreatedById": ref, "LastModifiedDate": stamp, "LastModifiedById": ref,
            "SystemModstamp": stamp}


def _sobject(name: str, prefix: str, required: tuple[str, ...], **fields: SfField) -> SObjectType:
    ext = SfField(external_id=True, label="External Id")  # External ID, not Unique: the default
    return SObjectType(name, prefix, {**_system_fields(), "External_Id__c": ext, **fields},
                       required)


_S = SfField
_INT = SfField("int", length=None, digits=8)
_MONEY = SfField("currency", length=None, digits=18, label="Annual Revenue")
_BOOL = SfField("boolean", length=None)
BUILTIN_SOBJECTS: dict[str, SObjectType] = {s.name.lower(): s for s in (
    _sobject(
        "Account", "001", ("Name",),
        Name=_S(label="Account Name"), MyExtId__c=_S(external_id=True),  # the docs' example field
        AccountNumber=_S(length=40), Website=_S("url"), Industry=_S("picklist"),
        Type=_S("picklist"), NumberOfEmployees=SfField("int", None, 8, "Employees"),
        AnnualRevenue=_MONEY, Phone=_S("phone", 40), Fax=_S("phone", 40),
        BillingStreet=_S("textarea"), BillingCity=_S(length=40), BillingState=_S(length=80),
        BillingPostalCode=_S(length=20), BillingCountry=_S(length=80),
        ShippingCity=_S(length=40), ShippingCountry=_S(length=80),
        Description=_S("textarea", 32000), Rating=_S("picklist")),
    _sobject(
        "Contact", "003", ("LastName",),
        FirstName=_S(length=40), LastName=_S(length=80), Email=_S("email", 80),
        Phone=_S("phone", 40), MobilePhone=_S("phone", 40), Title=_S(length=128),
        Department=_S(length=80), Birthdate=_S("date", None), LeadSource=_S("picklist"),
        MailingCity=_S(length=40), MailingCountry=_S(length=80),
        HasOptedOutOfEmail=_BOOL, Description=_S("textarea", 32000)),
    _sobject(
        "Lead", "00Q", ("LastName", "Company"),
        FirstName=_S(length=40), LastName=_S(length=80), Company=_S(), Email=_S("email", 80),
        Phone=_S("phone", 40), Title=_S(length=128), Status=_S("picklist"),
        Industry=_S("picklist"), LeadSource=_S("picklist"), Website=_S("url"),
        NumberOfEmployees=_INT, AnnualRevenue=_MONEY, City=_S(length=40),
        Country=_S(length=80), HasOptedOutOfEmail=_BOOL, Description=_S("textarea", 32000)),
)}


def sobject_from_dict(data: dict) -> SObjectType:
    """An sObject type registered at run time (POST /_sandbox/salesforce/sobjects)."""
    name, prefix = data["name"], data["key_prefix"]
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"not an sObject API name: {name!r}")
    if not re.fullmatch(r"[A-Za-z0-9]{3}", prefix):
        raise ValueError(f"key_prefix must be 3 alphanumerics, got {prefix!r}")
    fields = {}
    for fname, spec in (data.get("fields") or {}).items():
        spec = dict(spec or {})
        if spec.get("type", "string") not in FIELD_TYPES:
            raise ValueError(f"field {fname}: type must be one of {sorted(FIELD_TYPES)}")
        unknown = set(spec) - set(SfField.__dataclass_fields__)
        if unknown:
            raise ValueError(f"field {fname}: unknown settings {sorted(unknown)}")
        fields[fname] = SfField(**spec)
    required = tuple(data.get("required") or ())
    missing = [r for r in required if r not in fields]
    if missing:
        raise ValueError(f"required fields {missing} are not among the fields")
    return SObjectType(name, prefix, {**_system_fields(), **fields}, required)


# -- record ids --------------------------------------------------------------------------------
def case_safe_suffix(id15: str) -> str:
    """The 3 characters that make a 15-character id case-insensitive: one per 5-character
    chunk, encoding which of its characters are upper case."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _SUFFIX_CHARS[bits]
    return suffix


def new_record_id(key_prefix: str) -> str:
    # key prefix (3) + pod (2) + reserved (1) + record number (9), then the case-safe suffix.
    id15 = key_prefix + "5g0" + "".join(secrets.choice(_BASE62) for _ in range(9))
    return id15 + case_safe_suffix(id15)


def sf_datetime(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}+0000"


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


def _parser_error(java_type: str, value) -> RequestError:
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
        raise _parser_error(java, value)


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


def _blank(value) -> bool:
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
               if (creating and _blank(changes.get(name))) or
               (not creating and name in changes and _blank(changes[name]))]
    if not missing:
        return []
    return [save_error("REQUIRED_FIELD_MISSING",
                       f"Required fields are missing: [{', '.join(missing)}]", missing)]


# -- the emulation -----------------------------------------------------------------------------
@dataclass
class Plan:
    """What one record of a request will do, decided before anything is written."""

    changes: dict
    errors: list[dict] = field(default_factory=list)
    ext_value: str | None = None
    target: str | None = None  # the existing record an upsert updates
    new_id: str | None = None


class Salesforce:
    """The org: its sObject types, records, external id index and daily API allowance."""

    def __init__(self, state: SandboxState):
        self.state, self.db = state, state.db

    # sObject types ----------------------------------------------------------------------------
    def sobject(self, name: str) -> SObjectType:
        found = BUILTIN_SOBJECTS.get(name.lower())
        if found:
            return found
        for data in self.db.list(CRM, SCHEMA_OBJECT):
            if data["name"].lower() == name.lower():
                return sobject_from_dict(data)
        raise RequestError(404, "NOT_FOUND", NOT_FOUND)

    @staticmethod
    def external_id_field(sobj: SObjectType, name: str) -> str:
        found = sobj.field(name)
        if not found or not found[1].external_id:
            raise RequestError(404, "NOT_FOUND", "Provided external ID field does not exist or "
                                                 f"is not accessible: {name}")
        return found[0]

    # daily allowance -------------------------------------------------------------------------
    @staticmethod
    def _bucket(epoch: float) -> str:
        return _USAGE_PREFIX + time.strftime("%Y-%m-%dT%H", time.gmtime(epoch))

    def usage(self) -> int:
        """Requests in the rolling 24 hours (hour granularity), from the shared counters."""
        now = time.time()
        names = {self._bucket(now - hours * 3600) for hours in range(24)}
        return sum(v for k, v in self.db.counters().items() if k in names)

    def spend(self) -> tuple[bool, int]:
        """Count one request against the allowance; (admitted, usage after it)."""
        with self.db.transaction():  # check and count atomically, across processes
            used = self.usage()
            if used >= self.state.salesforce_daily_limit:
                return False, used
            self.db.bump(self._bucket(time.time()))
        return True, used + 1

    # external id index -----------------------------------------------------------------------
    # unique_values maps (sObject, field, value) to the ids holding it, comma-separated: an
    # External ID field need not be Unique, so several records may share a value.
    @staticmethod
    def index_key(fld: SfField, value) -> str:
        text = value if isinstance(value, str) else json.dumps(value)
        return text if fld.case_sensitive else text.lower()

    def matches(self, sobj: SObjectType, name: str, value) -> list[str]:
        ids = self.db.find_unique(CRM, sobj.name, name, self.index_key(sobj.fields[name], value))
        return ids.split(",") if ids else []

    def _index(self, sobj: SObjectType, name: str, value, record_id: str, add: bool) -> None:
        ids = [i for i in self.matches(sobj, name, value) if i != record_id]
        if add:
            ids.append(record_id)
        self.db.set_unique(CRM, sobj.name, name, self.index_key(sobj.fields[name], value),
                           ",".join(ids))

    def unique_conflicts(self, sobj: SObjectType, changes: dict, record_id: str | None,
                         claimed: dict | None = None) -> list:
        """DUPLICATE_VALUE for each Unique field whose value another record holds, stored or
        claimed by an earlier record of the same request (records are processed in order)."""
        problems = []
        for name, value in changes.items():
            fld = sobj.fields[name]
            if fld.unique and value is not None:
                others = [i for i in self.matches(sobj, name, value) if i != record_id]
                earlier = (claimed or {}).get((name, self.index_key(fld, value)))
                if earlier and earlier != record_id:
                    others.append(earlier)
                if others:
                    problems.append(save_error(
                        "DUPLICATE_VALUE", f"duplicate value found: {name} duplicates value on "
                                           f"record with id: {others[0]}", [name]))
        return problems

    # records ---------------------------------------------------------------------------------
    def parse_record(self, sobj: SObjectType, record, in_collection: bool) -> dict:
        """A record's values under their API names, or a whole-request error."""
        if not isinstance(record, dict):
            raise _parser_error(f"SObject[{sobj.name}]", record)
        # "Each object in the request body must contain an attributes map. The map must contain
        # a value for type." and "objects only of the type indicated in the request URI".
        attributes = record.get("attributes")
        if in_collection or attributes is not None:
            kind = attributes.get("type") if isinstance(attributes, dict) else None
            if not isinstance(kind, str) or not kind:
                raise RequestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
            if kind.lower() != sobj.name.lower():
                raise RequestError(400, "INVALID_TYPE",
                                   f"Record type {kind} does not match the sObject type of the "
                                   f"request URI: {sobj.name}")
        changes = {}
        for key, value in record.items():
            if key == "attributes":
                continue
            found = sobj.field(key)
            if not found:
                raise RequestError(400, "INVALID_FIELD",
                                   f"No such column '{key}' on sobject of type {sobj.name}")
            name, fld = found
            if name in changes:
                raise RequestError(400, "JSON_PARSER_ERROR", f"Duplicate field '{key}'")
            check_type(fld, value)
            changes[name] = value
        return changes

    def write(self, sobj: SObjectType, plan: Plan, ts: int) -> tuple[str, bool]:
        """Apply one planned record; (record id, created)."""
        stamp = sf_datetime(ts)
        if plan.target:
            record = self.db.get(CRM, sobj.name, plan.target) or {}
            before = dict(record)
            record.update(plan.changes, LastModifiedDate=stamp, SystemModstamp=stamp)
            rid, created = plan.target, False
        else:
            rid = plan.new_id or self.fresh_id(sobj)
            before = {}
            record = {"Id": rid, **plan.changes, "IsDeleted": False, "CreatedDate": stamp,
                      "CreatedById": self.user_id, "LastModifiedDate": stamp,
                      "LastModifiedById": self.user_id, "SystemModstamp": stamp}
            created = True
        self.db.put(CRM, sobj.name, rid, record, ts)
        for name, fld in sobj.fields.items():  # keep the index of matchable fields current
            if not (fld.external_id or fld.unique) or before.get(name) == record.get(name):
                continue
            if before.get(name) is not None:
                self._index(sobj, name, before[name], rid, add=False)
            if record.get(name) is not None:
                self._index(sobj, name, record[name], rid, add=True)
        return rid, created

    def fresh_id(self, sobj: SObjectType) -> str:
        while True:
            rid = new_record_id(sobj.key_prefix)
            if self.db.get(CRM, sobj.name, rid) is None:
                return rid

    @property
    def user_id(self) -> str:
        body = "0055g0" + (self.state.org + "000000000")[:9]
        return body + case_safe_suffix(body)

    # the collections upsert ------------------------------------------------------------------
    def plan_upsert(self, sobj: SObjectType, ext: str, records: list) -> list[Plan]:
        plans = [Plan(changes=self.parse_record(sobj, r, in_collection=True)) for r in records]
        ext_fld = sobj.fields[ext]
        for plan in plans:
            plan.errors = field_errors(sobj, plan.changes)
            value = plan.changes.get(ext)
            if _blank(value):
                plan.errors.append(save_error("MISSING_ARGUMENT", f"{ext} not specified", [ext]))
            else:
                plan.ext_value = value
        # "When batch updating multiple objects where the external ID is the same for two or more
        # objects in your batch call, those records are marked as errors in the UpsertResult."
        seen: dict[str, int] = {}
        for plan in plans:
            if plan.ext_value is not None:
                key = self.index_key(ext_fld, plan.ext_value)
                seen[key] = seen.get(key, 0) + 1
        for plan in plans:
            if plan.ext_value is not None and seen[self.index_key(ext_fld, plan.ext_value)] > 1:
                plan.errors.append(save_error(
                    "DUPLICATE_VALUE", f"Duplicate external id specified: {plan.ext_value}",
                    [ext]))
        claimed: dict[tuple[str, str], str] = {}
        for plan in plans:
            if not plan.errors:
                self.plan_match(sobj, ext, plan, claimed)
        return plans

    def plan_match(self, sobj: SObjectType, ext: str, plan: Plan,
                   claimed: dict | None = None) -> None:
        """Decide create or update by the external id; add what that decision runs into."""
        ids = self.matches(sobj, ext, plan.ext_value)
        if len(ids) > 1:
            plan.errors.append(save_error(
                "DUPLICATE_EXTERNAL_ID", f"more than one record found for external id field: "
                                         f"[{', '.join(ids)}]", [ext]))
            return
        plan.target = ids[0] if ids else None
        plan.errors += required_errors(sobj, plan.changes, creating=plan.target is None)
        plan.errors += self.unique_conflicts(sobj, plan.changes, plan.target, claimed)
        if plan.target is None:
            plan.new_id = self.fresh_id(sobj)
        if claimed is not None and not plan.errors:
            for name, value in plan.changes.items():
                if sobj.fields[name].unique and value is not None:
                    key = (name, self.index_key(sobj.fields[name], value))
                    claimed[key] = plan.target or plan.new_id

    def upsert_collection(self, sobj: SObjectType, ext: str, records: list,
                          all_or_none: bool) -> list[dict]:
        ts = now_ms()
        with self.db.transaction():  # every write of the request lands together, or none
            plans = self.plan_upsert(sobj, ext, records)
            failed = any(p.errors for p in plans)
            if all_or_none and failed:
                return [_rolled_back(p) for p in plans]
            results = []
            for plan in plans:
                if plan.errors:
                    results.append({"id": None, "success": False, "errors": plan.errors,
                                    "created": False})
                    continue
                rid, created = self.write(sobj, plan, ts)
                results.append({"id": rid, "success": True, "errors": [], "created": created})
            return results

    # the collections delete -----------------------------------------------------------------
    def sobject_by_prefix(self, key_prefix: str) -> SObjectType | None:
        for sobj in BUILTIN_SOBJECTS.values():
            if sobj.key_prefix == key_prefix:
                return sobj
        for data in self.db.list(CRM, SCHEMA_OBJECT):
            if data["key_prefix"] == key_prefix:
                return sobject_from_dict(data)
        return None

    def plan_delete(self, raw_id: str) -> tuple[str, SObjectType | None, dict | None]:
        """(18-character id, its sObject type, the record) of one id to delete, or raise a
        DeleteError with the DeleteResult error Salesforce gives for it."""
        rid = canonical_id(raw_id)
        if rid is None:
            raise DeleteError(None, "MALFORMED_ID", f"malformed id {raw_id}")
        if self.db.get(CRM, RECYCLE_BIN, rid) is not None:
            raise DeleteError(rid, "ENTITY_IS_DELETED", "entity is deleted")
        sobj = self.sobject_by_prefix(rid[:3])
        record = self.db.get(CRM, sobj.name, rid) if sobj else None
        if record is None:
            raise DeleteError(rid, "INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        return rid, sobj, record

    def delete_record(self, sobj: SObjectType, rid: str, record: dict) -> None:
        """Delete one record: out of the records and the external id / unique index (values
        other records share stay indexed for them), into the recycle bin."""
        for name, fld in sobj.fields.items():
            value = record.get(name)
            if (fld.external_id or fld.unique) and value is not None and \
                    [i for i in self.matches(sobj, name, value) if i != rid]:
                self._index(sobj, name, value, rid, add=False)
        self.db.delete(CRM, sobj.name, rid)  # drops the index rows only this record held
        self.db.put(CRM, RECYCLE_BIN, rid, {"Id": rid, "type": sobj.name, "IsDeleted": True},
                    now_ms())

    def delete_collection(self, ids: list[str], all_or_none: bool) -> list[dict]:
        """Delete records in the order given; one DeleteResult per id, in that order."""
        with self.db.transaction():  # every delete of the request lands together, or none
            results, planned = [], []
            for raw_id in ids:
                try:
                    rid, sobj, record = self.plan_delete(raw_id)
                except DeleteError as exc:
                    results.append(exc.result())
                    continue
                if all_or_none:  # nothing is deleted before every id is known to be fine
                    planned.append((len(results), rid, sobj, record))
                    results.append({"id": rid, "success": True, "errors": []})
                    continue
                self.delete_record(sobj, rid, record)
                results.append({"id": rid, "success": True, "errors": []})
            if all_or_none and any(not r["success"] for r in results):
                for index, rid, _, _ in planned:
                    results[index] = {"id": rid, "success": False,
                                      "errors": [save_error(*ROLLED_BACK)]}
            elif all_or_none:
                for _, rid, sobj, record in planned:
                    self.delete_record(sobj, rid, record)
            return results

    def as_resource(self, sobj: SObjectType, record: dict, version: str) -> dict:
        url = f"/services/data/v{version}/sobjects/{sobj.name}/{record['Id']}"
        return {"attributes": {"type": sobj.name, "url": url}, **record}


class DeleteError(Exception):
    """One id of a collections delete that cannot be deleted (the others go on)."""

    def __init__(self, rid: str | None, code: str, message: str):
        super().__init__(message)
        self.rid, self.code, self.message = rid, code, message

    def result(self) -> dict:
        # The documentation's example of a failed DeleteResult has no `id`: it is only shown
        # when the id was understood.
        entry = {"success": False, "errors": [save_error(self.code, self.message)]}
        return {"id": self.rid, **entry} if self.rid else entry


def canonical_id(value: str) -> str | None:
    """The 18-character form of a record id (15 characters get their case-safe suffix), or
    None when the value is not a well-formed record id."""
    if len(value) == 15 and value.isalnum() and value.isascii():
        return value + case_safe_suffix(value)
    if len(value) == 18 and value.isalnum() and value.isascii() and \
            value[15:].upper() == case_safe_suffix(value[:15]):
        return value[:15] + case_safe_suffix(value[:15])
    return None


def _rolled_back(plan: Plan) -> dict:
    # The docs' example: the record that was valid still shows the id it had been given.
    if plan.errors:
        return {"id": None, "success": False, "errors": plan.errors, "created": False}
    return {"id": plan.target or plan.new_id, "success": False,
            "errors": [save_error(*ROLLED_BACK)], "created": False}


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
        raise _parser_error("SObjectCollectionUpsertRequest", body)
    unknown = set(body) - {"allOrNone", "records"}
    if unknown:
        raise RequestError(400, "JSON_PARSER_ERROR",
                           f"Unrecognized field \"{sorted(unknown)[0]}\"")
    all_or_none = body.get("allOrNone", False)
    if not isinstance(all_or_none, bool):
        raise _parser_error("boolean", all_or_none)
    records = body.get("records")
    if records is None:
        raise RequestError(400, "MISSING_ARGUMENT", "records: a list of sObjects is required")
    if not isinstance(records, list):
        raise _parser_error(f"List<SObject[{sobj.name}]>", records)
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


def routes(state: SandboxState) -> list[Route]:
    org = Salesforce(state)

    def respond(body, status: int = 200, used: int | None = None) -> Response:
        response = JSONResponse(body, status)
        if used is not None:
            response.headers["Sforce-Limit-Info"] = \
                f"api-usage={used}/{state.salesforce_daily_limit}"
        return response

    def api(handler, minimum_version: int = OLDEST_VERSION, json_body: bool = False):
        """Auth, allowance, version and error shape shared by every REST resource."""

        async def endpoint(request: Request) -> Response:
            if not bearer_ok(request, state.tokens[CRM]):
                # No org is known without a valid session, so nothing is counted or reported.
                response = respond([{"message": "Session expired or invalid",
                                     "errorCode": "INVALID_SESSION_ID"}], 401)
                response.headers["WWW-Authenticate"] = 'Token'
                return response
            admitted, used = org.spend()
            if not admitted:
                state.count("salesforce limit_exceeded total")
                return respond([{"message": "TotalRequests Limit exceeded.",
                                 "errorCode": "REQUEST_LIMIT_EXCEEDED"}], 403, used)
            try:
                check_version(request.path_params["version"], minimum_version)
                body = None
                if json_body:
                    kind = request.headers.get("content-type", "application/json")
                    if "json" not in kind.lower():
                        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE",
                                           f"Content-Type header specified in HTTP request is "
                                           f"not supported: {kind}")
                    body = parse_body(await request.body())
                status, payload = handler(request, body)
            except RequestError as exc:
                return respond(exc.body(), exc.status, used)
            return respond(payload, status, used)

        return endpoint

    def collections_upsert(request: Request, body):
        sobj = org.sobject(request.path_params["sobject"])
        ext = org.external_id_field(sobj, request.path_params["field"])
        records, all_or_none = collection_body(body, sobj)
        return 200, org.upsert_collection(sobj, ext, records, all_or_none)

    def create(request: Request, body):
        sobj = org.sobject(request.path_params["sobject"])
        changes = org.parse_record(sobj, body, in_collection=False)
        plan = Plan(changes=changes, errors=field_errors(sobj, changes))
        with state.db.transaction():
            if not plan.errors:
                plan.errors = required_errors(sobj, changes, creating=True) + \
                    org.unique_conflicts(sobj, changes, None)
            if plan.errors:
                raise _record_error(plan.errors)
            rid, _ = org.write(sobj, plan, now_ms())
        return 201, {"id": rid, "success": True, "errors": []}

    def get_record(request: Request, body):
        sobj = org.sobject(request.path_params["sobject"])
        record = state.db.get(CRM, sobj.name, request.path_params["record_id"])
        if record is None:
            raise RequestError(404, "NOT_FOUND", NOT_FOUND)
        return 200, org.as_resource(sobj, record, request.path_params["version"])

    def by_external_id(request: Request, body):
        sobj = org.sobject(request.path_params["sobject"])
        ext = org.external_id_field(sobj, request.path_params["field"])
        value = request.path_params["value"]
        version = request.path_params["version"]
        if request.method == "GET":
            ids = org.matches(sobj, ext, value)
            if not ids:
                raise RequestError(404, "NOT_FOUND", "Provided external ID field does not exist"
                                                     f" or is not accessible: {value}")
            if len(ids) > 1:
                return 300, [f"/services/data/v{version}/sobjects/{sobj.name}/{i}" for i in ids]
            record = state.db.get(CRM, sobj.name, ids[0])
            return 200, org.as_resource(sobj, record, version)
        return upsert_one(sobj, ext, value, body, version)

    def upsert_one(sobj: SObjectType, ext: str, value: str, body, version: str):
        changes = org.parse_record(sobj, body, in_collection=False)
        # "Do not specify Id or an external ID field in the request body or an error is
        # generated."
        if "Id" in changes or ext in changes:
            named = "Id" if "Id" in changes else ext
            raise RequestError(400, "INVALID_FIELD", f"{named} must not be set in the request "
                                                     "body of an upsert by external ID",
                               [named])
        plan = Plan(changes={**changes, ext: value}, ext_value=value)
        plan.errors = field_errors(sobj, plan.changes)
        with state.db.transaction():
            if not plan.errors:
                ids = org.matches(sobj, ext, value)
                if len(ids) > 1:  # "matched multiple times, then a 300 error is reported"
                    return 300, [f"/services/data/v{version}/sobjects/{sobj.name}/{i}"
                                 for i in ids]
                org.plan_match(sobj, ext, plan)
            if plan.errors:
                raise _record_error(plan.errors)
            rid, created = org.write(sobj, plan, now_ms())
        return (201 if created else 200), {"id": rid, "success": True, "errors": [],
                                            "created": created}

    def collections_delete(request: Request, body):
        raw = request.query_params.get("ids")
        ids = [i.strip() for i in (raw or "").split(",") if i.strip()]
        if not ids:
            raise RequestError(400, "MISSING_ARGUMENT", "ids: a list of record ids is required")
        if len(ids) > MAX_RECORDS:
            raise RequestError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit "
                                                         f"more than {MAX_RECORDS} records into "
                                                         "this call")
        flag = request.query_params.get("allOrNone", "false").lower()
        if flag not in ("true", "false"):
            raise RequestError(400, "INVALID_QUERY_PARAMETER_VALUE",
                               f"allOrNone must be true or false, not {flag!r}")
        return 200, org.delete_collection(ids, flag == "true")

    def limits(request: Request, body):
        used = org.usage()
        return 200, {"DailyApiRequests": {"Max": state.salesforce_daily_limit,
                                          "Remaining": max(state.salesforce_daily_limit - used,
                                                           0)}}

    async def versions(request: Request):
        # The versions resource needs no session and costs no API request.
        return JSONResponse([
            {"label": version_label(v), "url": f"/services/data/v{v}.0", "version": f"{v}.0"}
            for v in range(OLDEST_VERSION, LATEST_VERSION + 1)])

    async def register(request: Request):
        """Sandbox admin: add an sObject type (a custom object, say) with its fields."""
        if request.method == "GET":
            names = sorted(BUILTIN_SOBJECTS[k].name for k in BUILTIN_SOBJECTS)
            names += [d["name"] for d in state.db.list(CRM, SCHEMA_OBJECT)]
            return JSONResponse({"sobjects": names})
        try:
            data = json.loads(await request.body())
            sobj = sobject_from_dict(data)
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"message": f"invalid sObject type: {exc}"}, 400)
        if sobj.name.lower() in BUILTIN_SOBJECTS:
            return JSONResponse({"message": f"{sobj.name} is built in"}, 400)
        state.db.put(CRM, SCHEMA_OBJECT, sobj.name, data, now_ms())
        return JSONResponse({"registered": sobj.name})

    async def method_not_allowed(request: Request):
        return JSONResponse([{"errorCode": "METHOD_NOT_ALLOWED",
                              "message": f"HTTP Method '{request.method}' not allowed. "
                                         "Allowed are PATCH"}], 405)

    base = "/services/data/v{version}"
    collection = f"{base}/composite/sobjects/{{sobject}}/{{field}}"
    return [
        Route("/services/data", versions, methods=["GET"]),
        Route("/services/data/", versions, methods=["GET"]),
        Route(collection, api(collections_upsert, MIN_UPSERT_VERSION, json_body=True),
              methods=["PATCH"]),
        Route(collection, method_not_allowed, methods=["GET", "POST", "PUT", "DELETE"]),
        Route(f"{base}/composite/sobjects", api(collections_delete, MIN_COLLECTIONS_VERSION),
              methods=["DELETE"]),
        Route(f"{base}/limits", api(limits), methods=["GET"]),
        Route(f"{base}/limits/", api(limits), methods=["GET"]),
        Route(f"{base}/sobjects/{{sobject}}", api(create, json_body=True), methods=["POST"]),
        Route(f"{base}/sobjects/{{sobject}}/", api(create, json_body=True), methods=["POST"]),
        Route(f"{base}/sobjects/{{sobject}}/{{record_id}}", api(get_record), methods=["GET"]),
        Route(f"{base}/sobjects/{{sobject}}/{{field}}/{{value}}", api(by_external_id),
              methods=["GET"]),
        Route(f"{base}/sobjects/{{sobject}}/{{field}}/{{value}}",
              api(by_external_id, json_body=True), methods=["PATCH"]),
        Route("/_sandbox/salesforce/sobjects", register, methods=["GET", "POST"]),
    ]


def _record_error(errors: list[dict]) -> RequestError:
    """A single-record resource answers its record's errors as a 400 error list."""
    first = errors[0]
    return RequestError(400, first["statusCode"], first["message"], first["fields"], items=[
        {"message": e["message"], "errorCode": e["statusCode"], "fields": e["fields"]}
        for e in errors])
