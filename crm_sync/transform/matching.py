"""Matching values: which CRM record a row upserts, compared the way its CRM compares them.

Two rows whose matching values the CRM treats as equal upsert the same record: the later write
silently overwrites the earlier. So duplicates are found on the normalised value, here and only
here (validation within a partition, the sync store across partitions), by the rules each
CRM's profile declares (`matching_column`, `matching_ignores_case`):

- HubSpot: `email` is matched case-insensitively (HubSpot stores email addresses lowercased);
  other unique properties exactly.
- Salesforce: text external ids are matched case-insensitively, unless the field is
  case-sensitive (an External ID marked "Unique, case sensitive"): `matching_key_case_sensitive:
  true` in the sync spec.
- Brevo: `ext_id` exactly (Brevo documents no case folding; the sandbox keeps it as sent);
  `matching_key: id` rows carry no matching value (the id comes from the state).
- Superleap: the record id (`matching_column`), exactly.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from crm_sync.connectors import PROFILES
from crm_sync.spec import SyncSpec


def _casefold(value) -> str:
    return str(value).lower()


def frame_column(spec: SyncSpec) -> str | None:
    """The column of a CRM frame (validation's `to_crm_frame`) that holds the value naming the
    row's CRM record, or None when the sync has none (Brevo `matching_key: id`). Each CRM's
    profile says which (crm_sync/connectors/<crm>.py)."""
    return PROFILES[spec.crm].matching_column(spec)


def normaliser(spec: SyncSpec):
    """value -> the text the CRM compares."""
    return _casefold if PROFILES[spec.crm].matching_ignores_case(spec) else str


def matching_values(spec: SyncSpec, frame: pd.DataFrame) -> pd.Series | None:
    """Per row of a CRM frame, the normalised value that names its CRM record (None: no
    value, the CRM creates a record). None when the sync has no matching value."""
    column = frame_column(spec)
    if column is None or column not in frame.columns:
        return None
    text = frame[column].astype("string")  # (vectorized: a partition may be a million rows)
    if normaliser(spec) is _casefold:
        text = text.str.lower()
    return text.astype(object).where(text.notna(), None)


def describe(spec: SyncSpec) -> str:
    """How the sync's CRM compares its matching key (for messages)."""
    if normaliser(spec) is _casefold:
        return f"{spec.crm} matches {spec.matching_key} ignoring case"
    return f"{spec.crm} matches {spec.matching_key} exactly"


def digest(value: str) -> str:
    """What the sync store keeps of a normalised matching value (never the value itself: it may
    be a sensitive field, e.g. an email)."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
