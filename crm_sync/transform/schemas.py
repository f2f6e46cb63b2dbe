"""pandera schemas that mirror what each CRM documents.

`CommonRecords` holds the rule every CRM shares (the source key); `build_schema` adds the
CRM's own record rules (its profile's `record_rules`: id formats, limits, declared in the
CRM's connector module) and a column per mapped field of the sync, with the checks its type
and the CRM require. The frame being validated has one column per mapped CRM field (values as
the source holds them, text) plus `_key` (source key), `_updated_at`, `_crm_id` (a known CRM
id) and, where the CRM limits them, derived `_attribute_count` and `_record_bytes`. Every
check maps to a rule name; `rule_texts` turns that into the quarantine's error code and a
message a person can act on.
"""

from __future__ import annotations

import re
from datetime import date

import pandera.pandas as pa
from pandera.typing import Series

from crm_sync.transform.rules import EMAIL_PATTERN, PHONE_PATTERN
from crm_sync.connectors import PROFILES
from crm_sync.spec import SyncSpec

# rule -> (error code, message template) of the rules every CRM shares (a CRM's own rules are
# in its profile, `rule_texts`). {column} and {value} are filled in per row.
RULES: dict[str, tuple[str, str]] = {
    "required": ("REQUIRED_FIELD_MISSING", "{column} is required but empty"),
    "email_format": ("PARSE_INVALID_FORMAT", "invalid email format: {value}"),
    "phone_format": ("PARSE_INVALID_FORMAT", "invalid number: {value}"),
    "integer_format": ("PARSE_INVALID_FORMAT", "{column} must be a whole number, got {value}"),
    "number_format": ("PARSE_INVALID_FORMAT", "{column} must be a number, got {value}"),
    "date_format": ("PARSE_INVALID_FORMAT",
                    "{column} must be a date that exists (YYYY-MM-DD), got {value}"),
    "boolean_format": ("PARSE_INVALID_FORMAT", "{column} must be true or false, got {value}"),
    "datetime_format": ("PARSE_INVALID_FORMAT",
                        "{column} must be a date and time with a zone (YYYY-MM-DDThh:mm:ssZ or "
                        "+hh:mm), got {value}"),
    "updated_at": (
        "INVALID_UPDATED_AT",
        "updated_at is missing or not a timestamp (got {value!r}): the row belongs to no daily "
        "partition, so it is not synced until its updated_at is fixed",
    ),
    "updated_at_out_of_range": (
        "UPDATED_AT_OUT_OF_RANGE",
        "updated_at {value!r} lies outside every daily partition, so the row is not synced "
        "until its updated_at falls in one or the spec's start_date is moved",
    ),
    "malformed_source_row": (
        "MALFORMED_SOURCE_ROW",
        "{value}: the line cannot be read with the header's columns, so its row is not synced "
        "until the line is fixed in the source file",
    ),
    "nul_character": (
        "INVALID_CHARACTER",
        "{column} contains a NUL character (\\x00), which a CRM's text fields cannot hold "
        "reliably; remove it at the source",
    ),
    "duplicate_key": (
        "DUPLICATE_MATCHING_KEY",
        "another row of this partition has the same {column} ({value}) and a newer updated_at; "
        "only the newest is sent",
    ),
}



# Digits are ASCII [0-9], not `\d`: Python's `\d`, int() and float() also accept digits of
# other scripts (`٣`, `１２`), which a CRM would read differently or refuse; such a value is
# quarantined rather than sent as 3 or 12 (crm_sync.transform.convert refuses them too).
_FORMAT_CHECKS = {
    "email": ("email_format", EMAIL_PATTERN),
    "phone": ("phone_format", PHONE_PATTERN),
    "integer": ("integer_format", r"^[+-]?[0-9]{1,18}$"),
    "number": ("number_format", r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?$"),
    "date": ("date_format", r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])$"),
    "boolean": ("boolean_format", r"^(?i:true|false|1|0|yes|no)$"),
    # ISO 8601 with the `T`, seconds, optional milliseconds and a zone: Salesforce's documented
    # dateTime ("yyyy-MM-ddTHH:mm:ss.SSS+/-HH:mm or yyyy-MM-ddTHH:mm:ss.SSSZ", REST API "Valid
    # Date and DateTime Formats"); "2017-10-17 00:00:00" fails its whole request with
    # JSON_PARSER_ERROR. +hhmm (no colon) is how Salesforce writes its own.
    "datetime": ("datetime_format",
                 r"^([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
                 r"(?:\.[0-9]{3})?(?:Z|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9])$"),
}
_DATE = re.compile(_FORMAT_CHECKS["date"][1])
_DATETIME = re.compile(_FORMAT_CHECKS["datetime"][1])


