"""Salesforce Bulk API 2.0 ingest: a run with more rows to send than the sync's
`bulk_threshold` (default 2,000: "Any data operation that includes more than 2,000 records is
a good candidate for Bulk API 2.0", REFERENCE.md §4) upserts them through ONE ingest job
instead of one collections request per 200 records (connectors/salesforce.py):

    POST  /services/data/vXX.X/jobs/ingest        {"object", "operation": "upsert",
          "externalIdFieldName", "contentType": "CSV", "lineEnding": "LF"}  -> id, Open
    PUT   .../jobs/ingest/{id}/batches             the CSV (text/csv)           -> 201
    PATCH .../jobs/ingest/{id}                     {"state": "UploadComplete"}
    GET   .../jobs/ingest/{id}                     polled until JobComplete / Failed / Aborted
    GET   .../successfulResults/, failedResults/, unprocessedrecords/   CSVs

Every row gets exactly one Outcome: successfulResults -> created / updated (sf__Created) with
the record id (sf__Id); failedResults -> failed, permanent, with the Salesforce status code
parsed from sf__Error ("STATUS_CODE:message:fields"); unprocessedrecords -> failed transient
(BULK_UNPROCESSED), sent again; a row in none of them -> MALFORMED_RESPONSE, transient.
Result rows carry the row's own columns, so they are matched to rows by the external id as
uploaded.

CSV (Bulk API 2.0, "Prepare CSV Files", "Valid CSV Record Rows"): UTF-8, comma, LF, a header
of field API names; null is `#N/A` ("Empty field values are ignored when you update records.
To set a field value to null, use a field value of #N/A"); booleans true/false; numbers in
plain decimal notation; dates and datetimes as the converter already wrote them (ISO 8601).
A field absent from a record is left empty (unchanged), as the JSON upsert leaves it. Records
the CSV cannot carry as the JSON upsert would go through the collections upsert instead: a
nested value (a parent by external id, `associations:`), a text holding a carriage return or
the text `#N/A` itself, a record without its external id.

Limits ("Upload Job Data"): "upload data that does not exceed 100 MB" (150 MB once base64
encoded): a larger CSV is split over as many jobs as that takes. A chunk of the run takes at
most BULK_CHUNK_ROWS rows (memory, not a Salesforce limit), so 100,000 rows are one job.

Exactly once across crashes (crm_sync/state/bulkjobs.py): the job's rows are logged in the sync
store after the job is created and BEFORE the upload. A later run holding those rows (same
record) collects the job (polls it, reads its results) instead of uploading them again. A job
found still Open (the run died before UploadComplete) is aborted: Salesforce processes nothing
of an Open job, so its rows are sent again. Polling starts at FIRST_POLL_SECONDS and grows by
POLL_FACTOR up to MAX_POLL_SECONDS; a job not finished after the resource's
`bulk_timeout_seconds` leaves its rows transient (BULK_JOB_IN_PROGRESS) with their log
entries kept, and the next run collects it. Polls and result reads are GETs: retried like any
read. The upload is not resent blind (retry_transport_errors=False): an upload whose answer is
lost aborts the job and the rows fail transient.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import re
import time
from collections import deque
from decimal import Decimal

from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.connectors.wire import path_segment
from crm_sync.errors import FatalCrmError, TransientFailure
from crm_sync.state.bulkjobs import IN_PROGRESS, BulkJobLog, digest

NULL = "#N/A"
MAX_UPLOAD_BYTES = 100_000_000  # per job (one upload each)
BULK_CHUNK_ROWS = 250_000
FIRST_POLL_SECONDS, POLL_FACTOR, MAX_POLL_SECONDS = 0.25, 1.5, 10.0
FINISHED = ("JobComplete", "Failed", "Aborted")
RESULTS = ("successfulResults", "failedResults", "unprocessedrecords")
UNPROCESSED = "BULK_UNPROCESSED"
LIMIT_CODE, RESERVE_CODE = "REQUEST_LIMIT_EXCEEDED", "ALLOWANCE_RESERVE_REACHED"
_CODE = re.compile(r"([A-Z][A-Z0-9_]*):(.*)", re.S)
_FIELDS = re.compile(r"(.*):([A-Za-z0-9_,]*)(?: --)?", re.S)


class _Refused(Exception):
    """A job request Salesforce refused (or that got no answer): its rows fail transient."""

    def __init__(self, code: str, message: str, status: int | None = None):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


class _JobGone(Exception):
    """404: Salesforce does not know the job (deleted, or past its 7-day lifespan)."""


class BulkPath:
    """SalesforceConnector's Bulk API 2.0 path (a mixin: `spec`, `core`, `api_version`,
    `stopped` are the connector's)."""

    bulk_log: BulkJobLog | None = None
    bulk_timeout: float = 900.0

    def bind_store(self, store) -> None:
        self.bulk_log = BulkJobLog(store, self.spec.name)

    def chunk_rows(self, total: int, chunk_rows: int) -> int:
        threshold = self.spec.bulk_threshold
        if self.bulk_log is None or threshold is None or total <= threshold:
            return chunk_rows
        return max(chunk_rows, min(total, BULK_CHUNK_ROWS))

    async def upsert(self, items) -> list[Outcome]:
        if self.bulk_log is None:  # (no sync store: the connector used on its own)
            return await super().upsert(items)
        jobs = _Jobs(self)
        outcomes, rest = await jobs.recover(items)
        threshold = self.spec.bulk_threshold
        bulky = [i for i in rest if csv_ready(i, self.spec.matching_key)] \
            if threshold is not None and len(rest) > threshold else []
        if len(bulky) > (threshold or 0):
            sent = {i.key for i in bulky}
            rest = [i for i in rest if i.key not in sent]
            outcomes += await jobs.send(bulky)
        self.core.stats.count(outcomes)  # (the collections upsert counts its own)
        return outcomes + (await super().upsert(rest) if rest else [])


