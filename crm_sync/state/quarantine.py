"""The quarantine entry: one typed record of a row that did not reach the CRM, and the one place
that builds it.

Every producer (validation, the runner, replay, mirror) builds a `QuarantineEntry` through one
of the constructors below; the store writes it (`SyncStore.record_results`) and masks it there,
once (`QuarantineEntry.masked`): an entry carries the names of its sync's sensitive fields, so
a producer cannot forget to mask it and no producer masks it twice.

Two columns say where an entry belongs:

- `partition`: the row's day (the UTC day of its updated_at), whatever run found the failure,
  so that a day's preview shows every failing row of that day; NULL for a row that belongs to
  no partition (updated_at missing, not a timestamp or out of range; a CSV line that cannot be
  read) or whose day is unknown (a mirror deletion of a key whose state holds no updated_at).
- `path`: the step whose failure it is: `sync` (a partition run), `replay` (the replay of the
  quarantine, or the retry of transient failures), `mirror` (a failed deletion).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import pandas as pd

from crm_sync.state.masking import mask_entry, redact_text, sensitive_names, sensitive_values
from crm_sync.spec import SyncSpec

SYNC, REPLAY, MIRROR = "sync", "replay", "mirror"  # the `path` column
PATHS = (SYNC, REPLAY, MIRROR)
VALIDATION, CRM = "validation", "crm"  # the `stage` column


@dataclass(frozen=True, slots=True, repr=False)
class QuarantineEntry:
    """One quarantine row (the columns of table `quarantine`, less sync and quarantined_at).
    `sensitive` and `echoes` are not stored: they say what `masked` takes out."""

    source_key: str
    stage: str
    error_code: str
    message: str
    partition: str | None = None
    path: str = SYNC
    rules: str | None = None  # every rule the row broke, comma separated (default: the code)
    column_name: str | None = None
    value: object = None
    payload: dict | None = None
    http_status: int | None = None
    attempts: int | None = None
    transient: bool = False
    raw: str | None = None  # the CRM's answer when it could not be understood
    payload_digest: str | None = None  # the unmasked row's digest (replay's change check)
    runs: int | None = None  # runs in a row a transient CRM failure was the outcome (store)
    sensitive: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    # the sensitive values of the other records of the batch, which a raw answer may echo
    echoes: tuple[str, ...] = field(default=(), repr=False, compare=False)

    # -- constructors, one per kind of failure -------------------------------------------------
    @classmethod
    def validation_failure(cls, spec: SyncSpec, key: str, error_code: str, rules: str,
                           column_name: str | None, value, message: str, payload: dict,
                           day: str | None) -> QuarantineEntry:
        """A row that broke the CRM's documented rules (validation/)."""
        return cls(str(key), VALIDATION, error_code, message, partition=day, rules=rules,
                   column_name=column_name, value=value, payload=payload,
                   sensitive=sensitive_names(spec))

    @classmethod
    def conversion_failure(cls, spec: SyncSpec, key: str, message: str, row: dict,
                           day: str | None, path: str = SYNC) -> QuarantineEntry:
        """A valid row whose values cannot be converted to the CRM's types (validation, with
        crm_sync/transform/convert.py)."""
        return cls(str(key), VALIDATION, "PARSE_INVALID_FORMAT", message, partition=day,
                   path=path, payload=_payload(row), sensitive=sensitive_names(spec))

    @classmethod
    def not_sent(cls, spec: SyncSpec, key: str, error_code: str, message: str, row: dict,
                 column_name: str | None, payload_digest: str | None, day: str | None,
                 path: str = SYNC) -> QuarantineEntry:
        """A row the runner set aside without sending it (another key owns its record)."""
        return cls(str(key), CRM, error_code, message, partition=day, path=path,
                   column_name=column_name, payload=_payload(row),
                   payload_digest=payload_digest, sensitive=sensitive_names(spec))

    @classmethod
    def crm_outcome(cls, spec: SyncSpec, outcome, payload: dict | None,
                    payload_digest: str | None, day: str | None, path: str = SYNC,
                    echoes: tuple[str, ...] = ()) -> QuarantineEntry:
        """A record the CRM refused or did not confirm (a failed `Outcome` of an upsert)."""
        return cls(str(outcome.key), CRM, outcome.error_code or "FAILED",
                   outcome.message or "", partition=day, path=path,
                   column_name=outcome.column, payload=_payload(payload),
                   http_status=outcome.http_status, attempts=outcome.attempts,
                   transient=bool(outcome.transient), raw=outcome.raw,
                   payload_digest=payload_digest, sensitive=sensitive_names(spec),
                   echoes=echoes)

    @classmethod
    def mirror_deletion(cls, spec: SyncSpec, key: str, crm_id: str | None, outcome,
                        day: str | None) -> QuarantineEntry:
        """A row gone from the source whose CRM record could not be deleted (load/mirror.py)."""
        reason = outcome.message or "no reason given"
        message = (f"the source row is gone but deleting {spec.crm} {spec.object} record "
                   f"{crm_id} failed: {reason}") if crm_id else reason
        return cls(str(key), CRM, outcome.error_code or "FAILED", message, partition=day,
                   path=MIRROR, http_status=outcome.http_status, attempts=outcome.attempts,
                   transient=bool(outcome.transient), raw=outcome.raw,
                   payload={"operation": "delete", "crm_id": crm_id},
                   sensitive=sensitive_names(spec))

    # -- what the store writes ---------------------------------------------------------------
    def masked(self, raw_cache: dict | None = None) -> QuarantineEntry:
        """The entry with its sensitive values masked (crm_sync/state/masking.py). `raw_cache`: raw
        answers already masked with the same echoes (a batch shares one raw answer)."""
        if not self.sensitive:
            return self
        names = self.sensitive
        shown = mask_entry({"payload": self.payload, "column_name": self.column_name,
                            "value": self.value, "message": self.message}, names)
        raw = self.raw
        if raw:
            own = sensitive_values(self.payload, names)
            if self.column_name in names and self.value is not None:
                own.append(str(self.value))
            if self.echoes:  # the batch's values include this record's own
                memo = {} if raw_cache is None else raw_cache
                cached = memo.get((raw, id(self.echoes)))
                if cached is None:
                    cached = memo[(raw, id(self.echoes))] = redact_text(raw, self.echoes)
                raw = redact_text(cached, own)
            else:
                raw = redact_text(raw, own)
        return dataclasses.replace(self, payload=shown["payload"], value=shown["value"],
                                   message=shown["message"], raw=raw, echoes=())

    def __repr__(self) -> str:
        # An entry in a log line or a failed assertion shows what the store would: masked.
        shown = self.masked()
        return "QuarantineEntry(" + ", ".join(
            f"{f.name}={getattr(shown, f.name)!r}" for f in dataclasses.fields(self)
            if f.repr) + ")"

    def payload_text(self) -> str | None:
        if self.payload is None or isinstance(self.payload, str):
            return self.payload
        return json.dumps(self.payload, default=str, ensure_ascii=False)


