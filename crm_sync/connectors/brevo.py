"""Brevo custom objects: `POST /v3/objects/{object_type}/batch/upsert` with `{"records": [...]}`.

Each record is `{"identifiers": {"ext_id": <matching value>}, "attributes": {...}}`. An `ext_id`
that exists updates that record, a new one creates a record. With `matching_key: id` a row whose
Brevo id is known is sent as `{"id": <int>}` instead (update only).

The upsert is asynchronous: Brevo answers 202 with a `processId` and nothing else. This
connector polls `GET /v3/processes/{id}` until the process is `completed` or `failed` (with a
timeout), and then, because Brevo reports no per-record result for object upserts, reads the
records back (`GET /v3/objects/{object_type}/records`, the only documented read: pages of up to
1000 records in creation order, `sort=asc|desc`, with the total `count`; no filter by ext_id or
id) to confirm every record:

- found with the sent values -> `created` if Brevo created it during this run, else `updated`;
  its Brevo id is the outcome's crm_id. Attributes sent but absent from the record were silently
  ignored by Brevo (not in the object's schema): the record still counts, the outcome's message
  and a warning name them.
- not found, or with other values -> failed, transient `NOT_CONFIRMED` (the next run resends
  it). A record sent by an `id` Brevo does not have -> failed, permanent `UNKNOWN_ID`.

Reading is bounded by the batch, not by the object (reading the whole object after every
batch would cost O(n^2) requests over a large sync):

- before the first batch, one read of one record (`sort=desc&limit=1`) notes the newest record
  of the object: every record above it in creation order is one this run created;
- a row whose Brevo id is known (the sync state keeps the id each confirmation returned, or the
  row is sent by `id`) is looked for on the pages that hold that id, found by bisecting the
  pages in creation order (Brevo ids grow with creation): ~1 page per page of rows;
- the other rows are looked for among the records this run created, newest first
  (`sort=desc`), stopping as soon as the batch's records are all found (a batch's records are
  among the newest when its process completes) or at the newest record from before the run;
- only a row found by neither (a record made outside crm_sync, an id that moved because records
  were deleted meanwhile, an unknown id) costs one read of the whole object, shared by the
  batches that complete before it starts.

Mirror syncs delete with `POST /v3/objects/{object_type}/batch/delete` (`{"identifiers":
{"ids": [...]}}`, at most 1000, 202 + processId), by the Brevo record ids kept in the state:
that id is what the upsert confirmed, whatever identified the record (an ext_id, or `id` with
`matching_key: id`), and the state does not keep ext_ids. The process is polled like an
upsert's and, as Brevo reports nothing per record, a read-back confirms each deletion.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import httpx
from pydantic import Field

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.core import HttpCore, Item, Outcome, failed_all
from crm_sync.connectors.core import path_segment
from crm_sync.connectors.profile import CrmProfile, RecordRule
from crm_sync.errors import FatalCrmError, TransientFailure
from crm_sync.spec import SyncSpec

# Brevo custom-object limits (per record upsert request).
BREVO_MAX_RECORDS = 1000
BREVO_MAX_BODY_BYTES = 1_000_000
BREVO_MAX_ATTRIBUTES = 500
BREVO_MAX_ASSOCIATIONS = 10

log = logging.getLogger(__name__)

PAGE_SIZE = 1000  # getrecords accepts `limit` up to 1000
_UNREAD = object()  # the boundary (newest record before the run) is not known yet
POLL_BACKOFF = 1.5
DONE = ("completed", "failed", "cancelled")


@dataclass
class Snapshot:
    """The object's records as one read saw them: Brevo id -> attributes, ext_id -> id."""

    started: float  # monotonic time the read began: it shows every write finished before
    attributes: dict[int, dict]
    ids_by_ext: dict[str, int]


