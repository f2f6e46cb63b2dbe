"""Salesforce relationships in the sandbox: a record names its parent by the parent's external
id, `"Account": {"External_Id__c": "CO-1"}`, in the body of an upsert (or by the reference
field's record id, `"AccountId": "001..."`; `"AccountId": null` clears it).

Sources. The form: Salesforce's "Relationship Fields in Records" ("To add a reference to a
related object for a field in a JSON or XML record ... `"RelationshipName" : {
"IndexedFieldName" : "..." }` ... Use the describeSObjects() call in the API to get the
relationshipName property value for a field. Use an indexed field to uniquely identify the
parent record", https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/api_asynch/
datafiles_xml_rel_fields.htm) and, for CSV, "Relationship Fields in a Header Row (2.0)"
(`RelationshipName.IndexedFieldName`, https://developer.salesforce.com/docs/platform/
api-asynch/guide/relationship-fields-in-a-header-row-2-0.html). The errors:
- a parent external id that matches nothing fails its record with `INVALID_FIELD` "Foreign key
  external ID: <value> not found for field <field> in entity <Parent>" (Polytomic's Salesforce
  guide, https://docs.polytomic.com/docs/saleforceinvalid_reference_error; a captured answer,
  `[{"message":"Foreign key external ID: 1580 not found for field Codigo_representante_ERP__c
  in entity User","errorCode":"INVALID_FIELD","fields":[]}]`, in public client code);
- a parent field that is not an external id or indexed: `INVALID_FIELD` "Field name provided,
  <field> is not an External ID or indexed field for <Parent>" (the message captured for
  `"RecordType": {"DeveloperName": ...}` in public client notes). GUESS: it fails the whole
  request (400), like an unknown field, since no record of the request could be read.
GUESSES (strict): a parent object must name exactly one field (else 400 INVALID_FIELD); a value
matching several parents fails its record with DUPLICATE_EXTERNAL_ID, as the upsert's own key
does; a record id in a reference field must be well formed (MALFORMED_ID) and name an existing
record of a type the field refers to (INVALID_CROSS_REFERENCE_KEY "invalid cross reference id",
the StatusCode Salesforce documents for an invalid relationship value).
"""

from __future__ import annotations

from dataclasses import dataclass
from crm_sync.sandbox.salesforce_rules import RequestError, blank, check_type, parser_error, \
    save_error
from crm_sync.sandbox.salesforce_schema import SfField, SObjectType, canonical_id

CRM = "salesforce"
# `org` below is the org, crm_sync.sandbox.salesforce_org.Salesforce (which imports this
# module: not imported here, not even for types, so that the modules form no import circle).


@dataclass(frozen=True)
class ParentRef:
    """A parent named in a record body by one of its indexed fields, not yet looked up."""

    relationship: str  # e.g. Account, Parent__r
    parent: SObjectType
    field: str  # the parent's indexed field (API name): an external id, or Id
    value: object


def parent_ref(org, sobj: SObjectType, relationship: str, fld: SfField,
               value) -> ParentRef:
    """`{"External_Id__c": "CO-1"}` (optionally with `attributes.type`) under a relationship
    name, read; a whole-request RequestError when it cannot be."""
    target = fld.reference_to[0] if fld.reference_to else None
    if not isinstance(value, dict) or target is None:
        raise parser_error(f"SObject[{target or relationship}]", value)
    attributes = value.get("attributes")
    if attributes is not None:
        kind = attributes.get("type") if isinstance(attributes, dict) else None
        if not isinstance(kind, str) or \
                kind.lower() not in {t.lower() for t in fld.reference_to}:
            raise RequestError(400, "INVALID_TYPE", f"{relationship}: {kind} is not a type "
                                                    f"{sobj.name}.{relationship} refers to")
        target = kind
    parent = org.sobject(target)
    keys = [k for k in value if k != "attributes"]
    if len(keys) != 1:
        raise RequestError(400, "INVALID_FIELD", f"{relationship}: name the parent {parent.name} "
                                                 f"by exactly one external ID field, not "
                                                 f"{len(keys)}")
    found = parent.field(keys[0])
    if not found or not (found[1].external_id or found[0] == "Id"):
        raise RequestError(400, "INVALID_FIELD", f"Field name provided, {keys[0]} is not an "
                                                 f"External ID or indexed field for "
                                                 f"{parent.name}")
    check_type(found[1], value[keys[0]])
    return ParentRef(relationship, parent, found[0], value[keys[0]])