def _calendar_date(value) -> bool:
    """A YYYY-MM-DD date that exists: 2026-02-30 has the format but is no day (Brevo accepts
    the request, then drops the record without a word), so the pattern alone is not enough."""
    if not isinstance(value, str) or _DATE.fullmatch(value) is None:
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _real_dates(series):
    return series.map(_calendar_date).astype(bool)


def _calendar_datetime(value) -> bool:
    match = _DATETIME.fullmatch(value) if isinstance(value, str) else None
    return match is not None and _calendar_date(match.group(1))


def _real_datetimes(series):
    return series.map(_calendar_datetime).astype(bool)


def _format_check(kind: str) -> pa.Check:
    rule, pattern = _FORMAT_CHECKS[kind]
    if kind == "date":  # for every CRM: a date must be a day of the calendar
        return pa.Check(_real_dates, name=rule, error=rule)
    if kind == "datetime":  # and so must a date and time's date
        return pa.Check(_real_datetimes, name=rule, error=rule)
    return pa.Check.str_matches(pattern, name=rule, error=rule)


class CommonRecords(pa.DataFrameModel):
    """Rules for every CRM: a row without its source key could never be tracked or replayed."""

    key: Series[object] = pa.Field(alias="_key", nullable=False, str_length={"min_value": 1})

    class Config:
        strict = False
        coerce = False


def rule_texts(spec: SyncSpec) -> dict[str, tuple[str, str]]:
    """rule -> (error code, message template) for the rules of a sync: RULES plus the rules
    its CRM declares (its profile's `rules`)."""
    return RULES | {r.rule: (r.error_code, r.message) for r in PROFILES[spec.crm].rules}


def _record_check(rule) -> pa.Check:
    """The pandera check of one of a CRM's RecordRules, named by the rule."""
    if rule.check == "matches":
        return pa.Check.str_matches(rule.bound, name=rule.rule, error=rule.rule)
    if rule.check == "at_least":
        return pa.Check.ge(rule.bound, name=rule.rule, error=rule.rule)
    if rule.check == "at_most":
        return pa.Check.le(rule.bound, name=rule.rule, error=rule.rule)
    raise ValueError(f"unknown record check {rule.check!r} of rule {rule.rule!r}")


def _record_columns(spec: SyncSpec) -> dict[str, pa.Column]:
    """The columns the CRM's record rules check (`_crm_id`: text or none; the measures of
    `to_crm_frame`: whole numbers)."""
    checks: dict[str, list] = {}
    for rule in PROFILES[spec.crm].record_rules:
        checks.setdefault(rule.column, []).append(rule)
    return {column: pa.Column(object, checks=[_record_check(r) for r in rules], nullable=True)
            if all(r.check == "matches" for r in rules) else
            pa.Column(int, checks=[_record_check(r) for r in rules])
            for column, rules in checks.items()}


# Rules of the model's Field checks, by column and check kind.
FIELD_RULES = {
    ("_key", "str_length"): "required",
}


def rule_of(column: str, check: str) -> str:
    """The rule name of a pandera failure case."""
    if check == "not_nullable":
        return "required"
    kind = check.split("(", 1)[0]
    return FIELD_RULES.get((column, kind), check)


def required_fields(spec: SyncSpec) -> set[str]:
    fields = {f for f, m in spec.fields.items() if m.required}
    profile = PROFILES[spec.crm]
    fields |= profile.required_for(spec.object)  # what the CRM itself requires
    if profile.matching_key_is_field:
        fields.add(spec.matching_key)  # the upsert matches on it: it must be there
    return fields & set(spec.fields)


def _has_no_nul(series):
    return ~series.str.contains("\x00", regex=False).eq(True)


# A NUL character is not text: databases refuse it (PostgreSQL text) or cut the value at it, so
# a row holding one is quarantined rather than sent and perhaps silently truncated.
_NO_NUL = pa.Check(_has_no_nul, name="nul_character", error="nul_character")


def build_schema(spec: SyncSpec) -> pa.DataFrameSchema:
    """The schema of one sync: the CRM's model plus a column per mapped field."""
    required = required_fields(spec)
    columns: dict[str, pa.Column] = {}
    for crm_field, mapping in spec.fields.items():
        checks = [_NO_NUL]
        if mapping.type in _FORMAT_CHECKS:
            checks.append(_format_check(mapping.type))
        if crm_field in required:
            checks.append(pa.Check.str_length(min_value=1, name="required", error="required"))
        refused = PROFILES[spec.crm].matching_value_refused
        if refused and crm_field == spec.matching_key:
            checks.append(_record_check(refused))
        columns[crm_field] = pa.Column(object, checks=checks, nullable=crm_field not in required)
    schema = CommonRecords.to_schema().add_columns({**_record_columns(spec), **columns})
    schema.name = f"{spec.crm}:{spec.object}"
    return schema
