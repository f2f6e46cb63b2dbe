"""Typed CRM payloads: the one converter from validated text to the JSON values a CRM field
expects, and the one digest that says whether a row changed.

Validation (crm_sync/transform/) calls `typed_payloads` on the rows that passed its checks: a
row whose values cannot be converted is quarantined there, the others carry their payload
(`_payload`) and digest (`_digest`) to the runner, which only plans and sends. Conversion is
column by column (one pass per mapped field); one row is the one-row case (`mapped_fields`).

The digest is `h1:<mapping salt>:<64-bit hash of the row's mapped columns>`: the hash covers
every column the payload is built from (validated text, before conversion), the salt the
mapping itself (fields, types, known attributes), so a changed value or a changed mapping both
mean "send again". It serves change detection (sync_state) and replay's "has the row changed
since it was refused" (the quarantine's payload_digest) alike. State and quarantine entries
written before digests existed hold a sha256 of the payload (`legacy_payload_hash`, 64 hex
characters): they are compared the old way once, and the state is upgraded to a digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from decimal import Decimal

import pandas as pd

from crm_sync.transform import safejson
from crm_sync.spec import SyncSpec
from crm_sync.spec_links import link_column

PAYLOAD = "_payload"  # column of a validated frame: the row's typed CRM fields (a dict)
DIGEST = "_digest"  # column of a validated frame: the row's change-detection digest

# ASCII digits only: int() and float() also read `٣` as 3, `１２` as 12 and `1_000` as 1000.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Types sent as the validated text itself.
_TEXT_TYPES = ("string", "email", "phone", "date", "datetime")


def convert(value, type_: str):
    """One source value (text) as the JSON value the CRM field expects (`typed_payloads`
    applies it to the cells of the columns that are not text)."""
    if value is None:
        return None
    if type_ == "integer":
        text = str(value).strip()
        if not _INTEGER_TEXT.fullmatch(text):
            raise ValueError(f"{value!r} is not a whole number (ASCII digits)")
        return int(text)
    if type_ == "number":
        return _number(value)
    if type_ == "boolean":
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{value!r} is not a boolean")
        return text in ("true", "1", "yes")
    if type_ == "json":
        return safejson.loads(value) if isinstance(value, str) else value
    return str(value)


def _number(value):
    """A number as exact as JSON can carry it: a whole number is sent as an integer, digit for
    digit (a float would turn 12345678901234567890 into 1.2345678901234567e+19); a fraction as
    the nearest float."""
    text = str(value).strip()
    if not _NUMBER_TEXT.fullmatch(text):
        raise ValueError(f"{value!r} is not a number (ASCII digits)")
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    if not number.is_integer():
        return number
    if abs(number) < 2**53:  # the float is exact here
        return int(number)
    exact = Decimal(text)
    return int(exact) if exact == exact.to_integral_value() else number


def typed_payloads(spec: SyncSpec, frame: pd.DataFrame
                   ) -> tuple[list[dict | None], list[Exception | None]]:
    """The CRM fields of every row of a validated frame, typed, column by column: per row its
    payload (missing values left out, not cleared) or None and the first conversion error."""
    n = len(frame)
    out: list[dict] = [{} for _ in range(n)]
    errors: list[Exception | None] = [None] * n
    for name, mapping in spec.fields.items():
        values = frame[name].tolist()
        if mapping.type in _TEXT_TYPES:
            for record, value in zip(out, values):
                if value is not None:
                    record[name] = value if type(value) is str else str(value)
            continue
        _convert_column(name, mapping.type, values, out, errors)
    if "_extra" in frame.columns:
        _merge_extra(spec, frame["_extra"].tolist(), out, errors)
    if spec.known_attributes is not None:
        # Brevo would drop them without a word; validation reported them, here they stay home.
        known = set(spec.known_attributes)
        out = [{k: v for k, v in record.items() if k in known} for record in out]
    return ([None if error is not None else record for record, error in zip(out, errors)],
            errors)


def _convert_column(name: str, kind: str, values: list, out: list[dict], errors: list) -> None:
    for i, value in enumerate(values):
        if value is None or errors[i] is not None:
            continue
        try:
            converted = convert(value, kind)
        except (ValueError, TypeError) as exc:
            errors[i] = exc
            continue
        if converted is not None:
            out[i][name] = converted


def _merge_extra(spec: SyncSpec, extras: list, out: list[dict], errors: list) -> None:
    """The attributes of the JSON column: added where no mapped field has the name."""
    for i, extra in enumerate(extras):
        if not extra or errors[i] is not None:
            continue
        try:
            parsed = safejson.loads(extra) if isinstance(extra, str) else extra
        except (ValueError, TypeError) as exc:
            errors[i] = exc
            continue
        if not isinstance(parsed, dict):
            errors[i] = ValueError(f"{spec.attributes_json_column} must hold a JSON object")
            continue
        record = out[i]
        for key, value in parsed.items():
            record.setdefault(key, value)


def mapped_fields(spec: SyncSpec, row: dict) -> dict:
    """The typed CRM fields of one validated row (the one-row case of `typed_payloads`);
    raises the conversion error."""
    columns = list(spec.fields) + (["_extra"] if "_extra" in row else [])
    frame = pd.DataFrame([{c: row.get(c) for c in columns}], dtype=object)
    [payload], [error] = typed_payloads(spec, frame)
    if error is not None:
        raise error
    return payload


# -- the digest --------------------------------------------------------------------------------
DIGEST_VERSION = "h1"


def _mapping_salt(spec: SyncSpec) -> str:
    mapping = json.dumps([DIGEST_VERSION, [(n, m.type) for n, m in spec.fields.items()],
                          spec.attributes_json_column is not None, spec.known_attributes])
    return f"{DIGEST_VERSION}:{hashlib.sha256(mapping.encode()).hexdigest()[:8]}:"


def _digest_columns(spec: SyncSpec) -> list[str]:
    # an association's target key too: a row whose link changed is sent again
    return list(spec.fields) + (["_extra"] if spec.attributes_json_column else []) + [
        link_column(name) for name in spec.associations]


def change_digests(spec: SyncSpec, frame: pd.DataFrame) -> list[str]:
    """One digest per row of a validated frame, vectorized."""
    if frame.empty:
        return []
    hashes = pd.util.hash_pandas_object(frame[_digest_columns(spec)], index=False,
                                        categorize=False)
    salt = _mapping_salt(spec)
    return [f"{salt}{h:016x}" for h in hashes.tolist()]


def is_legacy_hash(digest: str) -> bool:
    """A payload hash written before digests existed (compared with `legacy_payload_hash`)."""
    return len(digest) == 64 and not digest.startswith(f"{DIGEST_VERSION}:")


def legacy_payload_hash(fields: dict) -> str:
    """The sha256 of a payload's canonical JSON: what older versions stored as a row's state
    and a refused row's payload_digest. Only recognises those, once (then upgraded)."""
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def add_payloads(spec: SyncSpec, frame: pd.DataFrame) -> dict:
    """Add each validated row's payload and digest to `frame` as columns (in place: the
    frame is not copied); return the rows that cannot be converted: index -> the reason (the
    quarantine's message), their payload None."""
    payloads, errors = typed_payloads(spec, frame)
    frame[PAYLOAD] = pd.Series(payloads, index=frame.index, dtype=object)
    frame[DIGEST] = pd.Series(change_digests(spec, frame), index=frame.index, dtype=object)
    return {idx: f"cannot convert the row's values: {error}"
            for idx, error in zip(frame.index, errors) if error is not None}
