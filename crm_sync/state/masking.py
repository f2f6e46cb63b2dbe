"""Masking of the fields a sync spec marks `sensitive: true`, wherever a person reads them.

crm_sync keeps a rejected row's values in the quarantine (payload, bad value, message, the CRM's
raw answer) so that a person can fix the source. For a sensitive field that would put e.g. a
personal email address in every place the quarantine is shown: Dagster metadata, the SQLite
table people query with `sqlite3`. So quarantine entries are masked before they are stored:
the sensitive fields of the payload become `***`, as does the `value` when the failing column
is sensitive, and every occurrence of a sensitive value (case-insensitively, and as it appears
JSON-escaped) in the message and the raw answer. The values themselves stay where they come
from (the source table) and go to the CRM unchanged.

Values shorter than MIN_MASKED_LENGTH characters are masked in the payload and `value` but not
searched for in free text: masking every "1" of a message would make it unreadable and hides
nothing worth hiding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable

from crm_sync.spec import SyncSpec

MASK = "***"
MIN_MASKED_LENGTH = 3


def sensitive_names(spec: SyncSpec) -> frozenset[str]:
    """The CRM field names and source column names of the sync's sensitive fields (quarantine
    entries name a column either way)."""
    names: set[str] = set()
    for crm_field, mapping in spec.fields.items():
        if mapping.sensitive:
            names.update((crm_field, mapping.column))
    return frozenset(names)


def sensitive_values(payload, names: Collection[str]) -> list[str]:
    """The values of the sensitive fields of one payload (a dict of CRM fields)."""
    if not names or not isinstance(payload, dict):
        return []
    return [str(v) for k, v in payload.items() if k in names and v is not None]


def secret_forms(secrets: Iterable[str], min_length: int = MIN_MASKED_LENGTH
                 ) -> tuple[str, ...]:
    """Each secret as it may appear in text: verbatim, JSON-escaped (ASCII-only or not), with
    `/` written `\\/` (as some JSON encoders do), and as Python's repr escapes it. Longest
    first, so that a form containing another is replaced whole. A secret shorter than
    `min_length` is not searched for (it cannot be told from ordinary text)."""
    forms: set[str] = set()
    for secret in secrets:
        if secret and len(secret) >= min_length:
            forms.update((secret, json.dumps(secret)[1:-1],
                          json.dumps(secret, ensure_ascii=False)[1:-1],
                          secret.replace("/", "\\/"), repr(secret)[1:-1]))
    return tuple(sorted(forms, key=len, reverse=True))


def redact_forms(text, forms: Iterable[str]):
    """`text` with every occurrence of each form (case-insensitive) replaced by ***: the one
    redaction of crm_sync, for sensitive values in the quarantine and for the credentials in a
    CRM's answers (crm_sync/connectors/core.py)."""
    if not isinstance(text, str) or not text:
        return text
    lowered = text.lower()
    for form in forms:
        if form.lower() in lowered:  # cheap test first: most secrets are not in the text
            text = re.sub(re.escape(form), MASK, text, flags=re.IGNORECASE)
            lowered = text.lower()
    return text


def redact_text(text, secrets: Iterable[str]):
    """`text` with every occurrence of each secret (case-insensitive, raw or escaped)
    replaced by ***."""
    return redact_forms(text, secret_forms(secrets))


def mask_entry(entry: dict, names: Collection[str], extra_secrets: Iterable[str] = ()) -> dict:
    """A quarantine entry with its sensitive values masked (a new dict; `entry` is unchanged).
    `extra_secrets`: more values to take out of the message and raw answer (the sensitive
    values of the other records of a batch, which a raw answer may echo)."""
    if not names:
        return entry
    entry = dict(entry)
    payload = entry.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = None
    secrets = sensitive_values(payload, names)
    if isinstance(payload, dict):
        entry["payload"] = {k: (MASK if k in names and v is not None else v)
                            for k, v in payload.items()}
    if entry.get("column_name") in names and entry.get("value") is not None:
        secrets.append(str(entry["value"]))
        entry["value"] = MASK
    secrets.extend(extra_secrets)
    for key in ("message", "raw"):
        if entry.get(key):
            entry[key] = redact_text(entry[key], secrets)
    return entry
