"""The HubSpot object types the sandbox's account has, DEFINED by one editable fixture per object:
crm_sync/sandbox/fixtures/hubspot/<object>.json.

Each fixture holds `results`: the object's properties exactly as HubSpot's properties API
answers `GET /crm/v3/properties/{objectType}` (https://developers.hubspot.com/docs/api/crm/
properties; the Property model of HubSpot's generated clients, e.g. hubspot-api-client
`hubspot/crm/properties/models/property.py`: name, label, type, fieldType, description,
groupName, options[{label, value, displayOrder, hidden}], displayOrder, calculated,
externalOptions, hasUniqueValue, hidden, hubspotDefined, modificationMetadata{archivable,
readOnlyDefinition, readOnlyValue}, formField). The sandbox serves that list as it is
(hubspot.py, `HubSpotPropertyHandlers`) and validates every written value by its property's `type`
(hubspot_values.py). `objectType` holds what the properties API does not say: the object's
names (its objectTypeId, label and aliases), the property HubSpot stamps on every write, and which
string properties HubSpot checks as email addresses (contacts' `email`: HubSpot's `email`
property is `type: string, fieldType: text` in the API, but refused values answer INVALID_EMAIL).

Contacts, companies and deals are HubSpot's standard objects (with the properties a sync uses);
`projects` is a custom object. Which properties are unique (`hasUniqueValue`) decides which can
be an upsert's `idProperty` (REFERENCE.md, HubSpot "identifier rules"); properties with
`modificationMetadata.readOnlyValue` (or `calculated`) refuse values (READ_ONLY_VALUE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources

PORTAL_ID = 48213570  # the sandbox's HubSpot account id, as it appears in messages and names
FIXTURES = "fixtures/hubspot"
OBJECT_NAMES = ("contacts", "companies", "deals", "projects")  # one fixture each


@dataclass(frozen=True)
class ObjectType:
    """One HubSpot object type: its names, its properties and which of them are unique."""

    name: str  # the plural name; records are stored under it (/_sandbox/records/hubspot/<name>)
    type_id: str  # HubSpot's objectTypeId (0-1 contacts, 0-2 companies, 0-3 deals, 2-... custom)
    label: str  # singular, as HubSpot names the object in messages
    properties: dict[str, str]  # writable property -> type: string | email | number | ...
    unique: frozenset[str]  # properties with hasUniqueValue: the valid idProperty values
    modified_property: str = "hs_lastmodifieddate"
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()
    read_only: frozenset[str] = frozenset()  # readOnlyValue or calculated: never written
    definitions: tuple[dict, ...] = ()  # the properties API's `results`, as in the fixture

    def normalize(self, prop: str, value: str) -> str:
        # HubSpot stores email addresses lowercased, so matching on them ignores case.
        return value.lower() if self.properties.get(prop) == "email" else value


def from_fixture(doc: dict) -> ObjectType:
    """An ObjectType from a fixture: {"objectType": {...}, "results": [<property>, ...]}."""
    meta, results = doc["objectType"], doc["results"]
    emails = set(meta.get("emailProperties", ()))
    read_only = frozenset(p["name"] for p in results
                          if p.get("calculated")
                          or (p.get("modificationMetadata") or {}).get("readOnlyValue"))
    properties = {p["name"]: ("email" if p["name"] in emails else p["type"])
                  for p in results if p["name"] not in read_only}
    options = {p["name"]: tuple(o["value"] for o in p.get("options") or ())
               for p in results if p["type"] in ("enumeration", "bool")}
    # HubSpot's bool properties list the options true/false; one fixture may leave them out.
    options.update({name: ("true", "false") for name, kind in properties.items()
                    if kind == "bool" and not options.get(name)})
    return ObjectType(
        name=meta["name"], type_id=meta["objectTypeId"], label=meta["label"],
        properties=properties,
        unique=frozenset(p["name"] for p in results if p.get("hasUniqueValue")),
        modified_property=meta.get("modifiedProperty", "hs_lastmodifieddate"),
        options=options, aliases=frozenset(meta.get("aliases", ())), read_only=read_only,
        definitions=tuple(results))


def load_fixture(name: str) -> ObjectType:
    text = resources.files("crm_sync.sandbox").joinpath(f"{FIXTURES}/{name}.json").read_text(
        encoding="utf-8")
    return from_fixture(json.loads(text))


OBJECT_TYPES = tuple(load_fixture(name) for name in OBJECT_NAMES)
_BY_NAME = {alias: obj for obj in OBJECT_TYPES
            for alias in (obj.name, obj.type_id, *obj.aliases)}


def object_type(name: str) -> ObjectType | None:
    return _BY_NAME.get(name.lower())
