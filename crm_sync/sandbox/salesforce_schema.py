"""Salesforce's sObject types (their fields and field types) and record ids, in the sandbox.

The built-in types are Account, Contact and Lead with the standard fields a sync uses;
more can be registered at run time (POST /_sandbox/salesforce/sobjects). Record ids are
15 characters (a 3-character key prefix, then the record number) plus the 3-character
case-safe suffix, as Salesforce issues them.
"""

from __future__ import annotations

import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_CHARS = string.ascii_uppercase + "012345"


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



def canonical_id(value: str) -> str | None:
    """The 18-character form of a record id (15 characters get their case-safe suffix), or
    None when the value is not a well-formed record id."""
    if len(value) == 15 and value.isalnum() and value.isascii():
        return value + case_safe_suffix(value)
    if len(value) == 18 and value.isalnum() and value.isascii() and \
            value[15:].upper() == case_safe_suffix(value[:15]):
        return value[:15] + case_safe_suffix(value[:15])
    return None
