"""One upsert run of one sync partition: skip unchanged rows, send the rest through the CRM's
connector, and record every row's outcome (state for confirmed rows, quarantine for failures).

Why a rerun is safe: rows the CRM confirmed are recorded with their CRM id and digest in
one transaction after the run; a rerun either skips them (same hash) or updates the same CRM
record (known id / unique matching key). Rows that failed stay unmarked and are sent again.

Rows come typed from validation (crm_sync/transform/convert.py): each carries its payload
(`_payload`), its change-detection digest (`_digest`) and its source digest (`_source_digest`,
crm_sync/transform/unchanged.py: the rows validation set aside unchanged count as unchanged
here), so the runner only plans and sends. Chunks are pipelined: while one chunk's requests
are in flight, the next is planned and its records built on the event loop in short slices
(its state read and outcomes recorded in a worker thread, where SQLite runs without the GIL).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter, deque
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd

from crm_sync.connectors.base import CrmResource
from crm_sync.load import links
from crm_sync.transform import matching
from crm_sync.state import ownership
from crm_sync.transform.convert import DIGEST, PAYLOAD, is_legacy_hash, legacy_payload_hash
from crm_sync.transform.unchanged import SKIPPED, SOURCE_DIGEST
from crm_sync.connectors.model import Outcome, Stats
from crm_sync.state.masking import sensitive_names
from crm_sync.state.quarantine import SYNC, QuarantineEntry, batch_echoes
from crm_sync.connectors.profile import CREATE_MODES
from crm_sync.spec import SyncSpec
from crm_sync.state.store import SyncStore
from crm_sync.errors import AccountingError  # re-exported: its old home


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
    skipped: int = 0  # not sent: the sync's mode (create_only / update_only / append) forbids it
    # mode append, of `skipped`: rows created before whose source changed since. Not sent: an
    # appended record (a call log) is immutable, and the CRM keeps the version first created.
    append_changed: int = 0
    failed: int = 0
    superseded: int = 0  # not sent: a newer version of the row was sent (crm_sync/state/ownership.py)
    dry_run: bool = False
    would_create: int = 0
    would_update: int = 0
    failed_transient: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    duration_seconds: float = 0.0
    failed_by_code: Counter = field(default_factory=Counter)
    links_created: int = 0  # associations made / removed (crm_sync/load/links.py)
    links_removed: int = 0
    targets_missing: int = 0  # rows not sent: ASSOCIATION_TARGET_MISSING
    stats: Stats | None = None  # the connector's counters (the CRM stage's tally)

    @property
    def rows_per_second(self) -> float:
        return self.sent / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def check(self) -> None:
        """Every row handed in ends in exactly one bucket; raise if the numbers disagree."""
        written = self.would_create + self.would_update if self.dry_run else \
            self.created + self.updated
        total = written + self.unchanged + self.skipped + self.failed + self.superseded
        if total != self.rows_in:
            raise AccountingError(
                f"sync {self.sync!r} partition {self.partition}: created/updated {written} + "
                f"unchanged {self.unchanged} + skipped {self.skipped} + failed {self.failed} + "
                f"superseded {self.superseded} = {total}, but {self.rows_in} rows were handed in")


def run_upsert(spec: SyncSpec, valid: pd.DataFrame, resource: CrmResource, store: SyncStore,
               partition: str | None = None, full_resync: bool = False, dry_run: bool = False,
               chunk_rows: int = 10_000, log=None, path: str = SYNC) -> SyncReport:
    """Send a partition's valid rows in chunks (bounded memory; each chunk's state is recorded
    once the CRM confirmed it: an interrupted run loses nothing). `path`: the quarantine's
    `path` of failing rows (crm_sync/state/quarantine.py), their `partition` their day."""
    with _objects_set_aside():
        return asyncio.run(_run_upsert(spec, valid, resource, store, _Where(partition, path),
                                       full_resync, dry_run, chunk_rows, log))


@dataclass(frozen=True)
class _Where:
    """Where failing rows go in the quarantine: the partition (a row's day when its updated_at
    is unknown) and path (sync, replay)."""
    partition: str | None
    path: str

    def day(self, stamp: str | None) -> str | None:
        return stamp[:10] if stamp else self.partition


@contextmanager
def _objects_set_aside():
    """A run allocates millions of short-lived objects; each full collection would walk every
    object held before it (Dagster, pandas, the frame) again: set aside (gc.freeze) for it."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


