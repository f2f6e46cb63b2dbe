"""Request bodies and answers as bytes: a record serialized exactly as it is sent, a CRM's
answer parsed, a spec value made one URL path segment, and records cut into batches within
a CRM's count and byte limits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from urllib.parse import quote

import orjson

from crm_sync.connectors.model import Item


# The stdlib encoder, for what orjson refuses (integers beyond 64 bits) and to refuse NaN/inf.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def serialize(record: dict) -> bytes:
    """The exact bytes a record takes in a request body (NaN/inf are refused, not sent).

    orjson (a C extension, ~5x the stdlib's speed: serializing is a large share of crm_sync's
    CPU per row) writes compact UTF-8 JSON like json.dumps(separators=(",", ":"),
    ensure_ascii=False). It writes NaN and infinity as null where the stdlib can refuse them,
    so a body holding `null` is checked again by the stdlib encoder, which raises ValueError
    for them; integers orjson cannot hold (beyond 64 bits) go through the stdlib too."""
    try:
        body = orjson.dumps(record)
    except orjson.JSONEncodeError:
        return _ENCODER.encode(record).encode("utf-8")
    if b"null" in body:
        _ENCODER.encode(record)  # raises ValueError for NaN/inf; a real null stays as it is
    return body


def path_segment(value) -> str:
    """One segment of a request's URL path made from a spec or CRM value (an object name, a
    field name, a process id), percent-encoded so that it stays one segment of the CRM's API:
    `/`, `?`, `#`, `%` and spaces are encoded, and `.` or `..` (which URL resolution would
    apply as "this / the parent directory") are written as %2E. Every connector builds its
    paths through this; the spec's names are checked at load time as well (crm_sync/spec.py)."""
    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in (".", "..") else text


# 20 digits in a row: a number that may be beyond 64 bits, which orjson would read as a float.
# Looked for as 20 zeros in a copy of the answer where every digit is b"0" and every other byte
# a space: bytes.translate and `in` are C loops over the bytes (~4 ns a byte), where the regex
# `\d{20}` tried a match at every digit (~60 ns a byte: ~12% of crm_sync's client CPU per
# Superleap or Brevo row, measured in issue 19; BENCHMARKS.md "Round 2").
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))  # 0-9 -> "0"
_LONG_RUN = b"0" * 20


def has_long_digit_run(content: bytes) -> bool:
    """Whether `content` holds 20 ASCII digits in a row (what the regex rb"\\d{20}" finds)."""
    return _LONG_RUN in content.translate(_DIGITS_AS_ZEROS)


def parse_json(content: bytes):
    """A CRM's answer as Python values: orjson, or the stdlib for what orjson refuses (NaN
    literals); ValueError when it is not JSON at all. An answer holding 20 digits in a row
    goes to the stdlib, which reads integers beyond 64 bits exactly (orjson reads them as
    floats, so a read-back of a value crm_sync sent exactly would not compare equal)."""
    if not has_long_digit_run(content):
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError:
            pass
    return json.loads(content)


def make_batches(items: Sequence[Item], max_records: int, max_bytes: int | None,
                 envelope_bytes: int) -> tuple[list[list[Item]], list[Item]]:
    """Split items into batches within both limits, in order; return (batches, too_large).

    The body of a batch is `prefix + b",".join(bodies) + suffix`, so its size is known exactly
    from the serialized records: envelope + sum(len(body)) + (n - 1) separators.
    """
    batches: list[list[Item]] = []
    too_large: list[Item] = []
    current: list[Item] = []
    size = envelope_bytes
    for item in items:
        own = envelope_bytes + len(item.body)
        if max_bytes is not None and own > max_bytes:
            too_large.append(item)  # no request could ever carry it
            continue
        extra = len(item.body) + (1 if current else 0)
        if current and (len(current) >= max_records or
                        (max_bytes is not None and size + extra > max_bytes)):
            batches.append(current)
            current, size = [], envelope_bytes
            extra = len(item.body)
        current.append(item)
        size += extra
    if current:
        batches.append(current)
    return batches, too_large