class _Jobs:
    """The ingest job requests of one upsert call."""

    def __init__(self, connector: BulkPath):
        self.c, self.core, self.spec = connector, connector.core, connector.spec
        self.base = f"/services/data/v{path_segment(connector.api_version)}/jobs/ingest"

    async def recover(self, items) -> tuple[list[Outcome], list[Item]]:
        """Outcomes of the rows an earlier run's job holds (that job collected), and the rows
        left to send (not in a job, never processed by theirs, or changed since: sent once
        their old job has ended, so that it cannot overwrite the newer values after)."""
        pending = await asyncio.to_thread(self.c.bulk_log.pending, [i.key for i in items])
        held: dict[str, list[Item]] = {}
        rest: list[Item] = []
        for item in items:
            entry = pending.get(item.key)
            if entry:
                held.setdefault(entry[0], []).append(item)
            else:
                rest.append(item)
        outcomes: list[Outcome] = []
        for job_id, its in held.items():
            for item, outcome in zip(its, await self.collect(job_id, its)):
                changed = pending[item.key][1] != digest(item.body)
                if outcome.error_code == UNPROCESSED or \
                        (changed and outcome.error_code != IN_PROGRESS):
                    rest.append(item)  # not done, or done with its old values: send it now
                else:
                    outcomes.append(outcome)
        return outcomes, rest

    async def send(self, items: list[Item]) -> list[Outcome]:
        columns = csv_columns(items, self.spec.matching_key)
        outcomes: list[Outcome] = []
        for part, data in csv_parts(items, columns):
            outcomes += await self.job(part, data)
        return outcomes

    async def job(self, items: list[Item], data: bytes) -> list[Outcome]:
        """Create, log, upload, close, collect: one job, one Outcome per row."""
        if self.c.stopped:
            return failed_all(items, RESERVE_CODE, self.c.stopped, transient=True)
        self.core.stats.batches += 1
        try:
            info = await self.request("POST", self.base, json.dumps({
                "object": self.spec.object, "operation": "upsert", "contentType": "CSV",
                "externalIdFieldName": self.spec.matching_key, "lineEnding": "LF"}).encode())
            job_id = str(info["id"])
        except (_Refused, _JobGone, KeyError, TypeError) as exc:
            code = getattr(exc, "code", "MALFORMED_RESPONSE")
            return failed_all(items, code, f"Salesforce did not create the ingest job: {exc}",
                              status=getattr(exc, "status", None), transient=True)
        # The job's rows are in the store before any of them leaves (state/bulkjobs.py).
        await asyncio.to_thread(self.c.bulk_log.record, job_id,
                                [(i.key, digest(i.body)) for i in items])
        try:
            await self.request("PUT", f"{self.base}/{job_id}/batches", data, csv_body=True)
        except (_Refused, _JobGone) as exc:
            await self.abort(job_id)
            return failed_all(items, UNPROCESSED, f"the upload to ingest job {job_id} failed "
                              f"({exc}); the job was aborted and the rows are sent again",
                              status=getattr(exc, "status", None), transient=True)
        try:
            await self.request("PATCH", f"{self.base}/{job_id}",
                               b'{"state":"UploadComplete"}')
        except (_Refused, _JobGone):
            pass  # collect reads the job's state: still Open, it is aborted
        return await self.collect(job_id, items)

    async def collect(self, job_id: str, items: list[Item]) -> list[Outcome]:
        """Wait for the job to end and map its results to the rows (in the order given)."""
        try:
            info = await self.wait(job_id)
            if info is not None:
                tables = [read_csv(await self.request(
                    "GET", f"{self.base}/{job_id}/{kind}/", csv_answer=True), kind)
                    for kind in RESULTS]
                check_counts(info, tables)
        except _JobGone:
            await asyncio.to_thread(self.c.bulk_log.forget, job_id)
            return failed_all(items, UNPROCESSED, f"Salesforce no longer knows ingest job "
                              f"{job_id}: its rows are sent again", transient=True)
        except _Refused as exc:
            return failed_all(items, IN_PROGRESS, f"ingest job {job_id} could not be read "
                              f"({exc}); the next run collects it", transient=True)
        if info is None:
            return failed_all(items, IN_PROGRESS, f"ingest job {job_id} did not finish within "
                              f"{self.c.bulk_timeout:g} s; the next run collects its results",
                              transient=True)
        return map_results(items, self.spec.matching_key, job_id, info, tables)

    async def wait(self, job_id: str) -> dict | None:
        """The job's info once it is JobComplete, Failed or Aborted (an Open job is aborted);
        None when it is still being processed at the deadline."""
        delay, deadline = FIRST_POLL_SECONDS, time.monotonic() + self.c.bulk_timeout
        while True:
            info = await self.request("GET", f"{self.base}/{job_id}")
            if info.get("state") == "Open":
                info = await self.abort(job_id) or info
            if info.get("state") in FINISHED:
                return info
            if time.monotonic() + delay > deadline:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * POLL_FACTOR, MAX_POLL_SECONDS)

    async def abort(self, job_id: str) -> dict | None:
        try:
            return await self.request("PATCH", f"{self.base}/{job_id}", b'{"state":"Aborted"}')
        except (_Refused, _JobGone):
            return None

    async def request(self, method: str, path: str, content: bytes | None = None, *,
                      csv_body: bool = False, csv_answer: bool = False):
        """One job request: its JSON (or CSV text), or _Refused / _JobGone / FatalCrmError."""
        try:
            response, payload, _ = await self.core.call(
                method, path, content=content, retry_transport_errors=not csv_body,
                content_type="text/csv" if csv_body else "application/json",
                json_answer=not csv_answer)
        except TransientFailure as exc:
            raise _Refused(exc.code, str(exc), exc.status) from None
        status = response.status_code
        if 200 <= status < 300:
            return response.text if csv_answer else payload if isinstance(payload, dict) else {}
        code, message = _error(payload, response.text)
        if status == 401:
            raise FatalCrmError(f"Salesforce refused the session token (HTTP 401 {code}) for "
                                f"sync {self.spec.name!r}: check SALESFORCE_TOKEN")
        if status == 404:
            raise _JobGone(message)
        if status == 403 and code == LIMIT_CODE:  # stop sending, as the collections path does
            self.c.stopped = self.c.stopped or f"Salesforce's API request limit is spent: " \
                f"{message}; the remaining rows are retried on the next run"
            self.core.stats.limit_stop = self.core.stats.limit_stop or \
                f"Salesforce refused requests: {message} (403 {LIMIT_CODE})"
        elif status in (400, 403) and method == "POST":
            raise FatalCrmError(f"Salesforce cannot create an upsert job for {self.spec.object} "
                                f"by {self.spec.matching_key} for sync {self.spec.name!r} "
                                f"(HTTP {status} {code}): {message}")
        raise _Refused(code or f"HTTP_{status}", f"HTTP {status} {code}: {message}", status)


