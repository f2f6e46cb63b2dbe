"""The HubSpot object types the sandbox's account has: names, properties, unique properties.

Contacts, companies and deals are HubSpot's standard objects (with the properties a sync
uses); `projects` is a custom object. Which properties are unique (`hasUniqueValue`) decides
which can be an upsert's `idProperty` (REFERENCE.md, HubSpot "identifier rules").
"""

from __future__ import annotations

from dataclasses import dataclass, field

PORTAL_ID = 48213570  # the sandbox's HubSpot account id, as it appears in messages and names
_LIFECYCLE_STAGES = ("subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                     "opportunity", "customer", "evangelist", "other")


@dataclass(frozen=True)
class ObjectType:
    """One HubSpot object type: its names, its properties and which of them are unique."""

    name: str  # the plural name; records are stored under it (/_sandbox/records/hubspot/<name>)
    type_id: str  # HubSpot's objectTypeId (0-1 contacts, 0-2 companies, 0-3 deals, 2-... custom)
    label: str  # singular, as HubSpot names the object in messages
    properties: dict[str, str]  # writable property -> type: string | email | enumeration
    unique: frozenset[str]  # properties with hasUniqueValue: the valid idProperty values
    modified_property: str = "hs_lastmodifieddate"
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: frozenset[str] = frozenset()

    @property
    def read_only(self) -> frozenset[str]:
        return frozenset({"hs_object_id", "createdate", self.modified_property})

    def normalize(self, prop: str, value: str) -> str:
        # HubSpot stores email addresses lowercased, so matching on them ignores case.
        return value.lower() if self.properties.get(prop) == "email" else value


def _strings(*names: str) -> dict[str, str]:
    return {name: "string" for name in names}


OBJECT_TYPES = (
    ObjectType(
        "contacts", "0-1", "Contact",
        {**_strings("firstname", "lastname", "phone", "mobilephone", "jobtitle", "company",
                    "website", "address", "city", "state", "zip", "country", "crm_sync_id"),
         "email": "email", "lifecyclestage": "enumeration"},
        unique=frozenset({"email", "crm_sync_id"}),  # crm_sync_id: a custom unique property
        modified_property="lastmodifieddate",
        options={"lifecyclestage": _LIFECYCLE_STAGES},
        aliases=frozenset({"contact"}),
    ),
    ObjectType(
        "companies", "0-2", "Company",
        {**_strings("name", "domain", "website", "industry", "phone", "address", "city",
                    "state", "zip", "country", "numberofemployees", "annualrevenue",
                    "description", "crm_sync_id"),
         "lifecyclestage": "enumeration"},
        unique=frozenset({"crm_sync_id"}),  # `domain` is NOT unique in HubSpot
        options={"lifecyclestage": _LIFECYCLE_STAGES},
        aliases=frozenset({"company"}),
    ),
    ObjectType(
        "deals", "0-3", "Deal",
        {**_strings("dealname", "amount", "closedate", "description", "crm_sync_id"),
         "pipeline": "enumeration", "dealstage": "enumeration"},
        unique=frozenset({"crm_sync_id"}),
        options={"pipeline": ("default",),
                 "dealstage": ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                               "decisionmakerboughtin", "contractsent", "closedwon",
                               "closedlost")},
        aliases=frozenset({"deal"}),
    ),
    ObjectType(  # a custom object, reachable by its name, fullyQualifiedName or objectTypeId
        "projects", "2-1234567", "Project",
        _strings("name", "status", "budget", "start_date", "company_ext_id", "ext_id"),
        unique=frozenset({"ext_id"}),
        aliases=frozenset({"project", "p_projects", f"p{PORTAL_ID}_projects"}),
    ),
)
_BY_NAME = {alias: obj for obj in OBJECT_TYPES
            for alias in (obj.name, obj.type_id, *obj.aliases)}


def object_type(name: str) -> ObjectType | None:
    return _BY_NAME.get(name.lower())

