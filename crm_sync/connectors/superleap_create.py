"""Superleap's `POST /api/v1/org/objects/{slug}/record/bulk_create`: the creates of a
`create_only` sync (superleap.py's connector calls `bulk_create`).

The body is a bare JSON array of records. A 200 says `"records added successfully"` and gives
no ids. One bad record fails the whole request: 400 VALIDATION_FAILED, and the answer's
`validation_errors[].record_index` names the record (../shared/crm-docs/superleap-bulk-create.txt,
REFERENCE.md §1). Exactly-once is the connector's: the write-ahead log of creates
(crm_sync/state/writeahead.py), written before the first request, and the lookup by
`external_id` of a create whose outcome is unknown (SuperleapConnector.upsert / _reconcile).
"""

from __future__ import annotations

import logging
from typing import Protocol

from crm_sync.connectors.core import HttpCore
from crm_sync.connectors.model import Item, Outcome, failed_all
from crm_sync.errors import TransientFailure
from crm_sync.spec import SyncSpec
from crm_sync.state.writeahead import token

log = logging.getLogger(__name__)

MATCH_FIELD = "external_id"  # what a record whose create went unanswered is looked up by


class SuperleapConnector(Protocol):
    """What bulk_create needs of superleap.py's connector (not imported: it imports this)."""

    spec: SyncSpec
    core: HttpCore
    create_path: str

    def refuse_fatal(self, status: int, error: dict) -> None: ...

    async def find_ids(self, values: list[str]) -> dict[str, str]: ...


async def bulk_create(connector: SuperleapConnector, batch: list[Item]) -> list[Outcome]:
    """Create the batch; one Outcome per item. The records a 400 VALIDATION_FAILED names are
    rejected with the answer's message, and the rest is sent again without them. Bounded: a
    pass that does not end the loop removes at least one record. The answer's "Failed to
    create records" is read as nothing written (the docs show no partial 400). A request whose
    outcome is unknown (no answer, a 5xx) fails transient: its write-ahead entries stay open,
    and the next run looks the records up by external_id instead of creating them again."""
    outcomes, pending = [], list(batch)
    while pending:
        try:
            response, payload, attempts = await connector.core.call(
                "POST", connector.create_path, content=b"[" + b",".join(i.body for i in pending)
                + b"]", retry_transport_errors=False)
        except TransientFailure as exc:  # keeps the outcomes of records rejected earlier
            return outcomes + failed_all(pending, exc.code, str(exc), status=exc.status,
                                         transient=True, attempts=exc.attempts, raw=exc.raw)
        status = response.status_code
        data = payload.get("data") if isinstance(payload, dict) else None
        data = data if isinstance(data, dict) else {}
        connector.refuse_fatal(status, data)
        if 200 <= status < 300:
            if payload.get("success") is not True:
                return outcomes + failed_all(
                    pending, "MALFORMED_RESPONSE", "Superleap's bulk_create answer does not "
                    "say the records were added", status=status, transient=True,
                    attempts=attempts, raw=response.text[:2000])
            return outcomes + await _created(connector, pending, attempts)
        rejected = _rejected(data, len(pending)) \
            if status == 400 and data.get("error_code") == "VALIDATION_FAILED" else {}
        if not rejected:  # the request as a whole: a 5xx answered creates (outcome unknown)
            return outcomes + failed_all(
                pending, data.get("error_code") or f"HTTP_{status}",
                data.get("message") or response.text[:300], status=status,
                transient=status >= 500, attempts=attempts)
        for index, (code, message, column) in rejected.items():
            outcomes.append(Outcome(pending[index].key, "failed", error_code=code,
                                    message=message, http_status=status, transient=False,
                                    attempts=attempts, column=column))
        pending = [item for n, item in enumerate(pending) if n not in rejected]
    return outcomes


async def _created(connector: SuperleapConnector, batch: list[Item],
                   attempts: int) -> list[Outcome]:
    """bulk_create answers no ids: the records just created are looked up by external_id so
    that the state keeps their ids. A lookup that fails leaves the id unknown (the row is
    still created: a create_only rerun skips it, since its state exists)."""
    values = {i.key: token(i.record[MATCH_FIELD]) for i in batch
              if i.record.get(MATCH_FIELD) is not None}
    found: dict[str, str] = {}
    if values:
        try:
            found = await connector.find_ids(sorted(set(values.values())))
        except TransientFailure as exc:
            log.warning("sync %s: created %d records; looking their ids up failed: %s",
                        connector.spec.name, len(batch), exc)
    return [Outcome(i.key, "created", crm_id=found.get(values.get(i.key)), attempts=attempts)
            for i in batch]


def _rejected(data: dict, size: int) -> dict[int, tuple[str, str, str | None]]:
    """0-based position in the request -> (error code, message, field) of each record a 400
    VALIDATION_FAILED names. `record_index` is read as 1-BASED: in superleap-bulk-create.txt's
    failure example the bad email ("test .sok@gmail.com") is the FIRST record of the array and
    the answer says `record_index: 1` (REFERENCE.md §1 notes the PUT example's 1 as well). An
    index outside 1..size names nothing (if none is left, the whole request fails and nothing
    is resent)."""
    found: dict[int, tuple[str, str, str | None]] = {}
    errors = data.get("validation_errors")
    for err in errors if isinstance(errors, list) else []:
        index = err.get("record_index") if isinstance(err, dict) else None
        if isinstance(index, bool) or not isinstance(index, int) or not 1 <= index <= size:
            continue
        message = str(err.get("message") or "validation failed")
        code, column = err.get("error_code"), err.get("field")
        if index - 1 in found:  # several errors for one record: all of them in its reason
            code, earlier, column = found[index - 1]
            message = f"{earlier}; {message}"
        found[index - 1] = (str(code or "VALIDATION_FAILED"), message,
                            column if isinstance(column, str) else None)
    return found
