"""One upsert run of one sync partition: skip unchanged rows, send the rest through the CRM's
connector, and record every row's outcome (state for confirmed rows, quarantine for failures).

Why a rerun is safe: rows the CRM confirmed are recorded with their CRM id and payload hash in
one transaction after the run; a rerun either skips them (same hash) or updates the same CRM
record (known id / unique matching key). Rows that failed stay unmarked and are sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field

import pandas as pd

from crm_sync.connectors.base import CrmResource
from crm_sync.connectors.core import Outcome
from crm_sync.spec import SyncSpec
from crm_sync.store import SyncStore


class AccountingError(AssertionError):
    """created + updated + unchanged + failed did not add up to the rows handed in."""


@dataclass
class SyncReport:
    sync: str
    crm: str
    object: str
    partition: str | None
    rows_in: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0  # not sent because the sync's mode (create_only / update_only) forbids it
    failed: int = 0
    dry_run: bool = False
    would_create: int = 0
    would_update: int = 0
    failed_transient: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    duration_seconds: float = 0.0
    failed_by_code: Counter = field(default_factory=Counter)

    @property
    def rows_per_second(self) -> float:
        return self.sent / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def check(self) -> None:
        """Every row handed in ends in exactly one bucket; raise if the numbers disagree."""
        written = self.would_create + self.would_update if self.dry_run else \
            self.created + self.updated
        total = written + self.unchanged + self.skipped + self.failed
        if total != self.rows_in:
            raise AccountingError(
                f"sync {self.sync!r} partition {self.partition}: created/updated {written} + "
                f"unchanged {self.unchanged} + skipped {self.skipped} + failed {self.failed} = "
                f"{total}, but {self.rows_in} rows were handed in")


def convert(value, type_: str):
    """A source value (text) as the JSON value the CRM field expects."""
    if value is None:
        return None
    if type_ == "integer":
        return int(str(value).strip())
    if type_ == "number":
        number = float(str(value).strip())
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if type_ == "boolean":
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{value!r} is not a boolean")
        return text in ("true", "1", "yes")
    if type_ == "json":
        return json.loads(value) if isinstance(value, str) else value
    return str(value)


def mapped_fields(spec: SyncSpec, row: dict) -> dict:
    """The CRM fields of one validated row, typed; missing values are left out (not cleared)."""
    fields = {}
    for crm_field, mapping in spec.fields.items():
        value = convert(row.get(crm_field), mapping.type)
        if value is not None:
            fields[crm_field] = value
    extra = row.get("_extra")
    if extra:
        parsed = json.loads(extra) if isinstance(extra, str) else extra
        if not isinstance(parsed, dict):
            raise ValueError(f"{spec.attributes_json_column} must hold a JSON object")
        for name, value in parsed.items():
            fields.setdefault(name, value)
    if spec.known_attributes is not None:
        # Brevo would drop them without a word; validation reported them, here they stay home.
        known = set(spec.known_attributes)
        fields = {k: v for k, v in fields.items() if k in known}
    return fields


def payload_hash(fields: dict) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def run_upsert(spec: SyncSpec, valid: pd.DataFrame, resource: CrmResource, store: SyncStore,
               partition: str | None = None, full_resync: bool = False, dry_run: bool = False,
               chunk_rows: int = 10_000, log=None) -> SyncReport:
    """Send a partition's valid rows in chunks (bounded memory; the state of each chunk is
    recorded as soon as the CRM confirmed it, so an interrupted run loses nothing)."""
    return asyncio.run(_run_upsert(spec, valid, resource, store, partition, full_resync, dry_run,
                                   chunk_rows, log))


async def _run_upsert(spec, valid, resource, store, partition, full_resync, dry_run, chunk_rows,
                      log) -> SyncReport:
    started = time.monotonic()
    report = SyncReport(spec.name, spec.crm, spec.object, partition, rows_in=len(valid))
    report.dry_run = dry_run
    async with resource.open(spec) as connector:
        for offset in range(0, len(valid), chunk_rows):
            chunk = valid.iloc[offset:offset + chunk_rows]
            plan = _plan(spec, chunk, store, partition, full_resync, report)
            if dry_run:
                continue
            outcomes = await connector.send(plan.to_send) if plan.to_send else []
            _record(spec, store, partition, plan, outcomes, report)
            if log is not None and len(valid) > chunk_rows:
                log(f"{spec.name}: {min(offset + chunk_rows, len(valid))}/{len(valid)} rows done")
        stats = connector.core.stats
    report.requests, report.retries = stats.requests, stats.retries
    report.rate_limited = stats.rate_limited
    report.duration_seconds = time.monotonic() - started
    report.check()
    return report


@dataclass
class _Plan:
    to_send: list[tuple[str, dict, str | None]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)


def _plan(spec, chunk, store, partition, full_resync, report) -> _Plan:
    """Decide, row by row, what to send: only new or changed rows, as the mode allows."""
    plan = _Plan()
    rows = chunk.to_dict("records")
    state = store.get_state(spec.name, [r["_key"] for r in rows])
    for row in rows:
        key = row["_key"]
        try:
            fields = mapped_fields(spec, row)
        except (ValueError, TypeError) as exc:
            plan.quarantined.append(_quarantine(
                key, partition, "validation", "PARSE_INVALID_FORMAT",
                f"cannot convert the row's values: {exc}", row))
            report.failed += 1
            report.failed_by_code["PARSE_INVALID_FORMAT"] += 1
            continue
        digest = payload_hash(fields)
        known_id, known_hash = state.get(key, (None, None))
        crm_id = known_id or row.get("_crm_id")
        exists = known_hash is not None or crm_id is not None
        if not full_resync and known_hash == digest:
            plan.unchanged.append(key)
            report.unchanged += 1
        elif (spec.mode == "create_only" and exists) or (spec.mode == "update_only"
                                                         and not exists):
            report.skipped += 1  # the sync's mode does not allow this write
        else:
            plan.hashes[key] = digest
            plan.to_send.append((key, fields, crm_id))
            if report.dry_run:
                report.would_update += int(exists)
                report.would_create += int(not exists)
    report.sent += 0 if report.dry_run else len(plan.to_send)
    return plan


def _record(spec, store, partition, plan: _Plan, outcomes: list[Outcome], report) -> None:
    """Account for every outcome and write state + quarantine in one transaction."""
    sent_keys = {key for key, _, _ in plan.to_send}
    if len(outcomes) != len(plan.to_send) or {o.key for o in outcomes} != sent_keys:
        raise AccountingError(f"sync {spec.name!r}: the connector returned {len(outcomes)} "
                              f"outcomes for {len(plan.to_send)} records")
    payloads = {key: fields for key, fields, _ in plan.to_send}
    state_rows, succeeded = [], list(plan.unchanged)
    quarantined = plan.quarantined
    for outcome in outcomes:
        if outcome.ok:
            setattr(report, outcome.status, getattr(report, outcome.status) + 1)
            succeeded.append(outcome.key)
            state_rows.append((outcome.key, outcome.crm_id, plan.hashes[outcome.key]))
            continue
        report.failed += 1
        report.failed_transient += int(outcome.transient)
        report.failed_by_code[outcome.error_code or "FAILED"] += 1
        quarantined.append({
            **_quarantine(outcome.key, partition, "crm", outcome.error_code or "FAILED",
                          outcome.message or "", payloads.get(outcome.key)),
            "http_status": outcome.http_status, "attempts": outcome.attempts,
            "transient": outcome.transient, "column_name": outcome.column,
        })
    store.record_results(spec.name, succeeded, quarantined, state_rows)


def _quarantine(key, partition, stage, code, message, payload) -> dict:
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if not k.startswith("_") or k == "_crm_id"}
    return {"source_key": key, "partition": partition, "stage": stage, "error_code": code,
            "message": message, "payload": payload}
