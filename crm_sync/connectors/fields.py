"""A CRM object's field schema, as the CRM describes it (HubSpot's properties API, Salesforce's
describe, Superleap's object description), in one typed shape the client reads.

Each connector module turns its CRM's answer into a `CrmObjectSchema` (`Connector.describe`);
`crm-sync schema pull` writes it to `crm_schemas/<crm>/<object>.json`, a file users commit and
review like a lock file; `crm-sync schema check` and validation read it back from there.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields as dataclass_fields

# crm_sync's own vocabulary for a field's type; `crm_type` keeps the CRM's own name for it.
FIELD_TYPES = ("string", "text", "email", "phone", "url", "integer", "number", "boolean",
               "date", "datetime", "enumeration", "multi_enumeration", "id", "reference",
               "json", "other")


@dataclass(frozen=True)
class CrmField:
    name: str
    type: str  # one of FIELD_TYPES
    crm_type: str  # as the CRM names it: HubSpot "number", Salesforce "double", ...
    label: str = ""
    nullable: bool = True  # the CRM accepts an empty value
    createable: bool = True  # may be written on create
    updateable: bool = True  # may be written on update
    calculated: bool = False  # computed by the CRM: never written
    unique: bool = False  # values are unique (a matching key candidate)
    external_id: bool = False  # Salesforce: usable as the upsert's external id field
    case_sensitive: bool = False  # unique values compared with case
    defaulted_on_create: bool = False  # the CRM fills it in when a create leaves it out
    length: int | None = None  # longest text the field holds
    precision: int | None = None  # digits in all (numbers)
    scale: int | None = None  # digits after the point (numbers)
    options: tuple[str, ...] = ()  # allowed values (enumeration / picklist); () = any

    @property
    def read_only(self) -> bool:
        return self.calculated or not (self.createable or self.updateable)

    @property
    def required_on_create(self) -> bool:
        """A create without it fails: not nillable, createable, and no default."""
        return not self.nullable and self.createable and not self.defaulted_on_create


@dataclass(frozen=True)
class CrmObjectSchema:
    crm: str
    object: str
    fields: tuple[CrmField, ...] = field(default_factory=tuple)
    source: str = ""  # the request it was read from, e.g. "GET /crm/v3/properties/contacts"

    def field(self, name: str) -> CrmField | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> str:
        data = asdict(self)
        data["fields"] = sorted(data["fields"], key=lambda f: f["name"])
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CrmObjectSchema:
        data = json.loads(text)
        known = {f.name for f in dataclass_fields(CrmField)}
        return cls(crm=data["crm"], object=data["object"], source=data.get("source", ""),
                   fields=tuple(CrmField(**{**{k: v for k, v in f.items() if k in known},
                                            "options": tuple(f.get("options") or ())})
                                for f in data.get("fields", ())))
