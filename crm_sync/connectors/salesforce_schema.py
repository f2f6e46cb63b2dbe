"""Salesforce's sObject describe (`GET /services/data/vXX.X/sobjects/{SObject}/describe`) read
into a `CrmObjectSchema`, for crm_sync/connectors/salesforce.py.

Field types: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/field_types.htm;
the describe: https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/
resources_sobject_describe.htm
"""

from __future__ import annotations

from crm_sync.connectors.fields import CrmField, CrmObjectSchema

# Salesforce's field types (the describe's `type`) in crm_sync's vocabulary (fields.FIELD_TYPES).
# Field types: https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/
# field_types.htm; the describe: .../api_rest.meta/api_rest/resources_sobject_describe.htm
FIELD_TYPE_OF = {
    "string": "string", "textarea": "text", "email": "email", "phone": "phone", "url": "url",
    "int": "integer", "double": "number", "currency": "number", "percent": "number",
    "boolean": "boolean", "date": "date", "datetime": "datetime", "picklist": "enumeration",
    "multipicklist": "multi_enumeration", "id": "id", "reference": "reference",
}


def parse_describe(payload: dict, sobject: str, source: str) -> CrmObjectSchema:
    """The schema in a describe answer (its `fields` list is checked by the caller)."""
    fields = tuple(_crm_field(f) for f in payload["fields"] if isinstance(f, dict))
    return CrmObjectSchema(crm="salesforce", object=str(payload.get("name") or sobject),
                           fields=fields, source=source)


def _crm_field(f: dict) -> CrmField:
    """One describe `fields[]` entry as a CrmField."""
    kind = str(f.get("type") or "")
    length = f.get("length") or None
    return CrmField(
        name=str(f["name"]), type=FIELD_TYPE_OF.get(kind, "other"), crm_type=kind,
        label=str(f.get("label") or ""), nullable=bool(f.get("nillable", True)),
        createable=bool(f.get("createable", False)), updateable=bool(f.get("updateable", False)),
        calculated=bool(f.get("calculated", False)), unique=bool(f.get("unique", False)),
        external_id=bool(f.get("externalId", False)),
        case_sensitive=bool(f.get("caseSensitive", False)),
        defaulted_on_create=bool(f.get("defaultedOnCreate", False)),
        length=int(length) if length else None,
        # Numbers: precision/scale (double, currency, percent); int fields give `digits`.
        precision=int(f.get("precision") or f.get("digits") or 0) or None,
        scale=int(f["scale"]) if f.get("precision") and f.get("scale") is not None else None,
        options=tuple(str(p["value"]) for p in f.get("picklistValues") or ()
                      if isinstance(p, dict) and p.get("active", True) and "value" in p))