class BrevoConnector(Connector):
    crm = "brevo"
    max_records = BREVO_MAX_RECORDS
    max_bytes = BREVO_MAX_BODY_BYTES  # 1 MB, read strictly as 1,000,000 bytes
    prefix = b'{"records":['
    suffix = b"]}"

    def __init__(self, spec: SyncSpec, core: HttpCore, batch_size: int | None = None, *,
                 poll_interval_seconds: float = 0.2, max_poll_interval_seconds: float = 10.0,
                 process_timeout_seconds: float = 300.0):
        super().__init__(spec, core, batch_size)
        self.poll_interval = poll_interval_seconds
        self.max_poll_interval = max_poll_interval_seconds
        self.process_timeout = process_timeout_seconds
        self._ext_field = _ext_id_field(spec)
        self._read_lock = asyncio.Lock()
        self._boundary: int | None | object = _UNREAD  # newest record id before the run
        self._count = 0  # the object's record count, as the latest read reported it
        self._known_ids: dict[str, int] = {}  # source key -> Brevo id, from the sync state
        # Records this run created, seen while looking for a batch's records but not claimed yet
        # (ext_id -> id, attributes): concurrent batches complete together, one read serves all.
        self._created_seen: dict[str, tuple[int, dict]] = {}
        self._scan_lock = asyncio.Lock()
        self._latest: Snapshot | None = None
        self._rejections: dict[str, Outcome] = {}
        self.ignored_attributes: Counter = Counter()

    # -- payload -------------------------------------------------------------------------------
    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        # Missing values are left out (not cleared), as for every CRM of crm_sync.
        attributes = {k: v for k, v in fields.items() if v is not None}
        if self.spec.matching_key == "id" and crm_id:
            identifiers = {"id": int(crm_id) if str(crm_id).isdigit() else crm_id}
        else:
            if crm_id and str(crm_id).isdigit():
                self._known_ids[key] = int(crm_id)  # where to look when confirming
            ext_id = key if self._ext_field is None else fields.get(self._ext_field)
            identifiers = {"ext_id": None if ext_id is None else str(ext_id)}
        return {"identifiers": identifiers, "attributes": attributes}

    @property
    def path(self) -> str:
        return f"/v3/objects/{path_segment(self.spec.object)}/batch/upsert"

    # -- sending -------------------------------------------------------------------------------
    async def upsert(self, items: Sequence[Item]) -> list[Outcome]:
        # Records Brevo would refuse for the whole request (a 400 fails all 1000 records of a
        # batch) are failed here, before any batching.
        outcomes, sendable, seen = [], [], set()
        for item in items:
            problem = self._precheck(item, seen)
            if problem is None:
                sendable.append(item)
            else:
                outcomes.append(problem)
        if sendable:
            outcomes += await super().upsert(sendable)
        self._warn_ignored()
        return outcomes

    def _precheck(self, item: Item, seen: set) -> Outcome | None:
        attributes, identifiers = item.record["attributes"], item.record["identifiers"]
        if not attributes:
            return _permanent(item, "NO_ATTRIBUTES", "Brevo needs at least one attribute per "
                              "record; every mapped value of this row is empty")
        if len(attributes) > BREVO_MAX_ATTRIBUTES:
            return _permanent(item, "TOO_MANY_ATTRIBUTES",
                              f"{len(attributes)} attributes; Brevo accepts at most "
                              f"{BREVO_MAX_ATTRIBUTES} per record",
                              column=self.spec.attributes_json_column)
        if "id" in identifiers and not (isinstance(identifiers["id"], int) and
                                        identifiers["id"] > 0):
            return _permanent(item, "INVALID_ID", f"{identifiers['id']!r} is not a Brevo record "
                              "id (a positive integer)")
        if "ext_id" in identifiers and not (identifiers["ext_id"] or "").strip():
            return _permanent(item, "REQUIRED_FIELD_MISSING", "the row has no ext_id value",
                              column=self.spec.matching_column)
        marker = json.dumps(identifiers, sort_keys=True, default=str)
        if marker in seen:  # Brevo would reject both copies inside the process
            return _permanent(item, "DUPLICATE_MATCHING_KEY", f"another row of this run has "
                              f"the same identifiers {marker}")
        seen.add(marker)
        return None

    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        await self._note_boundary()
        return await self.split_on_rejection(batch, self._send, self._rejected)

    async def _send(self, batch: list[Item]) -> list[Outcome] | None:
        # Resending after a dropped connection is safe (the core retries transport errors):
        # every record carries an ext_id or id, so a second copy of the request updates the
        # same records with the same values instead of creating duplicates.
        response, payload, attempts = await self.core.call("POST", self.path,
                                                           content=self.body(batch))
        status, body = response.status_code, payload if isinstance(payload, dict) else {}
        self._raise_if_fatal(status, body)
        if 200 <= status < 300:  # Brevo documents 202
            process_id = body.get("processId")
            if not isinstance(process_id, int) or isinstance(process_id, bool):
                return failed_all(batch, "MALFORMED_RESPONSE", "Brevo accepted the batch "
                                  "without a processId", status=status, transient=True,
                                  attempts=attempts, raw=response.text[:2000])
            return await self._finish(batch, process_id, attempts)
        message = str(body.get("message") or response.text[:300])
        if status in (400, 413):
            # One record can make Brevo refuse the whole request: bisect to find it.
            if len(batch) == 1:
                self._rejections[batch[0].key] = Outcome(
                    batch[0].key, "failed", error_code=str(body.get("code") or "BAD_REQUEST"),
                    message=message, http_status=status, attempts=attempts)
            return None
        return failed_all(batch, str(body.get("code") or f"HTTP_{status}"), message,
                          status=status, transient=False, attempts=attempts)

    def _rejected(self, item: Item) -> Outcome:
        return self._rejections.pop(item.key)

    def _raise_if_fatal(self, status: int, body: dict, about_object: bool = True) -> None:
        """Errors no retry or later run can fix: stop the sync with one readable message."""
        name = self.spec.name
        if status == 401:
            raise FatalCrmError(f"Brevo refused the API key (HTTP 401): check BREVO_API_KEY "
                                f"for sync {name!r}")
        if status == 403:  # custom objects off for the plan, or a standard object
            raise FatalCrmError(f"Brevo refused to upsert {self.spec.object!r} records (HTTP 403, "
                                f"sync {name!r}): {body.get('message', 'forbidden')}")
        message = str(body.get("message", "")).lower().replace("_", " ")
        if about_object and (status == 404 or (status == 400 and "object type" in message)):
            raise FatalCrmError(f"Brevo has no custom object {self.spec.object!r} (sync "
                                f"{name!r}): {body.get('message', 'not found')}; create the "
                                "object type in Brevo first")

    # -- the asynchronous process --------------------------------------------------------------
    async def _finish(self, batch: list[Item], process_id: int, attempts: int) -> list[Outcome]:
        state = await self._wait_for(process_id)
        if state == "timeout":
            return failed_all(batch, "PROCESS_TIMEOUT", f"Brevo process {process_id} did not "
                              f"finish within {self.process_timeout:g} s; the records may still "
                              "be written (resending them is safe)", transient=True,
                              attempts=attempts)
        if state != "completed":
            return failed_all(batch, "PROCESS_FAILED", f"Brevo process {process_id} ended "
                              f"{state!r}; none of its records is confirmed", transient=True,
                              attempts=attempts)
        return await self._confirm(batch, time.monotonic(), attempts)

    async def _wait_for(self, process_id: int) -> str:
        """Poll until the process is done; its final status, or "timeout"."""
        deadline = time.monotonic() + self.process_timeout
        interval = self.poll_interval
        while True:
            await asyncio.sleep(max(0.0, min(interval, deadline - time.monotonic())))
            response, payload, _ = await self.core.call(
                "GET", f"/v3/processes/{path_segment(process_id)}")
            body = payload if isinstance(payload, dict) else {}
            self._raise_if_fatal(response.status_code, body, about_object=False)
            if response.status_code == 404:
                return "not found"
            status = body.get("status")
            if status in DONE:
                return status
            if time.monotonic() >= deadline:
                return "timeout"
            interval = min(interval * POLL_BACKOFF, self.max_poll_interval)

    # -- reading back --------------------------------------------------------------------------
    async def _note_boundary(self) -> None:
        """Once, before this run writes anything: the newest record of the object. Records
        above it in creation order are the ones this run created."""
        async with self._read_lock:
            if self._boundary is _UNREAD:
                records = await self._page(1, "desc", limit=1)
                self._boundary = records[0][0] if records else None

    async def _page(self, page: int, sort: str, limit: int = PAGE_SIZE
                    ) -> list[tuple[int, str | None, dict]]:
        """One page of records: (Brevo id, ext_id, attributes) each."""
        records, count = await self._fetch_page(page, sort, limit)
        if count is not None:
            self._count = count
        return _parse_records(records)

    async def _fetch_page(self, page: int, sort: str, limit: int = PAGE_SIZE
                          ) -> tuple[list, int | None]:
        """One page as Brevo sent it: its records, and the object's record count if given."""
        response, payload, attempts = await self.core.call(
            "GET", f"/v3/objects/{path_segment(self.spec.object)}/records",
            params={"limit": limit, "page_num": page, "sort": sort})
        body = payload if isinstance(payload, dict) else {}
        self._raise_if_fatal(response.status_code, body)
        records = body.get("records")
        if response.status_code != 200 or not isinstance(records, list):
            raise TransientFailure(f"reading Brevo {self.spec.object} records back failed "
                                   f"(HTTP {response.status_code})",
                                   response.status_code, attempts, "READ_BACK_FAILED")
        count = body.get("count")
        return records, count if isinstance(count, int) else None

    async def _by_id(self, wanted: set[int]) -> dict[int, tuple[str | None, dict]]:
        """The records of these ids, from the pages that hold them: pages in creation order
        (ascending ids) bisected, one read serving every id on that page."""
        found: dict[int, tuple[str | None, dict]] = {}

        async def search(low: int, high: int, ids: list[int]) -> None:
            while ids and low <= high:
                middle = (low + high) // 2
                records = await self._page(middle, "asc")
                if not records:  # past the end (the object shrank): look lower
                    high = middle - 1
                    continue
                for record_id, ext_id, attributes in records:
                    if record_id in wanted:
                        found[record_id] = (ext_id, attributes)
                first = min(r[0] for r in records)
                last = max(r[0] for r in records)
                await search(low, middle - 1, [i for i in ids if i < first])
                ids, low = [i for i in ids if i > last], middle + 1

        pages = max(1, -(-max(self._count, 1) // PAGE_SIZE))
        await search(1, pages, sorted(wanted))
        return found

    async def _created(self, wanted: set[str]) -> dict[str, tuple[int, dict]]:
        """Records this run created with these ext_ids: newest first, down to the boundary or
        until all are found. (Within a run no two batches share an ext_id, so a record above
        the boundary is the one this run's batch wrote, whenever it was seen.)"""
        async with self._scan_lock:
            seen = self._created_seen
            found = {ext_id: seen.pop(ext_id) for ext_id in wanted & seen.keys()}
            page = 1
            while len(found) < len(wanted):
                records = await self._page(page, "desc")
                for record_id, ext_id, attributes in records:
                    if record_id == self._boundary:
                        return found
                    if ext_id in wanted:
                        found.setdefault(ext_id, (record_id, attributes))
                    elif ext_id is not None:
                        seen[ext_id] = (record_id, attributes)
                if len(records) < PAGE_SIZE:
                    break
                page += 1
            return found

    async def _snapshot_after(self, since: float) -> Snapshot:
        async with self._read_lock:
            if self._latest is None or self._latest.started < since:
                self._latest = await self._read_all()
            return self._latest

    async def _read_all(self, keep_attributes: bool = True) -> Snapshot:
        started = time.monotonic()
        attributes: dict[int, dict] = {}
        ids_by_ext: dict[str, int] = {}
        page = 1
        while True:
            # Ascending (creation) order: records created while we page go to the end, so
            # no record is skipped.
            records, count = await self._fetch_page(page, "asc")
            for record_id, ext_id, stored in _parse_records(records):
                attributes[record_id] = stored if keep_attributes else {}
                if ext_id is not None:
                    ids_by_ext[ext_id] = record_id
            if len(records) < PAGE_SIZE or (count is not None and page * PAGE_SIZE >= count):
                return Snapshot(started, attributes, ids_by_ext)
            page += 1

    async def _confirm(self, batch: list[Item], completed_at: float,
                       attempts: int) -> list[Outcome]:
        found = await self._locate(batch, completed_at)
        return [self._outcome(item, found.get(item.key), attempts) for item in batch]

    async def _locate(self, batch: list[Item], completed_at: float
                      ) -> dict[str, tuple[int, dict, bool]]:
        """source key -> (Brevo id, stored attributes, existed before the run) of the batch's
        records, read after its process completed."""
        located: dict[str, tuple[int, dict, bool]] = {}
        by_id: dict[int, list[Item]] = {}
        by_ext: dict[str, Item] = {}
        for item in batch:
            identifiers = item.record["identifiers"]
            known = identifiers["id"] if "id" in identifiers else self._known_ids.get(item.key)
            if known is not None:
                by_id.setdefault(known, []).append(item)
            else:
                by_ext[identifiers["ext_id"]] = item
        if by_id:
            records = await self._by_id(set(by_id))
            for record_id, items in by_id.items():
                for item in items:
                    identifiers = item.record["identifiers"]
                    record = records.get(record_id)
                    if record is not None and ("id" in identifiers or
                                               record[0] == identifiers["ext_id"]):
                        located[item.key] = (record_id, record[1], True)
                    elif "ext_id" in identifiers:  # not where it was: maybe made anew
                        by_ext[identifiers["ext_id"]] = item
        if by_ext:
            for ext_id, (record_id, attributes) in (await self._created(set(by_ext))).items():
                located[by_ext[ext_id].key] = (record_id, attributes, False)
        missing = [item for item in batch if item.key not in located]
        if missing:  # the last resort: the whole object
            after = await self._snapshot_after(completed_at)
            order = {record_id: n for n, record_id in enumerate(after.attributes)}
            boundary = order.get(self._boundary) if self._boundary is not None else -1
            for item in missing:
                identifiers = item.record["identifiers"]
                record_id = identifiers["id"] if "id" in identifiers else \
                    after.ids_by_ext.get(identifiers["ext_id"])
                if record_id is None or record_id not in after.attributes:
                    continue
                existed = "id" in identifiers or (
                    order[record_id] <= boundary if boundary is not None
                    else record_id <= self._boundary)
                located[item.key] = (record_id, after.attributes[record_id], existed)
        return located

    def _outcome(self, item: Item, located: tuple[int, dict, bool] | None,
                 attempts: int) -> Outcome:
        identifiers = item.record["identifiers"]
        if located is None:
            if "id" in identifiers:
                return _permanent(item, "UNKNOWN_ID", f"Brevo has no {self.spec.object} record "
                                  f"with id {identifiers['id']}; the update was rejected",
                                  attempts)
            return _not_confirmed(item, f"Brevo completed the process but holds no "
                                  f"{self.spec.object} record with ext_id "
                                  f"{identifiers['ext_id']!r}", attempts)
        record_id, stored, existed = located
        sent = item.record["attributes"]
        ignored = sorted(k for k in sent if k not in stored)
        differing = sorted(k for k in sent if k in stored and stored[k] != sent[k])
        if differing or len(ignored) == len(sent):
            what = f"attribute(s) {', '.join(differing[:10])} differ" if differing else \
                "none of the sent attributes is on the record"
            return _not_confirmed(item, f"Brevo record {record_id} does not hold the values sent: "
                                  f"{what}", attempts)
        message = None
        if ignored:
            self.ignored_attributes.update(ignored)
            message = (f"Brevo ignored attribute(s) not defined on {self.spec.object!r}: "
                       f"{', '.join(ignored[:20])}")
        return Outcome(item.key, "updated" if existed else "created", crm_id=str(record_id),
                       attempts=attempts, message=message)

    def _warn_ignored(self) -> None:
        if self.ignored_attributes:
            top = ", ".join(f"{k} ({n})" for k, n in self.ignored_attributes.most_common(20))
            log.warning("sync %s: Brevo silently ignored attributes not defined on %r "
                        "(records written without them): %s", self.spec.name, self.spec.object,
                        top)

    # -- deleting (mirror) ---------------------------------------------------------------------
    async def delete(self, crm_ids: list[str]) -> list[Outcome]:
        """Delete records by Brevo id, 1000 per request; one Outcome per id (key = the id),
        `deleted` once a read-back no longer finds the record, else `failed`. Retries are safe:
        deleting an id whose record is already gone deletes nothing else (Brevo's ids are
        never reused), so a request resent after a lost answer is harmless."""
        ids = list(dict.fromkeys(str(i) for i in crm_ids))
        outcomes = [Outcome(i, "failed", crm_id=i, error_code="INVALID_ID", transient=False,
                            message=f"{i!r} is not a Brevo record id (a positive integer)")
                    for i in ids if not (i.isdigit() and int(i) > 0)]
        valid = [i for i in ids if i.isdigit() and int(i) > 0]
        size = self.max_records  # "Each request can contain up to 1000 object record ids"
        results = await asyncio.gather(*(self._delete_batch(valid[i:i + size])
                                         for i in range(0, len(valid), size)))
        return outcomes + [outcome for result in results for outcome in result]

    async def _delete_batch(self, ids: list[str]) -> list[Outcome]:
        def failed(code, message, transient, status=None, attempts=1, raw=None):
            return [Outcome(i, "failed", crm_id=i, error_code=code, message=message,
                            http_status=status, transient=transient, attempts=attempts, raw=raw)
                    for i in ids]

        content = json.dumps({"identifiers": {"ids": [int(i) for i in ids]}}).encode()
        try:
            response, payload, attempts = await self.core.call(
                "POST", f"/v3/objects/{path_segment(self.spec.object)}/batch/delete",
                content=content)
        except TransientFailure as exc:
            return failed(exc.code, str(exc), True, exc.status, exc.attempts)
        status, body = response.status_code, payload if isinstance(payload, dict) else {}
        if status == 403:
            raise FatalCrmError(f"Brevo refused to delete {self.spec.object!r} records (HTTP "
                                f"403, sync {self.spec.name!r}): "
                                f"{body.get('message', 'forbidden')}")
        self._raise_if_fatal(status, body)
        message = str(body.get("message") or response.text[:300])
        if not 200 <= status < 300:  # Brevo documents 202
            return failed(str(body.get("code") or f"HTTP_{status}"), message, False, status,
                          attempts)
        process_id = body.get("processId")
        if not isinstance(process_id, int) or isinstance(process_id, bool):
            return failed("MALFORMED_RESPONSE", "Brevo accepted the delete without a "
                          "processId", True, status, attempts, response.text[:2000])
        state = await self._wait_for(process_id)
        if state == "timeout":
            return failed("PROCESS_TIMEOUT", f"Brevo delete process {process_id} did not finish "
                          f"within {self.process_timeout:g} s; resending it is safe", True,
                          attempts=attempts)
        if state != "completed":
            return failed("PROCESS_FAILED", f"Brevo delete process {process_id} ended "
                          f"{state!r}; no deletion is confirmed", True, attempts=attempts)
        after = await self._snapshot_after(time.monotonic())
        return [Outcome(i, "failed", crm_id=i, error_code="NOT_CONFIRMED", transient=True,
                        attempts=attempts, message=f"Brevo completed delete process "
                        f"{process_id} but still holds {self.spec.object} record {i}")
                if int(i) in after.attributes else
                Outcome(i, "deleted", crm_id=i, http_status=status, attempts=attempts)
                for i in ids]

    # -- rate limit ----------------------------------------------------------------------------
    def on_response(self, response: httpx.Response) -> float | None:
        """Pause everything until the window resets once Brevo says no request is left."""
        try:
            remaining = int(response.headers["x-sib-ratelimit-remaining"])
        except (KeyError, ValueError):
            return None
        if remaining > 0:
            return None
        try:
            reset = float(response.headers.get("x-sib-ratelimit-reset", "1"))
        except ValueError:
            reset = 1.0
        # Hourly limits can announce a long reset; never stall longer than the core's backoff.
        return min(max(reset, 0.0), self.core.settings.max_backoff_seconds) or 1.0


def _ext_id_field(spec: SyncSpec) -> str | None:
    """None when the ext_id is the row's source key, else the mapped field that holds it.
    (Connectors receive the source key and the mapped fields, not the raw row.)"""
    if spec.matching_column in (None, spec.source_key):
        return None
    for name, mapping in spec.fields.items():
        if mapping.column == spec.matching_column:
            return name
    raise ValueError(f"sync {spec.name!r}: Brevo's ext_id comes from matching_column "
                     f"{spec.matching_column!r}, which must be the source key or a mapped column")


def _permanent(item: Item, code: str, message: str, attempts: int = 1,
               column: str | None = None) -> Outcome:
    return Outcome(item.key, "failed", error_code=code, message=message, transient=False,
                   attempts=attempts, column=column)


def _not_confirmed(item: Item, message: str, attempts: int) -> Outcome:
    return Outcome(item.key, "failed", error_code="NOT_CONFIRMED", message=message,
                   transient=True, attempts=attempts)


class BrevoResource(CrmResource):
    """Brevo connection: base URL (`BREVO_BASE_URL`, without `/v3`; https://api.brevo.com in
    production) and API key (`BREVO_API_KEY`, sent as the `api-key` header).

    Brevo's rate limits depend on the plan (General, Advanced for Professional/Enterprise,
    Extended for Enterprise; per second and per hour, per endpoint group) and /v3/objects is not
    listed separately, so the client-side default is a conservative 10 requests per second;
    set `requests_per_window`/`window_seconds` to your plan. Polls and read-backs count too.
    """

    batch_size: int | None = Field(default=BREVO_MAX_RECORDS, ge=1, le=BREVO_MAX_RECORDS,
                                   description="records per batch upsert request")
    poll_interval_seconds: float = Field(default=0.2, gt=0,
                                         description="first wait before polling a process")
    max_poll_interval_seconds: float = Field(default=10.0, gt=0,
                                             description="longest wait between two polls")
    process_timeout_seconds: float = Field(default=300.0, gt=0,
                                           description="give up on a process after this long")
    connector_class: ClassVar[type[Connector]] = BrevoConnector
    token_variable: ClassVar[str] = "BREVO_API_KEY"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.token}

    def connector_options(self) -> dict:
        return {"poll_interval_seconds": self.poll_interval_seconds,
                "max_poll_interval_seconds": self.max_poll_interval_seconds,
                "process_timeout_seconds": self.process_timeout_seconds}


RESOURCE = BrevoResource


def _parse_records(records: list) -> list[tuple[int, str | None, dict]]:
    """(Brevo id, ext_id, attributes) of each record of a page. A record of another shape
    confirms nothing (its rows stay unconfirmed)."""
    found = []
    for record in records:
        identifiers = record.get("identifiers") if isinstance(record, dict) else None
        if not isinstance(identifiers, dict) or not isinstance(identifiers.get("id"), int):
            continue
        stored = record.get("attributes")
        ext_id = identifiers.get("ext_id")
        found.append((identifiers["id"], None if ext_id is None else str(ext_id),
                      stored if isinstance(stored, dict) else {}))
    return found


def _matching_column(spec: SyncSpec) -> str | None:
    """`ext_id` is compared exactly (Brevo documents no case folding); `matching_key: id` rows
    carry no matching value (the id comes from the state)."""
    if spec.matching_key != "ext_id":
        return None
    if spec.matching_column in (None, spec.source_key):
        return "_key"  # the ext_id is the source key
    return next((n for n, m in spec.fields.items() if m.column == spec.matching_column), None)


PROFILE = CrmProfile(
    name="brevo", label="Brevo", resource=BrevoResource, kind="brevo",
    # Object types: "Only lowercase alphanumeric characters and underscores are allowed (max 32
    # characters)"; attribute keys: letters, digits, `_`.
    object_pattern=r"[a-z0-9_]{1,32}", field_pattern=r"[A-Za-z0-9_]+",
    name_rule="a Brevo name: lowercase letters, digits and _, at most 32 (attribute keys: "
              "letters, digits and _)",
    matching_keys=frozenset({"ext_id", "id"}),  # records[].identifiers
    matching_column=_matching_column,
    measures_attributes=True,  # at most BREVO_MAX_ATTRIBUTES and BREVO_MAX_BODY_BYTES a record
    record_rules=(
        # -1 marks an attributes column that is not a JSON object.
        RecordRule("attributes_json", "_attribute_count", "at_least", 0, "PARSE_INVALID_FORMAT",
                   "{column} must hold a JSON object of attribute name -> value"),
        RecordRule("max_attributes", "_attribute_count", "at_most", BREVO_MAX_ATTRIBUTES,
                   "TOO_MANY_ATTRIBUTES", f"the record has {{value}} attributes; Brevo accepts "
                   f"at most {BREVO_MAX_ATTRIBUTES}"),
        RecordRule("max_record_bytes", "_record_bytes", "at_most", BREVO_MAX_BODY_BYTES,
                   "RECORD_TOO_LARGE", f"the record takes at least {{value}} bytes; a Brevo "
                   f"request may carry {BREVO_MAX_BODY_BYTES} bytes"),
    ),
    # Brevo lists no separate limit for /v3/objects: it falls under "all other endpoints",
    # 100 requests per hour (200 on Enterprise, the plan custom objects need; REFERENCE.md §2).
    allowance=(1000 * 200 / 3600, "1000 records per call x 200 requests/hour (Enterprise)"),
)
