"""Salesforce's sObject types (their fields and field types) and record ids, in the sandbox.

The built-in types (Account, Contact, Lead) are defined by their describe fixtures,
fixtures/salesforce/<SObject>.json, one editable file each; more can be registered at run time
(POST /_sandbox/salesforce/sobjects). Record ids are
15 characters (a 3-character key prefix, then the record number) plus the 3-character
case-safe suffix, as Salesforce issues them.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX_CHARS = string.ascii_uppercase + "012345"


# -- sObject types ---------------------------------------------------------------------------
TEXT_TYPES = frozenset({"string", "email", "phone", "url", "picklist", "multipicklist",
                        "textarea", "id", "reference"})
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
    # What the describe fixtures say beyond the above (fixtures/salesforce/<SObject>.json).
    nillable: bool = True
    defaulted_on_create: bool = False
    calculated: bool = False
    precision: int = 0
    scale: int = 0
    picklist: tuple[tuple[str, bool], ...] = ()  # (value, active) of a picklist's values
    restricted: bool = False  # a restricted picklist refuses values not among its active ones
    reference_to: tuple[str, ...] = ()
    # A reference field's relationship name (the describe's `relationshipName`): how a record
    # body names the parent by one of its indexed fields, `"Account": {"External_Id__c": ..}`.
    relationship_name: str | None = None


def relationship_name_of(name: str, fld: SfField) -> str | None:
    """The relationship name of a reference field: the describe's, else Salesforce's
    convention (a standard `AccountId` is `Account`, a custom lookup `X__c` is `X__r`)."""
    if fld.type != "reference":
        return None
    if fld.relationship_name:
        return fld.relationship_name
    if name.endswith("__c"):
        return name[:-3] + "__r"
    return name[:-2] if name.endswith("Id") and len(name) > 2 else None


@dataclass(frozen=True)
class SObjectType:
    name: str
    key_prefix: str
    fields: dict[str, SfField]
    required: tuple[str, ...] = ()
    label_text: str = ""

    @cached_property
    def _by_lower(self) -> dict[str, str]:
        return {name.lower(): name for name in self.fields}

    def field(self, name: str) -> tuple[str, SfField] | None:
        """(API name, field) of a field, found case-insensitively as Salesforce does."""
        canonical = self._by_lower.get(name.lower())
        return (canonical, self.fields[canonical]) if canonical else None

    def label(self, name: str) -> str:
        return self.fields[name].label or name.removesuffix("__c").replace("_", " ")

    @cached_property
    def _relationships(self) -> dict[str, tuple[str, str]]:
        found = {}
        for name, fld in self.fields.items():
            rel = relationship_name_of(name, fld)
            if rel:
                found[rel.lower()] = (rel, name)
        return found

    def relationship(self, name: str) -> tuple[str, str, SfField] | None:
        """(relationship name, reference field's API name, field) of a relationship named in a
        record body (case-insensitively, as field names are), or None."""
        found = self._relationships.get(name.lower())
        return (found[0], found[1], self.fields[found[1]]) if found else None

    def relationships(self) -> list[tuple[str, str]]:
        """(relationship name, reference field) of each of the type's reference fields."""
        return list(self._relationships.values())


def _system_fields() -> dict[str, SfField]:
    """The system fields of an sObject type registered at run time (the built-in types list
    theirs in their fixtures)."""
    stamp = SfField("datetime", length=None, writable=False, nillable=False,
                    defaulted_on_create=True)
    ref = SfField("reference", length=18, writable=False, nillable=False,
                  defaulted_on_create=True, reference_to=("User",))
    return {"Id": SfField("id", length=18, writable=False, label="Record ID", nillable=False,
                          defaulted_on_create=True),
            "IsDeleted": SfField("boolean", length=None, writable=False, nillable=False,
                                 defaulted_on_create=True),
            "CreatedDate": stamp, "CreatedById": ref, "LastModifiedDate": stamp,
            "LastModifiedById": ref, "SystemModstamp": stamp}


# -- the built-in sObject types: one describe fixture each ----------------------------------
# Each fixture holds what `GET /services/data/vXX.X/sobjects/{SObject}/describe` answers for
# the type (its `fields[]` with name, label, type, length, nillable, createable, updateable,
# externalId, unique, caseSensitive, picklistValues, restrictedPicklist, precision, scale,
# digits, defaultedOnCreate, calculated). Edit a fixture to change the org's sObjects.
# Shape: the REST API's sObject Describe resource and the DescribeSObjectResult /
# Field reference, https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/
# resources_sobject_describe.htm and https://developer.salesforce.com/docs/atlas.en-us.api.meta/
# api/sforce_api_calls_describesobjects_describesobjectresult.htm (the field list is a subset).
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "salesforce"


def sobject_from_describe(data: dict) -> SObjectType:
    """An sObject type from its describe answer (a fixture)."""
    fields: dict[str, SfField] = {}
    for spec in data["fields"]:
        kind = spec["type"]
        if kind not in FIELD_TYPES:
            raise ValueError(f"{data['name']}.{spec['name']}: type {kind!r} is not one of "
                             f"{sorted(FIELD_TYPES)}")
        text = kind in TEXT_TYPES
        precision, scale = int(spec.get("precision") or 0), int(spec.get("scale") or 0)
        digits = int(spec.get("digits") or 0) if kind == "int" else \
            (precision - scale if kind in NUMBER_TYPES and precision else 0)
        fields[spec["name"]] = SfField(
            type=kind, length=(spec.get("length") or None) if text else None,
            digits=digits or None, label=spec.get("label"),
            external_id=bool(spec.get("externalId")), unique=bool(spec.get("unique")),
            case_sensitive=bool(spec.get("caseSensitive")),
            writable=bool(spec.get("createable") or spec.get("updateable")),
            nillable=bool(spec.get("nillable", True)),
            defaulted_on_create=bool(spec.get("defaultedOnCreate")),
            calculated=bool(spec.get("calculated")), precision=precision, scale=scale,
            picklist=tuple((p["value"], bool(p.get("active", True)))
                           for p in spec.get("picklistValues") or ()),
            restricted=bool(spec.get("restrictedPicklist")),
            reference_to=tuple(spec.get("referenceTo") or ()),
            relationship_name=spec.get("relationshipName") or None)
    # Required on create: not nillable, createable, and no default (how a describe tells it).
    required = tuple(name for name, f in fields.items()
                     if not f.nillable and f.writable and not f.defaulted_on_create)
    return SObjectType(data["name"], data["keyPrefix"], fields, required,
                       data.get("label") or data["name"])


def load_fixtures(folder: Path = FIXTURES) -> dict[str, SObjectType]:
    types = (sobject_from_describe(json.loads(p.read_text(encoding="utf-8")))
             for p in sorted(folder.glob("*.json")))
    return {s.name.lower(): s for s in types}


BUILTIN_SOBJECTS: dict[str, SObjectType] = load_fixtures()


def describe(sobj: SObjectType, version: str) -> dict:
    """The sObject Describe answer of a type (the parts of it the sandbox emulates)."""
    base = f"/services/data/v{version}/sobjects/{sobj.name}"
    return {"name": sobj.name, "label": sobj.label_text or sobj.name,
            "keyPrefix": sobj.key_prefix, "custom": sobj.name.endswith("__c"),
            "createable": True, "updateable": True, "queryable": True,
            "urls": {"sobject": base, "describe": f"{base}/describe",
                     "rowTemplate": f"{base}/{{ID}}"},
            "fields": [_describe_field(sobj, name, f) for name, f in sobj.fields.items()]}


def _describe_field(sobj: SObjectType, name: str, f: SfField) -> dict:
    return {
        "name": name, "label": sobj.label(name), "type": f.type,
        "length": f.length or 0 if f.type in TEXT_TYPES else 0,
        "nillable": f.nillable, "createable": f.writable, "updateable": f.writable,
        "externalId": f.external_id, "unique": f.unique, "caseSensitive": f.case_sensitive,
        "idLookup": name == "Id" or f.external_id, "defaultedOnCreate": f.defaulted_on_create,
        "calculated": f.calculated, "custom": name.endswith("__c"),
        "precision": f.precision or (f.digits or 0 if f.type in NUMBER_TYPES else 0),
        "scale": f.scale, "digits": f.digits or 0 if f.type == "int" else 0,
        "picklistValues": [{"active": active, "defaultValue": False, "label": value,
                            "validFor": None, "value": value} for value, active in f.picklist],
        "restrictedPicklist": f.restricted, "referenceTo": list(f.reference_to),
        "relationshipName": relationship_name_of(name, f),
        "soapType": _SOAP_TYPES.get(f.type, "xsd:string"),
    }


_SOAP_TYPES = {"id": "tns:ID", "reference": "tns:ID", "boolean": "xsd:boolean",
               "int": "xsd:int", "double": "xsd:double", "currency": "xsd:double",
               "percent": "xsd:double", "date": "xsd:date", "datetime": "xsd:dateTime"}


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
        if "reference_to" in spec:  # a lookup: the sObject types it may point to
            spec["reference_to"] = tuple(spec["reference_to"] or ())
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
