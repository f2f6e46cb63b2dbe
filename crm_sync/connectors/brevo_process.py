"""Brevo's asynchronous processes, for crm_sync/connectors/brevo.py: a batch upsert or delete
answers 202 with a `processId`; the process is polled until it is done, and then, as Brevo
reports nothing per record, the records are read back to confirm each one (how the reading is
bounded by the batch: the docstring of crm_sync/connectors/brevo.py).

`ProcessReadBack` holds that half of the connector (BrevoConnector inherits it): polling,
reading pages back, locating a batch's records, the outcome of each, and the deletions of a
mirror sync, which are confirmed the same way.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.connectors.wire import path_segment
from crm_sync.errors import FatalCrmError, TransientFailure

PAGE_SIZE = 1000  # getrecords accepts `limit` up to 1000
UNREAD = object()  # the boundary (newest record before the run) is not known yet
POLL_BACKOFF = 1.5
DONE = ("completed", "failed", "cancelled")


@dataclass
class Snapshot:
    """The object's records as one read saw them: Brevo id -> attributes, ext_id -> id."""

    started: float  # monotonic time the read began: it shows every write finished before
    attributes: dict[int, dict]
    ids_by_ext: dict[str, int]


class ProcessReadBack:
    """The process-polling and read-back half of BrevoConnector (its state is set up by
    BrevoConnector.__init__)."""

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
            if self._boundary is UNREAD:
                records = await self._page(1, "desc", limit=1)
                self._boundary = records[0][0] if records else None
                # Records created from now on come after the `_count` there are, in creation
                # order: on this page (ascending) and after it. (Count unknown: from page 1.)
                self._frontier = self._count // PAGE_SIZE + 1

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
        """Records this run created with these ext_ids. (Within a run no two batches share an
        ext_id, so a record above the boundary is the one this run's batch wrote.) Those not
        seen yet are read with every record created since the last read (`_read_new`): one
        read serves every batch that completed before it, whichever batch started it."""
        async with self._scan_lock:
            seen = self._created_seen
            found = {ext_id: seen.pop(ext_id) for ext_id in wanted & seen.keys()}
            if len(found) < len(wanted):
                await self._read_new()
                found.update({ext_id: seen.pop(ext_id)
                              for ext_id in (wanted - found.keys()) & seen.keys()})
            return found

    async def _read_new(self) -> None:
        """The records created since the last read, in creation order (ascending pages, which
        records created meanwhile do not shift): the first page not yet read in full, whose
        answer gives the object's count, then every page after it at once (up to the core's
        concurrency in flight), instead of one page at a time. A full page is never read again;
        the last, partly filled one is read again by the next read (records are appended to
        it). Records at or below the newest one handled (by id: Brevo ids grow with creation),
        or from before the run, are not noted again."""
        first, count = await self._fetch_page(self._frontier, "asc")
        pages = [first]
        if count is None:  # no count: page on until a short page
            while len(pages[-1]) == PAGE_SIZE:
                pages.append((await self._fetch_page(self._frontier + len(pages), "asc"))[0])
        else:
            self._count = count
            last = -(-count // PAGE_SIZE)
            answers = await asyncio.gather(*(self._fetch_page(page, "asc") for page in
                                             range(self._frontier + 1, last + 1)),
                                           return_exceptions=True)
            for answer in answers:
                if isinstance(answer, BaseException):
                    raise answer
            pages += [records for records, _ in answers]
        floor = max(self._newest_seen, self._boundary or 0)
        for records in pages:
            for record_id, ext_id, attributes in _parse_records(records):
                if record_id > floor and ext_id is not None:
                    self._created_seen[ext_id] = (record_id, attributes)
                    self._newest_seen = max(self._newest_seen, record_id)
        full = next((n for n, records in enumerate(pages) if len(records) < PAGE_SIZE),
                    len(pages))
        self._frontier += full

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
                return permanent(item, "UNKNOWN_ID", f"Brevo has no {self.spec.object} record "
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


def permanent(item: Item, code: str, message: str, attempts: int = 1,
               column: str | None = None) -> Outcome:
    return Outcome(item.key, "failed", error_code=code, message=message, transient=False,
                   attempts=attempts, column=column)


def _not_confirmed(item: Item, message: str, attempts: int) -> Outcome:
    return Outcome(item.key, "failed", error_code="NOT_CONFIRMED", message=message,
                   transient=True, attempts=attempts)


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
