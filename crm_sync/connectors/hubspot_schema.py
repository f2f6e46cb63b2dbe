"""HubSpot's property definitions as a `CrmObjectSchema` (crm_sync/connectors/fields.py), for
`HubSpotConnector.describe()`.

`GET /crm/v3/properties/{objectType}` answers `{"results": [<property>, ...]}`
(https://developers.hubspot.com/docs/api/crm/properties; the Property model of HubSpot's
generated clients: name, label, type, fieldType, options[{label, value}], hasUniqueValue,
calculated, modificationMetadata{readOnlyValue, ...}). HubSpot's `type` is the data type and
`fieldType` how it is entered; both decide crm_sync's type:

    string (text, textarea, html, file)   -> string     string / phonenumber  -> phone
    number                                -> number     bool (booleancheckbox) -> boolean
    enumeration (select, radio)           -> enumeration; checkbox (multi-select) -> multi_enumeration
    date -> date    datetime -> datetime   phone_number -> phone   json -> json   else other

HubSpot validates contacts' `email` as an address (INVALID_EMAIL) though the API calls it a plain
string: it maps to `email`. `modificationMetadata.readOnlyValue` makes a property neither
createable nor updateable; `calculated` properties are computed by HubSpot.
"""

from __future__ import annotations

from crm_sync.connectors.fields import CrmField, CrmObjectSchema

_BY_TYPE = {"number": "number", "bool": "boolean", "date": "date", "datetime": "datetime",
            "phone_number": "phone", "json": "json", "string": "string"}
_EMAIL_OBJECTS = frozenset({"contacts", "contact", "0-1"})


def field_type(prop: dict, object_type: str) -> str:
    kind, entry = prop.get("type"), prop.get("fieldType")
    if kind == "enumeration":
        return "multi_enumeration" if entry == "checkbox" else "enumeration"
    if kind == "string" and entry == "phonenumber":
        return "phone"
    if kind == "string" and prop.get("name") == "email" and object_type.lower() in _EMAIL_OBJECTS:
        return "email"
    return _BY_TYPE.get(kind, "other")


def crm_field(prop: dict, object_type: str) -> CrmField:
    metadata = prop.get("modificationMetadata") or {}
    writable = not metadata.get("readOnlyValue", False)
    kind = field_type(prop, object_type)
    options = tuple(str(o["value"]) for o in prop.get("options") or ()
                    if isinstance(o, dict) and "value" in o)
    if kind == "boolean" and not options:
        options = ("true", "false")
    return CrmField(
        name=prop["name"], type=kind, crm_type=str(prop.get("type") or ""),
        label=str(prop.get("label") or ""), createable=writable, updateable=writable,
        calculated=bool(prop.get("calculated", False)),
        unique=bool(prop.get("hasUniqueValue", False)),
        options=options if kind in ("enumeration", "multi_enumeration", "boolean") else ())


def schema_from_properties(object_type: str, payload) -> CrmObjectSchema:
    """The schema of `object_type` from the properties API's answer; ValueError when the answer
    is not `{"results": [{"name": ...}, ...]}`."""
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list) or not all(
            isinstance(p, dict) and isinstance(p.get("name"), str) for p in results):
        raise ValueError("HubSpot's properties answer has no results list of named properties")
    return CrmObjectSchema(crm="hubspot", object=object_type,
                           fields=tuple(crm_field(p, object_type) for p in results),
                           source=f"GET /crm/v3/properties/{object_type}")