# Chunks under way at once (being sent, or waiting for their outcomes to be recorded), while
# the next is planned: the CRM always has requests waiting, memory stays bounded.
PIPELINE_DEPTH = 3
# Planning runs on the event loop in slices this small, yielding between them, so responses
# keep being read and requests sent (a second Python thread would only contend for the GIL). A
# slice takes ~25 ms of CPU, less than the CRM needs for the requests in flight: never idle.
PLAN_SLICE_ROWS = 250
_NOT_SYNCED = (None, None)


async def _run_upsert(spec, valid, resource, store, where, full_resync, dry_run, chunk_rows,
                      log) -> SyncReport:
    started = time.monotonic()
    skipped = valid.attrs.get(SKIPPED, 0) if not full_resync else 0  # set aside unchanged
    report = SyncReport(spec.name, spec.crm, spec.object, where.partition,
                        rows_in=len(valid) + skipped, unchanged=skipped, dry_run=dry_run)
    run = ownership.new_run()  # names this run's claims to be sending rows (state/ownership.py)
    try:
        return await _run_chunks(spec, valid, resource, store, where, full_resync,
                                 dry_run, chunk_rows, log, report, run, started)
    finally:
        if not dry_run:
            await asyncio.to_thread(store.release_sending, spec.name, run)


async def _run_chunks(spec, valid, resource, store, where, full_resync, dry_run,
                      chunk_rows, log, report, run, started) -> SyncReport:
    total = len(valid)
    async with resource.open(spec) as connector:
        connector.bind_store(store)  # Superleap: write-ahead log of creates (state/writeahead.py)
        chunk_rows = connector.chunk_rows(total, chunk_rows)  # Salesforce Bulk API: one chunk
        async def send_and_record(plan: _Plan, previous: asyncio.Task | None, done: int):
            outcomes = await connector.upsert(plan.items) if plan.items else []
            if previous is not None:  # record in order, one transaction at a time
                await asyncio.wait([previous])
            await asyncio.to_thread(_record, spec, store, where, plan, outcomes, report,
                                    run)
            if log is not None and total > chunk_rows:
                log(f"{spec.name}: {done}/{total} rows done")

        window: deque[tuple[asyncio.Task, set]] = deque()
        previous = None
        try:
            for offset in range(0, total, chunk_rows):
                chunk = valid.iloc[offset:offset + chunk_rows]
                names = None if dry_run else _identities(spec, chunk)
                # A chunk that names a record a chunk under way also names (same source key or
                # matching value) waits until that one is recorded, as if sent one by one.
                while window and (len(window) >= PIPELINE_DEPTH or any(
                        not names.isdisjoint(other) for _, other in window)):
                    await window.popleft()[0]
                plan = await _plan_chunk(spec, chunk, store, run, where, full_resync, report,
                                         None if dry_run else connector)
                if dry_run:
                    continue
                previous = asyncio.ensure_future(send_and_record(
                    plan, previous, min(offset + chunk_rows, total)))
                window.append((previous, names))
            while window:
                await window.popleft()[0]
        except BaseException as exc:
            # Chunks already under way are not abandoned: what the CRM confirmed is recorded.
            pending = [task for task, _ in window]
            if isinstance(exc, asyncio.CancelledError):
                for task in pending:
                    task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            raise
        stats = connector.core.stats
    report.requests, report.retries, report.rate_limited = \
        stats.requests, stats.retries, stats.rate_limited
    report.stats = stats
    report.duration_seconds = time.monotonic() - started
    report.check()
    return report


async def _plan_chunk(spec, chunk, store, run, where, full_resync, report, connector) -> _Plan:
    """Plan one chunk: its state, its ownership claims, then its rows in slices (the loop goes
    on sending and reading answers between them). `connector` None: a dry run."""
    keys = chunk["_key"].tolist()
    digests = chunk[DIGEST].tolist()
    # (in a thread: SQLite works without the GIL, the loop goes on sending)
    state = await asyncio.to_thread(store.get_state, spec.name, keys)
    same = [not full_resync and state.get(key, _NOT_SYNCED)[1] == digest
            for key, digest in zip(keys, digests)]
    verdicts, stamps = await _claim(spec, store, run, chunk, keys, same, connector is None)
    plan = _Plan(resolved=None if connector is None else await asyncio.to_thread(
        links.resolve, spec, store, keys, chunk, same))  # associations (load/links.py)
    if SOURCE_DIGEST in chunk.columns:  # stored for rows confirmed or unchanged (_record)
        plan.sources = dict(zip(keys, chunk[SOURCE_DIGEST].tolist()))
    for start in range(0, len(chunk), PLAN_SLICE_ROWS):
        stop = start + PLAN_SLICE_ROWS
        plan.extend(_prepare(spec, chunk.iloc[start:stop], keys[start:stop],
                             digests[start:stop], same[start:stop], state, where, full_resync,
                             report, connector, verdicts[start:stop], stamps[start:stop],
                             plan.resolved))
        await asyncio.sleep(0)
    return plan


