"""Superleap: `POST /api/v1/org/objects/{slug}/record/bulk_upsert` with `{"values": [...]}`.

A record with `id` updates that record; one without creates a record. Superleap matches on its
own ids only, so crm_sync keeps each source row's Superleap id in its state store and sends it
on the next run: that is what makes a rerun update instead of creating a duplicate.
The answer's `records` list accounts for every input in input order (`CREATED`, `UPDATED`,
`FAILED` with `error_message`); `failed_records` carries the failures.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from crm_sync.connectors.base import Connector, CrmResource
from crm_sync.connectors.core import FatalCrmError, Item, Outcome, failed_all


class SuperleapConnector(Connector):
    crm = "superleap"
    max_records = 1000  # undocumented; the sandbox enforces 1000, batch_size sets the real one
    prefix = b'{"values":['
    suffix = b"]}"

    def build_record(self, key: str, fields: dict, crm_id: str | None) -> dict:
        record = dict(fields)
        if crm_id:
            record["id"] = crm_id
        return record

    @property
    def path(self) -> str:
        return f"/api/v1/org/objects/{self.spec.object}/record/bulk_upsert"

    async def send_batch(self, batch: list[Item]) -> list[Outcome]:
        # A create has no idempotency key: resending it after a dropped connection could create
        # the record twice, so batches with creates are not resent on transport errors.
        creates = any("id" not in item.record for item in batch)
        response, payload, attempts = await self.core.call(
            "POST", self.path, content=self.body(batch), retry_transport_errors=not creates)
        status = response.status_code
        error = (payload or {}).get("data") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        if status in (401, 403):
            raise FatalCrmError(f"Superleap refused the token (HTTP {status}): check "
                                f"SUPERLEAP_TOKEN for sync {self.spec.name!r}")
        if status == 404:
            raise FatalCrmError(f"Superleap has no object {self.spec.object!r} (sync "
                                f"{self.spec.name!r}): {error.get('message', 'not found')}")
        if not 200 <= status < 300:
            return failed_all(batch, error.get("error_code") or f"HTTP_{status}",
                              error.get("message") or response.text[:300], status=status,
                              transient=False, attempts=attempts)
        records = error.get("records") if isinstance(error, dict) else None
        if not isinstance(records, list) or len(records) != len(batch):
            return failed_all(batch, "MALFORMED_RESPONSE",
                              "Superleap's answer does not list one result per record",
                              status=status, transient=True, attempts=attempts,
                              raw=response.text[:2000])
        return [self._outcome(item, rec, status, attempts) for item, rec in zip(batch, records)]

    def _outcome(self, item: Item, rec, status: int, attempts: int) -> Outcome:
        action = rec.get("action") if isinstance(rec, dict) else None
        sent_ext = item.record.get("external_id")
        if isinstance(rec, dict) and sent_ext is not None and "external_id" in rec \
                and rec["external_id"] != sent_ext:
            action = "MISMATCH"  # results out of order: trust none of it
        if action == "CREATED" and rec.get("id"):
            return Outcome(item.key, "created", crm_id=rec["id"], attempts=attempts)
        if action == "UPDATED":
            return Outcome(item.key, "updated", crm_id=rec.get("id") or item.record.get("id"),
                           attempts=attempts)
        if action == "FAILED":
            message = str(rec.get("error_message") or "failed")
            return Outcome(item.key, "failed", error_code=_code(message), message=message,
                           http_status=status, transient=False, attempts=attempts,
                           column=_column(message))
        return Outcome(item.key, "failed", error_code="MALFORMED_RESPONSE",
                       message=f"unexpected result for this record: {str(rec)[:200]}",
                       http_status=status, transient=True, attempts=attempts, raw=str(rec)[:2000])


def _code(message: str) -> str:
    lowered = message.lower()
    if lowered.startswith("invalid id detected"):
        return "INVALID_ID"
    if "required" in lowered:
        return "REQUIRED_FIELD_MISSING"
    if lowered.startswith("invalid"):
        return "PARSE_INVALID_FORMAT"
    return "FAILED"


def _column(message: str) -> str | None:
    lowered = message.lower()
    for column in ("email", "phone", "name", "id"):
        if column in lowered:
            return column
    return None


class SuperleapResource(CrmResource):
    """Superleap connection: base URL and bearer token (`SUPERLEAP_TOKEN`)."""

    batch_size: int | None = Field(default=100, ge=1, le=1000,
                                   description="records per bulk_upsert request")
    connector_class: ClassVar[type[Connector]] = SuperleapConnector


RESOURCE = SuperleapResource
