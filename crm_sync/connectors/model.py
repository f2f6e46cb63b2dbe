"""What the connectors hand back: one `Outcome` per record sent (as an `Item`), the run's
`Stats`, and the `RateLimitStop` that ends a run's sending. Plain values; no I/O."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime


# Item and Outcome are built once per record on the hot path: plain slotted dataclasses, since
# a frozen dataclass's __init__ (object.__setattr__ per field) costs ~5x as much. Treat them as
# values all the same: code that needs a changed one builds a new one (dataclasses.replace).
@dataclass(frozen=True)
class TargetRef:
    """A record of another sync that a record is linked to (spec `associations:`), as the
    target sync's state knows it: its CRM id, and its matching key and value when known."""

    association: str  # the association's name in the spec (e.g. "companies")
    object: str  # the target's CRM object (HubSpot companies, Brevo client, Salesforce Account)
    crm_id: str | None  # the target record's CRM id
    key_field: str | None = None  # the target's matching key (ext_id, External_Id__c, ...)
    key_value: str | None = None  # its value for the target record


@dataclass(frozen=True)
class RowLinks:
    """What one record's associations must become: targets to link now, and targets linked
    before (a changed or removed source value) to unlink."""

    link: tuple[TargetRef, ...] = ()
    unlink: tuple[TargetRef, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.link or self.unlink)


@dataclass(slots=True)
class Item:
    """One record to send: its source key, its CRM payload, and that payload serialized;
    `links`: its associations (spec `associations:`), None when the sync declares none."""

    key: str
    record: dict
    body: bytes
    links: RowLinks | None = None


@dataclass(slots=True)
class Outcome:
    """What became of one input record. Exactly one per input record."""

    key: str
    status: str  # "created" | "updated" | "deleted" (mirror) | "failed"
    crm_id: str | None = None
    error_code: str | None = None
    message: str | None = None
    http_status: int | None = None
    transient: bool = False
    attempts: int = 1
    column: str | None = None
    raw: str | None = None  # the CRM's raw answer, when it could not be understood

    @property
    def ok(self) -> bool:
        return self.status in ("created", "updated", "deleted")


@dataclass(frozen=True)
class RateLimitStop:
    """The CRM asked to wait longer than the run may: sending stopped."""

    retry_after_seconds: float
    until: datetime  # UTC
    message: str  # e.g. "HubSpot asked to wait 3600 s (until 2026-12-01 12:34:56 UTC)"


@dataclass
class Stats:
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    batches: int = 0
    splits: int = 0
    # The CRM stage's records (Connector.upsert): how many were handed to the CRM, how many
    # failed, by error code, with one message per code (what a failed run names as its cause).
    records: int = 0
    records_failed: int = 0
    records_transient: int = 0
    failed_by_code: Counter = field(default_factory=Counter)
    failure_messages: dict[str, str] = field(default_factory=dict)
    rate_limit_stop: RateLimitStop | None = None
    # The CRM refused further requests as over a limit that names no time to wait (Salesforce's
    # 403 REQUEST_LIMIT_EXCEEDED): sending stopped; why, as the run's failure names it.
    limit_stop: str | None = None
    # Requests that link records in calls of their own after the upsert (HubSpot's
    # associations API, Connector.link_records); `requests` counts them too.
    association_requests: int = 0

    def count(self, outcomes: Sequence[Outcome]) -> None:
        self.records += len(outcomes)
        for outcome in outcomes:
            if not outcome.ok:
                code = outcome.error_code or "FAILED"
                self.records_failed += 1
                self.records_transient += int(outcome.transient)
                self.failed_by_code[code] += 1
                self.failure_messages.setdefault(code, outcome.message or "")


def failed_all(items: Sequence[Item], code: str, message: str, *, status: int | None = None,
               transient: bool, attempts: int = 1, raw: str | None = None) -> list[Outcome]:
    return [Outcome(key=i.key, status="failed", error_code=code, message=message,
                    http_status=status, transient=transient, attempts=attempts, raw=raw)
            for i in items]