def resolve_references(org, sobj: SObjectType, changes: dict) -> list[dict]:
    """Turn each ParentRef in a record's changes into its parent's record id, and check each
    record id written to a reference field; the record's errors for those that fail (a failed
    reference is taken out of the changes)."""
    problems = []
    for name, value in list(changes.items()):
        fld = sobj.fields[name]
        if isinstance(value, ParentRef):
            ids = [] if blank(value.value) else _parent_ids(org, value)
            if len(ids) == 1:
                changes[name] = ids[0]
                continue
            del changes[name]
            if ids:
                problems.append(save_error(
                    "DUPLICATE_EXTERNAL_ID", f"{value.relationship}: more than one record found "
                                             f"for external id field: [{', '.join(ids)}]",
                    [name]))
            else:
                problems.append(save_error(
                    "INVALID_FIELD", f"Foreign key external ID: {value.value} not found for "
                                     f"field {value.field} in entity {value.parent.name}"))
        elif fld.type == "reference" and fld.writable and isinstance(value, str):
            problem = _check_record_id(org, sobj, name, fld, value, changes)
            if problem:
                problems.append(problem)
    return problems


def _parent_ids(org, ref: ParentRef) -> list[str]:
    if ref.field == "Id":
        rid = canonical_id(str(ref.value))
        return [rid] if rid and org.db.get(CRM, ref.parent.name, rid) is not None else []
    return org.matches(ref.parent, ref.field, ref.value)


def _check_record_id(org, sobj: SObjectType, name: str, fld: SfField, value: str,
                     changes: dict) -> dict | None:
    rid = canonical_id(value)
    if rid is None:
        return save_error("MALFORMED_ID", f"{sobj.label(name)}: id value of incorrect type: "
                                          f"{value}", [name])
    kind = org.sobject_by_prefix(rid[:3])
    if kind is None or kind.name.lower() not in {t.lower() for t in fld.reference_to} or \
            org.db.get(CRM, kind.name, rid) is None:
        return save_error("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [name])
    changes[name] = rid  # stored in its 18-character form
    return None


def relationships_view(org, sobj: SObjectType, record: dict) -> dict:
    """A record's parents, for the admin API: per relationship, the reference field, the
    parent's Id and its external id values (None when the record has no parent there)."""
    view = {}
    for relationship, name in sobj.relationships():
        if not sobj.fields[name].writable:  # CreatedBy and the like: set by the org
            continue
        rid = record.get(name)
        parent = None
        if rid:
            parent = {"field": name, "Id": rid}
            kind = org.sobject_by_prefix(rid[:3])
            stored = org.db.get(CRM, kind.name, rid) if kind else None
            parent["type"] = kind.name if kind else None
            for pname, pfld in (kind.fields.items() if kind else ()):
                if pfld.external_id:
                    parent[pname] = (stored or {}).get(pname)
        view[relationship] = parent
    return view


def csv_relationship(org, sobj: SObjectType,
                     column: str) -> tuple[str, str, str, SfField] | None:
    """A Bulk API 2.0 CSV header `Account.External_Id__c` ("RelationshipName.IndexedFieldName")
    as (reference field, relationship name, parent's indexed field, that field), or None when
    the column names no relationship. ValueError when the parent field is not indexed."""
    relationship, _, indexed = column.partition(".")
    found = sobj.relationship(relationship) if indexed else None
    if not found or not found[2].reference_to:
        return None
    try:
        parent = org.sobject(found[2].reference_to[0])
    except RequestError:
        return None
    field = parent.field(indexed)
    if not field or not (field[1].external_id or field[0] == "Id"):
        raise ValueError(f"Field name provided, {indexed} is not an External ID or indexed "
                         f"field for {parent.name}")
    return found[1], found[0], field[0], field[1]