@dataclass
class _Plan:
    to_send: list[tuple[str, dict, str | None]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    quarantined: list[QuarantineEntry] = field(default_factory=list)
    upgraded: list[tuple[str, str | None, str]] = field(default_factory=list)  # legacy hashes
    items: list = field(default_factory=list)  # the connector's records of to_send
    versions: dict[str, str] = field(default_factory=dict)  # key -> updated_at sent
    resolved: links.Resolved | None = None  # the chunk's associations (load/links.py)
    sources: dict[str, str] = field(default_factory=dict)  # key -> source digest

    def extend(self, other: _Plan) -> None:
        self.to_send += other.to_send
        self.hashes.update(other.hashes)
        self.versions.update(other.versions)
        self.unchanged += other.unchanged
        self.quarantined += other.quarantined
        self.upgraded += other.upgraded
        self.items += other.items
        self.resolved = self.resolved or other.resolved


# How often a run looks again at rows another run is sending (it waits for their outcome).
BUSY_POLL_SECONDS = 0.2


async def _claim(spec, store, run, chunk, keys, same, dry_run) -> tuple[list, list]:
    """The ownership verdict and version (updated_at) of every row of a chunk (verdict None for
    unchanged rows): rows another
    source key owns, or of which a newer version was sent, are not sent; rows another run is
    sending now wait for its outcome (crm_sync/state/ownership.py)."""
    wanted = [pos for pos, unchanged in enumerate(same) if not unchanged]
    verdicts: list = [None] * len(keys)
    if not wanted:
        return verdicts, [None] * len(keys)
    stamps = ownership.version_stamps(chunk["_updated_at"]) if "_updated_at" in chunk.columns \
        else [None] * len(keys)
    values = matching.matching_values(spec, chunk)
    values = [None if v is None else matching.digest(v) for v in values.tolist()] \
        if values is not None else [None] * len(keys)
    rows = [(keys[pos], stamps[pos], values[pos]) for pos in wanted]
    while True:
        found = await asyncio.to_thread(store.claim_for_sending, spec.name, run, rows,
                                        not dry_run)
        if dry_run or all(v.kind != ownership.BUSY for v in found):
            break
        await asyncio.sleep(BUSY_POLL_SECONDS)  # (nothing of the chunk was claimed)
    for pos, verdict in zip(wanted, found):
        verdicts[pos] = verdict
    return verdicts, stamps


def _prepare(spec, chunk, keys, digests, same, state, where, full_resync, report,
             connector, verdicts=None, stamps=None, resolved=None) -> _Plan:
    """Plan a slice of rows and build the records to send (with their associations)."""
    plan = _plan(spec, chunk, keys, digests, same, state, where, full_resync, report,
                 verdicts, stamps)
    links.set_aside_missing(spec, plan, resolved, where, report)
    found = resolved.links if resolved is not None else {}
    if connector is not None and plan.to_send:
        plan.items = [connector.item(k, f, i, found.get(k)) for k, f, i in plan.to_send]
    return plan


def _identities(spec, chunk: pd.DataFrame) -> set[str]:
    """What names a CRM record in a chunk: source keys, known CRM ids, matching values."""
    found = {f"k:{key}" for key in chunk["_key"].tolist()}
    if "_crm_id" in chunk.columns:
        found.update(f"i:{v}" for v in chunk["_crm_id"].tolist() if v is not None)
    names = {spec.matching_key} | {f for f, m in spec.fields.items()
                                   if spec.matching_column and m.column == spec.matching_column}
    for name in names & set(chunk.columns):
        found.update(f"m:{str(v).lower()}" for v in chunk[name].tolist() if v is not None)
    return found


def _plan(spec, chunk, keys, digests, same, state, where, full_resync, report,
          verdicts=None, stamps=None) -> _Plan:
    """Decide, row by row, what to send: only new or changed rows, as the mode allows.
    `same[i]`: row i is unchanged (its digest equals its state's, and this is no full
    resync); `state`: key -> (crm_id, hash) of the rows synced before; `verdicts[i]`: whether
    row i may be sent (crm_sync/state/ownership.py), `stamps[i]` its version (updated_at)."""
    plan = _Plan()
    crm_ids = chunk["_crm_id"].tolist() if "_crm_id" in chunk.columns else [None] * len(keys)
    candidates = []
    for pos, (key, unchanged) in enumerate(zip(keys, same)):
        verdict = verdicts[pos] if verdicts else None
        if unchanged:
            plan.unchanged.append(key)
        elif verdict is not None and verdict.kind in (ownership.SUPERSEDED, ownership.OWNED):
            _set_aside(spec, plan, chunk.iloc[pos].to_dict(), verdict, where, report,
                       stamps[pos] if stamps else None)
        else:
            candidates.append(pos)
    report.unchanged += len(plan.unchanged)
    payloads = chunk[PAYLOAD].tolist() if candidates else []
    for pos in candidates:
        key, fields = keys[pos], payloads[pos]
        digest = digests[pos]
        known_id, known_hash = state.get(key, (None, None))
        crm_id = known_id or crm_ids[pos]
        exists = known_hash is not None or crm_id is not None
        if not full_resync and known_hash is not None and is_legacy_hash(known_hash) and \
                known_hash == legacy_payload_hash(fields):
            plan.unchanged.append(key)  # synced before digests existed: upgrade its state
            plan.upgraded.append((key, known_id, digest))
            report.unchanged += 1
        elif (spec.mode in CREATE_MODES and exists) or (spec.mode == "update_only"
                                                        and not exists):
            report.skipped += 1  # the sync's mode does not allow this write
            if spec.mode == "append" and known_hash is not None and known_hash != digest:
                report.append_changed += 1  # its state keeps the digest of what was created
        else:
            plan.hashes[key] = digest
            plan.to_send.append((key, fields, crm_id))
            if stamps and stamps[pos] is not None:
                plan.versions[key] = stamps[pos]
            if report.dry_run:
                report.would_update += int(exists)
                report.would_create += int(not exists)
    report.sent += 0 if report.dry_run else len(plan.to_send)
    return plan


def _set_aside(spec, plan: _Plan, row: dict, verdict, where, report, stamp=None) -> None:
    """A row that is not sent: a newer version of it was (superseded), or another source key
    owns the CRM record its matching value names (DUPLICATE_MATCHING_KEY, naming the owner)."""
    if verdict.kind == ownership.SUPERSEDED:
        report.superseded += 1
        return
    sensitive = sensitive_names(spec)
    owner = "another source key" if spec.source_key in sensitive else \
        f"the row with {spec.source_key} {verdict.other!r}"
    plan.quarantined.append(QuarantineEntry.not_sent(
        spec, row["_key"], "DUPLICATE_MATCHING_KEY",
        f"{owner} already upserts the {spec.crm} record this row's {spec.matching_key} names "
        f"({matching.describe(spec)}); the row that owns a record in the sync state keeps "
        f"it, so this row is not sent. Fix the source (one row per CRM record)", row,
        spec.key_column, row[DIGEST], where.day(stamp), where.path))
    report.failed += 1
    report.failed_by_code["DUPLICATE_MATCHING_KEY"] += 1


def _record(spec, store, where, plan: _Plan, outcomes: list[Outcome], report,
            run: str | None = None) -> None:
    """Account for every outcome and write state + quarantine in one transaction."""
    sent_keys = {key for key, _, _ in plan.to_send}
    if len(outcomes) != len(plan.to_send) or {o.key for o in outcomes} != sent_keys:
        raise AccountingError(f"sync {spec.name!r}: the connector returned {len(outcomes)} "
                              f"outcomes for {len(plan.to_send)} records")
    payloads = {key: fields for key, fields, _ in plan.to_send}
    state_rows, succeeded = list(plan.upgraded), list(plan.unchanged)
    quarantined = plan.quarantined
    echoes = None  # a raw answer may echo any record of the batch: masked in the store
    for outcome in outcomes:
        if outcome.ok:
            setattr(report, outcome.status, getattr(report, outcome.status) + 1)
            succeeded.append(outcome.key)
            state_rows.append((outcome.key, outcome.crm_id, plan.hashes[outcome.key]))
            continue
        report.failed += 1
        report.failed_transient += int(outcome.transient)
        report.failed_by_code[outcome.error_code or "FAILED"] += 1
        if echoes is None:
            echoes = batch_echoes(payloads.values(), sensitive_names(spec))
        payload = payloads.get(outcome.key)
        quarantined.append(QuarantineEntry.crm_outcome(
            spec, outcome, payload,
            # replay's change check: the payload is stored masked when fields are sensitive
            plan.hashes.get(outcome.key),
            where.day(plan.versions.get(outcome.key)), where.path,
            echoes=echoes if outcome.raw else ()))
    versions = {key: plan.versions[key] for key in succeeded if key in plan.versions}
    made = links.confirmed(plan.resolved, [o.key for o in outcomes if o.ok], report)
    store.record_results(spec.name, succeeded, quarantined, state_rows, versions=versions,
                         run=run, links=made, source_digests={
                             key: plan.sources[key] for key in succeeded if key in plan.sources})
