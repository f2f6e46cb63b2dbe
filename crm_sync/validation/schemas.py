"""pandera schemas that mirror what each CRM documents, generated from a sync's field mapping.

The frame being validated has one column per mapped CRM field (values as the source holds them,
strings) plus `_key` (the source key), `_updated_at` and `_crm_id` (a known CRM record id).
Each check carries a rule name; RULES turns it into the quarantine's error code and message.
"""

from __future__ import annotations

import pandera.pandas as pa

from crm_sync.rules import EMAIL_PATTERN, PHONE_PATTERN, SUPERLEAP_ID_PATTERN
from crm_sync.spec import SyncSpec

# rule -> (error code, message template). {column} and {value} are filled in per row.
RULES: dict[str, tuple[str, str]] = {
    "required": ("REQUIRED_FIELD_MISSING", "{column} is required but empty"),
    "email_format": ("PARSE_INVALID_FORMAT", "invalid email format: {value}"),
    "phone_format": ("PARSE_INVALID_FORMAT", "invalid number: {value}"),
    "integer_format": ("PARSE_INVALID_FORMAT", "{column} must be a whole number, got {value}"),
    "number_format": ("PARSE_INVALID_FORMAT", "{column} must be a number, got {value}"),
    "date_format": ("PARSE_INVALID_FORMAT", "{column} must be a date (YYYY-MM-DD), got {value}"),
    "superleap_id_format": (
        "INVALID_ID_FORMAT",
        "{value} is not a Superleap record id (<org>_<8 characters>, like g1koYv_2lLKYVan)",
    ),
    "duplicate_key": (
        "DUPLICATE_MATCHING_KEY",
        "another row of this partition has the same {column} ({value}) and a newer updated_at; "
        "only the newest is sent",
    ),
}

# Fields each CRM itself requires (beyond `required: true` in the spec).
CRM_REQUIRED = {"superleap": {"name"}}

_FORMAT_CHECKS = {
    "email": ("email_format", EMAIL_PATTERN),
    "phone": ("phone_format", PHONE_PATTERN),
    "integer": ("integer_format", r"^[+-]?\d{1,18}$"),
    "number": ("number_format", r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"),
    "date": ("date_format", r"^\d{4}-\d{2}-\d{2}$"),
}


def build_schema(spec: SyncSpec) -> pa.DataFrameSchema:
    """The schema of one sync: a column per mapped field with the CRM's documented checks."""
    columns: dict[str, pa.Column] = {}
    required_fields = CRM_REQUIRED.get(spec.crm, set())
    for crm_field, mapping in spec.fields.items():
        checks = []
        if mapping.type in _FORMAT_CHECKS:
            rule, pattern = _FORMAT_CHECKS[mapping.type]
            checks.append(pa.Check.str_matches(pattern, name=rule, error=rule))
        required = mapping.required or crm_field in required_fields
        if required:
            checks.append(pa.Check.str_length(min_value=1, name="required", error="required"))
        columns[crm_field] = pa.Column(object, checks=checks, nullable=not required,
                                       required=True)
    # Without its source key a row could never be tracked, replayed or reported.
    columns["_key"] = pa.Column(object, pa.Check.str_length(min_value=1, name="required", error="required"),
                                nullable=False)
    if spec.crm == "superleap":
        columns["_crm_id"] = pa.Column(
            object, pa.Check.str_matches(SUPERLEAP_ID_PATTERN, name="superleap_id_format",
                                error="superleap_id_format"),
            nullable=True)
    return pa.DataFrameSchema(columns, name=f"{spec.crm}:{spec.object}", strict=False,
                              coerce=False)
