"""What crm_sync knows of one CRM, declared once, in the CRM's own module (`PROFILE`).

crm_sync/connectors/__init__.py collects every module's PROFILE into `PROFILES`; the spec, the
assets, matching and validation look a CRM up there instead of keeping their own lists. This
module imports nothing of crm_sync. The spec reads PROFILES only when it validates (the
connector modules import the spec, so importing the registry at its top would be a cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def matching_key_column(spec) -> str | None:
    """The common case: the matching key is a mapped field holding the value."""
    return spec.matching_key


def never(spec) -> bool:
    return False


@dataclass(frozen=True)
class RecordRule:
    """A rule the CRM sets for its records, checked by validation: one check of one column of
    validation's CRM frame (`to_crm_frame`), and what the quarantine says of a row that breaks
    it (`error_code`; `message` with {column} and {value} filled in per row)."""

    rule: str  # the rule's name (the quarantine's `rules`)
    # `_crm_id`, `_attribute_count`, `_record_bytes`; None: the matching key's column
    column: str | None
    check: str  # "matches" (a regex the value must match) or "at_least" / "at_most" (a bound)
    bound: Any  # the regex or the bound
    error_code: str
    message: str


@dataclass(frozen=True)
class CrmProfile:
    """One CRM's rules: names, matching, limits a sync spec is checked against."""

    name: str  # as in the sync spec (`crm: hubspot`) and the resource key
    label: str  # for people ("HubSpot")
    resource: type  # the Dagster resource class (a CrmResource)
    kind: str  # the Dagster kind of its upsert assets
    # The characters the CRM documents for object and field names (they become URL path
    # segments and body keys, so anything else is refused when the spec is loaded), and how
    # to say so in an error.
    object_pattern: str
    field_pattern: str
    name_rule: str
    # Matching keys the CRM's bulk upsert understands (None: any mapped field).
    matching_keys: frozenset[str] | None = None
    # The upsert sends the matching key as a property, so it must be a mapped field.
    matching_key_is_field: bool = False
    # spec -> the column of a CRM frame holding the value naming the row's record (or None).
    matching_column: Callable[[Any], str | None] = matching_key_column
    # spec -> whether the CRM compares matching values ignoring case.
    matching_ignores_case: Callable[[Any], bool] = never
    # `matching_column` holds the CRM's own record id (sent as the record's id).
    matching_column_is_record_id: bool = False
    # What a matching value must match (a rule on the matching key's column, `column` None).
    matching_value_refused: RecordRule | None = None
    # The CRM limits attributes and bytes per record: validation measures them
    # (`_attribute_count`, `_record_bytes`) for `record_rules` to check.
    measures_attributes: bool = False
    # Why `mode: mirror` is not available (None: the CRM can delete records).
    mirror_unsupported: str | None = None
    # Why a sync cannot declare `associations:` (None: the CRM links records; spec_links.py).
    associations_unsupported: str | None = None
    # The CRM's rules for its records that do not depend on the mapping (ids, limits).
    record_rules: tuple[RecordRule, ...] = ()
    # Fields the CRM itself requires, by object ("*": every object).
    required_fields: Mapping[str, frozenset[str]] = field(default_factory=dict)

    # What the CRM documents as rows per second (None: no documented limit) and why (for the
    # benchmark's report).
    allowance: tuple[float | None, str] = (None, "no documented rate limit")
    # For the benchmark's report, for scale only: a faster documented tier the CRM's objects
    # are not under (rows per second, what it is), e.g. Brevo's contact endpoints.
    scale_tier: tuple[float, str] | None = None
    # -- the pulled CRM field schema (crm_sync/schema_files.py, transform/schemas.py) ----------
    # The CRM's error code for a value outside a field's options.
    option_error_code: str = "INVALID_OPTION"
    # The CrmField flag a matching key needs ("unique"; Salesforce: "external_id"), and how to
    # say so.
    matching_key_needs: tuple[str, str] = ("unique", "a field with unique values")
    # (object, field) the CRM matches records by whatever the schema says of its uniqueness.
    always_matchable: frozenset[tuple[str, str]] = frozenset()

    @property
    def rules(self) -> tuple[RecordRule, ...]:
        """Every rule of the CRM's records (validation's checks and quarantine messages)."""
        refused = (self.matching_value_refused,) if self.matching_value_refused else ()
        return self.record_rules + refused

    @property
    def token_variable(self) -> str:
        return self.resource.token_variable

    @property
    def can_delete(self) -> bool:
        return self.mirror_unsupported is None

    def required_for(self, object_name: str) -> set[str]:
        return set(self.required_fields.get("*", ())) | set(
            self.required_fields.get(object_name, ()))