def _error(payload, text: str) -> tuple[str | None, str]:
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        return payload[0].get("errorCode"), str(payload[0].get("message") or "")
    return None, text[:300]


# -- the CSV ---------------------------------------------------------------------------------
def csv_ready(item: Item, key: str) -> bool:
    """Whether the CSV carries the record as the JSON upsert would (else: collections)."""
    for name, value in item.record.items():
        if name == "attributes":
            continue
        if isinstance(value, (dict, list)) or (isinstance(value, float) and
                                               not math.isfinite(value)):
            return False
        if isinstance(value, str) and ("\r" in value or value == NULL):
            return False
    return item.record.get(key) not in (None, "")


def cell(value) -> str:
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return format(Decimal(text), "f") if "e" in text or "E" in text else text
    return str(value)


def csv_columns(items: list[Item], key: str) -> list[str]:
    columns = {key: None}
    for item in items:
        for name in item.record:
            if name != "attributes":
                columns.setdefault(name, None)
    return list(columns)


def to_csv(items: list[Item], columns: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for item in items:
        record = item.record
        writer.writerow([cell(record[c]) if c in record else "" for c in columns])
    return out.getvalue().encode("utf-8")


def csv_parts(items: list[Item], columns: list[str]) -> list[tuple[list[Item], bytes]]:
    """The rows as CSVs of at most MAX_UPLOAD_BYTES each (halved until they fit)."""
    data = to_csv(items, columns)
    if len(data) <= MAX_UPLOAD_BYTES or len(items) == 1:
        return [(items, data)]
    middle = len(items) // 2
    return csv_parts(items[:middle], columns) + csv_parts(items[middle:], columns)


def read_csv(text: str, kind: str) -> list[dict[str, str]]:
    """The rows of a result CSV; _Refused when it is not one whole (cut short: it must end
    with its line ending, every quote closed; its first columns are the documented ones)."""
    if text and not text.endswith("\n"):
        raise _Refused("MALFORMED_RESPONSE", f"the {kind} CSV is cut short")
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        rows = list(reader)
    except csv.Error as exc:
        raise _Refused("MALFORMED_RESPONSE", f"the {kind} CSV is unreadable: {exc}") from None
    first = {"successfulResults": ["sf__Id", "sf__Created"],
             "failedResults": ["sf__Id", "sf__Error"]}.get(kind, [])
    if rows and (reader.fieldnames or [])[:len(first)] != first:
        raise _Refused("MALFORMED_RESPONSE", f"the {kind} CSV does not start with {first}")
    return rows


def check_counts(info: dict, tables: list[list[dict[str, str]]]) -> None:
    """The result CSVs hold as many rows as the job info says it processed and failed."""
    processed, failed = info.get("numberRecordsProcessed"), info.get("numberRecordsFailed")
    if isinstance(processed, int) and isinstance(failed, int) and \
            (len(tables[0]) + len(tables[1]), len(tables[1])) != (processed, failed):
        raise _Refused("MALFORMED_RESPONSE", f"the results list {len(tables[0])} successful "
                       f"and {len(tables[1])} failed rows, the job {processed} processed and "
                       f"{failed} failed")


# -- the results -----------------------------------------------------------------------------
def map_results(items: list[Item], key: str, job_id: str, info: dict,
                tables: list[list[dict[str, str]]]) -> list[Outcome]:
    """One Outcome per row, in order, from the three result CSVs (rows matched by the
    external id as uploaded; rows sharing one take the results in order)."""
    waiting: dict[str, deque[Item]] = {}
    for item in items:
        waiting.setdefault(cell(item.record.get(key)), deque()).append(item)
    found: dict[str, Outcome] = {}
    successful, failed, unprocessed = tables
    why = f"ingest job {job_id} ended {info.get('state')}" + (
        f": {info['errorMessage']}" if info.get("errorMessage") else "")
    for row, make in [*((r, _succeeded) for r in successful), *((r, _failed) for r in failed),
                      *((r, lambda r, i: Outcome(i.key, "failed", error_code=UNPROCESSED,
                                                 message=f"not processed ({why}); sent again",
                                                 http_status=200, transient=True))
                        for r in unprocessed)]:
        queue = waiting.get(row.get(key, ""))
        if queue:
            item = queue.popleft()
            found[item.key] = make(row, item)
    # A row in no result of an aborted or failed job was not processed (an Open job aborted
    # has no data to list); of a complete job, the answer is wrong: transient either way.
    missing = UNPROCESSED if info.get("state") != "JobComplete" else "MALFORMED_RESPONSE"
    return [found.get(i.key) or Outcome(
        i.key, "failed", error_code=missing, http_status=200, transient=True,
        message=f"the row is in none of the results of {why}") for i in items]


def _succeeded(row: dict[str, str], item: Item) -> Outcome:
    created = row.get("sf__Created", "").lower() == "true"
    return Outcome(item.key, "created" if created else "updated",
                   crm_id=row.get("sf__Id") or None, http_status=200)


def _failed(row: dict[str, str], item: Item) -> Outcome:
    code, message, column = parse_error(row.get("sf__Error", ""))
    return Outcome(item.key, "failed", error_code=code, message=message, http_status=200,
                   transient=False, column=column)


def parse_error(text: str) -> tuple[str, str, str | None]:
    """(status code, message, first field) of an sf__Error: "STATUS_CODE:message:fields",
    several joined by "; " (the first one's code and fields; the message keeps them all)."""
    first, *others = re.split(r"; (?=[A-Z][A-Z0-9_]*:)", text.strip())
    match = _CODE.fullmatch(first)
    if not match:
        return "BULK_ROW_FAILED", text.strip() or "failed (no sf__Error)", None
    code, rest = match.groups()
    fields = _FIELDS.fullmatch(rest)
    message, names = (fields.group(1), fields.group(2)) if fields else (rest, "")
    message = "; ".join([message.strip(), *others]) if others else message.strip()
    return code, message, names.split(",")[0] or None