def masked_all(entries: Sequence[QuarantineEntry]) -> list[QuarantineEntry]:
    """Every entry masked, each batch's raw answer once."""
    cache: dict = {}
    return [entry.masked(cache) for entry in entries]


def batch_echoes(payloads: Collection, names: Collection[str]) -> tuple[str, ...]:
    """The sensitive values of a batch's payloads (a raw answer may echo any of them)."""
    if not names:
        return ()
    return tuple(v for fields in payloads for v in sensitive_values(fields, names))


def row_days(values: pd.Series | Sequence) -> list[str | None]:
    """The UTC day (YYYY-MM-DD) of each updated_at value; None where it is no timestamp (the
    days of the daily partitions: naive timestamps are UTC)."""
    stamps = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce",
                            format="ISO8601")
    return [v if isinstance(v, str) else None
            for v in stamps.dt.strftime("%Y-%m-%d").tolist()]


def day_of(value) -> str | None:
    """The UTC day of one updated_at value (or an ISO 8601 stamp), None if it is none."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return row_days([value])[0]


def _payload(row) -> dict | None:
    """The payload stored: the CRM fields (a source row's own bookkeeping columns left out)."""
    if not isinstance(row, dict):
        return row
    return {k: v for k, v in row.items() if not k.startswith("_") or k == "_crm_id"}


__all__ = ["QuarantineEntry", "masked_all", "batch_echoes", "row_days", "day_of", "PATHS",
           "SYNC", "REPLAY", "MIRROR"]
