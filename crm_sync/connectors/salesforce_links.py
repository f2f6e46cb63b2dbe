"""Salesforce relationships in the upsert body, for crm_sync/connectors/salesforce.py: a record
names its parent by the parent's external id, `"Account": {"External_Id__c": "CO-1"}`, so the
parent's record id is not needed ("Relationship Fields in Records": `"RelationshipName" : {
"IndexedFieldName" : ... }`, https://developer.salesforce.com/docs/atlas.en-us.api_asynch.meta/
api_asynch/datafiles_xml_rel_fields.htm). The association's name in the spec is the
relationship name (`Account`, `Parent__r`); its reference field (`AccountId`, `Parent__c`) takes
the parent's record id when the external id is not known, and null to remove the link.
"""

from __future__ import annotations

from crm_sync.connectors.model import RowLinks

# A parent external id that matches no record fails its record with INVALID_FIELD "Foreign key
# external ID: <value> not found for field <field> in entity <Parent>" (Polytomic's Salesforce
# guide, https://docs.polytomic.com/docs/saleforceinvalid_reference_error). crm_sync reports it
# as the association's target missing, the code (and, transient, the treatment) the runner
# gives a target it knows is missing: the row is sent again once the parent is in Salesforce.
FOREIGN_KEY_NOT_FOUND = "Foreign key external ID:"
TARGET_MISSING = "ASSOCIATION_TARGET_MISSING"


def reference_field(relationship: str) -> str:
    """The reference field of a relationship: `Account` -> `AccountId`, `X__r` -> `X__c`."""
    if relationship.endswith("__r"):
        return relationship[:-3] + "__c"
    return relationship + "Id"


def with_parents(record: dict, links: RowLinks) -> dict:
    """The record with each parent to link (by its external id when known, else its record
    id) and each parent no longer linked set to null."""
    out = dict(record)
    linked = set()
    for ref in links.link:
        linked.add(ref.association)
        if ref.key_field and ref.key_value is not None:
            out.pop(reference_field(ref.association), None)
            out[ref.association] = {ref.key_field: ref.key_value}
        elif ref.crm_id:
            out.pop(ref.association, None)
            out[reference_field(ref.association)] = ref.crm_id
        # Neither known: the runner quarantines such a row (ASSOCIATION_TARGET_MISSING) and
        # does not send it, so there is nothing to name here.
    for ref in links.unlink:
        if ref.association not in linked:
            out.pop(ref.association, None)
            out[reference_field(ref.association)] = None
    return out


def error_code(code: str, message: str) -> str:
    """Salesforce's per-record error code, or TARGET_MISSING for a parent that is not there."""
    if code == "INVALID_FIELD" and message.startswith(FOREIGN_KEY_NOT_FOUND):
        return TARGET_MISSING
    return code
