"""Superleap's object description (`GET /api/v1/appflow/objects/{object_slug}`, "Get Object",
https://docs.superleap.com/api-reference/appflow/get_object) read into a `CrmObjectSchema`.

Documented: `data.fields[]` with `field_name`, `data_type`, `data_type_label`, `label`,
`is_primary_key`, `is_deprecated`, `read_properties.is_nullable`. Read where present, as the
AWS AppFlow custom connector SDK (whose FieldDefinition these keys are, in snake case) defines
them: `write_properties` (is_creatable, is_updatable, is_nullable, is_defaulted_on_create) and
`constraints` (allowed_length_range.max_range, allowed_values). GUESS: `is_unique`, and the
labels `email` / `phone` marking those kinds of text (docs/sandbox/superleap.md).
"""

from __future__ import annotations

from crm_sync.connectors.fields import CrmField, CrmObjectSchema

# The SDK's FieldDataType names -> crm_sync's field types.
_TYPES = {"String": "string", "Integer": "integer", "Long": "integer", "Short": "integer",
          "BigInteger": "integer", "Float": "number", "Double": "number", "BigDecimal": "number",
          "Boolean": "boolean", "Date": "date", "DateTime": "datetime", "Struct": "json",
          "Map": "json", "List": "multi_enumeration", "ByteArray": "other"}
_LABELS = {"email": "email", "phone": "phone", "reference": "reference"}  # GUESS


def parse_object(payload: object, slug: str, source: str) -> CrmObjectSchema:
    """The schema in a Get Object answer; ValueError when the answer has no field list."""
    data = payload.get("data") if isinstance(payload, dict) else None
    fields = data.get("fields") if isinstance(data, dict) else None
    if not isinstance(fields, list):
        raise ValueError("the answer has no data.fields list")
    return CrmObjectSchema(crm="superleap", object=slug, source=source,
                           fields=tuple(_field(f) for f in fields if isinstance(f, dict)
                                        and isinstance(f.get("field_name"), str)))


def _field(raw: dict) -> CrmField:
    read = raw.get("read_properties") or {}
    write = raw.get("write_properties") or {}
    constraints = raw.get("constraints") or {}
    options = tuple(str(v) for v in constraints.get("allowed_values") or ())
    crm_type = str(raw.get("data_type") or "String")
    kind = _TYPES.get(crm_type, "other")
    if kind == "string":
        kind = "enumeration" if options else _LABELS.get(raw.get("data_type_label"), "string")
    longest = (constraints.get("allowed_length_range") or {}).get("max_range")
    primary = bool(raw.get("is_primary_key"))
    nullable = write.get("is_nullable", read.get("is_nullable", True))
    return CrmField(
        name=raw["field_name"], type=kind, crm_type=crm_type, label=str(raw.get("label") or ""),
        nullable=bool(nullable),
        # Without write_properties: a primary key is Superleap's own (never written), any other
        # field writable, as Superleap's documented bulk_upsert examples write them.
        createable=bool(write.get("is_creatable", not primary)),
        updateable=bool(write.get("is_updatable", not primary)),
        unique=primary or bool(raw.get("is_unique")),
        defaulted_on_create=bool(write.get("is_defaulted_on_create", primary)),
        length=int(longest) if isinstance(longest, (int, float)) else None,
        options=options)
