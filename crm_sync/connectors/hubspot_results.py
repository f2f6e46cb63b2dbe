"""Reading HubSpot's answer to a batch upsert, for crm_sync/connectors/hubspot.py: a 200/207
Multi-Status holds `results` (the records written) and `errors` (the inputs refused, with
their per-property details); each is matched to its input by `objectWriteTraceId` (HubSpot
does not answer in input order), else by the unique property's value. Exactly one outcome per
input: an input with no result, or with two, fails transient (MALFORMED_RESPONSE).

`BatchAnswer` holds that half of the connector (HubSpotConnector inherits it).
"""

from __future__ import annotations

import json
from collections import defaultdict

import httpx

from crm_sync.connectors.model import Item, Outcome, failed_all

# Per-input error categories that may pass on their own; the rest are the record's fault.
_TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "LOCKED", "INTERNAL_ERROR", "TIMEOUT"})
_VALIDATION_PREFIX = "Property values were not valid: "


class BatchAnswer:
    """The answer-reading half of HubSpotConnector."""

    # -- reading the answer ----------------------------------------------------------------------
    def _outcomes(self, batch: list[Item], payload, response: httpx.Response,
                  attempts: int) -> list[Outcome]:
        status = response.status_code
        if not isinstance(payload, dict) or not isinstance(payload.get("results"), list) or \
                not isinstance(payload.get("errors", []), list):
            return failed_all(batch, "MALFORMED_RESPONSE", "HubSpot's answer has no results "
                              "list", status=status, transient=True, attempts=attempts,
                              raw=response.text[:2000])
        keys = {item.key for item in batch}
        by_identity = ByIdentity(self, batch)
        found: dict[str, list[Outcome]] = defaultdict(list)
        for result in payload["results"]:
            key = self._result_key(result, by_identity)
            found[key].append(self._success(key, result, status, attempts))
        for err in payload.get("errors", []):
            for key in self._error_keys(err, by_identity):
                found[key].append(self._failure(key, err, None, status, attempts))
        if set(found) - keys - {None}:
            # Results for records this batch did not send: the answer is not this batch's.
            return failed_all(batch, "MALFORMED_RESPONSE", "HubSpot's answer names records "
                              "this batch did not send", status=status, transient=True,
                              attempts=attempts, raw=response.text[:2000])
        return [found[item.key][0] if len(found[item.key]) == 1 else
                self._unaccounted(item, len(found[item.key]), response, attempts)
                for item in batch]

    def _result_key(self, result, by_identity: ByIdentity) -> str | None:
        if not isinstance(result, dict):
            return None
        trace = result.get("objectWriteTraceId")
        if isinstance(trace, str):
            return trace
        # No trace id echoed: fall back to the unique property's value (lowercased emails).
        props = result.get("properties") if isinstance(result.get("properties"), dict) else {}
        value = props.get(self.spec.matching_key)
        if not isinstance(value, str):
            return None
        prop = self.spec.matching_key
        return by_identity.get((prop, normalize(prop, value)))

    def _error_keys(self, err, by_identity: ByIdentity) -> list[str | None]:
        context = err.get("context") if isinstance(err, dict) else None
        context = context if isinstance(context, dict) else {}
        traces = context.get("objectWriteTraceId")
        if isinstance(traces, list) and traces:
            return [t for t in traces if isinstance(t, str)] or [None]
        ids = context.get("ids") or context.get("id")
        if isinstance(ids, list) and ids:
            prop = self.spec.matching_key
            return [by_identity.get((prop, normalize(prop, str(i)))) for i in ids]
        return [None]

    def _success(self, key: str | None, result, status: int, attempts: int) -> Outcome:
        record_id = result.get("id") if isinstance(result, dict) else None
        new = result.get("new") if isinstance(result, dict) else None
        if isinstance(record_id, int):
            record_id = str(record_id)
        if not (isinstance(record_id, str) and record_id) or not isinstance(new, bool):
            return Outcome(key or "", "failed", error_code="MALFORMED_RESPONSE",
                           message=f"a result without an id or `new` flag: {str(result)[:200]}",
                           http_status=status, transient=True, attempts=attempts,
                           raw=str(result)[:2000])
        return Outcome(key or "", "created" if new else "updated", crm_id=record_id,
                       http_status=status, attempts=attempts)

    def _failure(self, key: str, err: dict, message: str | None, status: int,
                 attempts: int) -> Outcome:
        details = _details(err)
        prop = _error_property(err, details)
        category = err.get("category") if isinstance(err.get("category"), str) else None
        text = "; ".join(d["message"] for d in details if d.get("message")) or message or \
            str(err.get("message") or "HubSpot refused this record")
        return Outcome(key, "failed", error_code=_error_code(err, details, category),
                       message=text[:1000], http_status=status,
                       transient=category in _TRANSIENT_CATEGORIES, attempts=attempts,
                       column=self._source_column(prop) if prop else None)

    def _unaccounted(self, item: Item, count: int, response: httpx.Response,
                     attempts: int) -> Outcome:
        what = "no result" if count == 0 else f"{count} results"
        return Outcome(item.key, "failed", error_code="MALFORMED_RESPONSE",
                       message=f"HubSpot's answer holds {what} for this record",
                       http_status=response.status_code, transient=True, attempts=attempts,
                       raw=response.text[:2000])

    def _source_column(self, prop: str) -> str:
        mapping = self.spec.fields.get(prop)
        return mapping.column if mapping else prop


class ByIdentity:
    """identity -> source key of a batch's inputs, built only when an answer lacks the trace
    ids (HubSpot echoes them for every input crm_sync sends, so it rarely is)."""

    def __init__(self, connector, batch: list[Item]):
        self._connector, self._batch, self._map = connector, batch, None

    def get(self, identity: tuple[str, str]) -> str | None:
        if self._map is None:
            self._map = {self._connector.identity(i): i.key for i in self._batch}
        return self._map.get(identity)


def normalize(prop: str, value: str) -> str:
    # HubSpot stores email addresses lowercased, so they match whatever their case.
    return value.lower() if prop == "email" else value


def _details(err: dict) -> list[dict]:
    """The per-property details of an error: its `errors[]`, else the validation results
    HubSpot packs into the message (`Property values were not valid: [...]`)."""
    listed = err.get("errors")
    if isinstance(listed, list) and listed:
        return [d for d in listed if isinstance(d, dict)]
    message = err.get("message")
    if isinstance(message, str) and message.startswith(_VALIDATION_PREFIX):
        try:
            parsed = json.loads(message[len(_VALIDATION_PREFIX):])
        except ValueError:
            return []
        return [{"message": r.get("message"), "code": r.get("error"), "in": r.get("name")}
                for r in parsed if isinstance(r, dict)] if isinstance(parsed, list) else []
    return []


def named_values(err: dict) -> list[tuple[str, str]]:
    """(property, value) pairs a validation error names: HubSpot's validation results carry
    `name` and `propertyValue` (the captured 400 in Atlas-Authority/marketing-automation#206:
    `Property values were not valid: [{"isValid":false,...,"name":"amount",...,
    "propertyValue":"1.42e-14",...}]`). [] when the error names no value."""
    message = err.get("message") if isinstance(err, dict) else None
    if not isinstance(message, str) or not message.startswith(_VALIDATION_PREFIX):
        return []
    try:
        parsed = json.loads(message[len(_VALIDATION_PREFIX):])
    except ValueError:
        return []
    return [(r["name"], r["propertyValue"]) for r in parsed if isinstance(parsed, list)
            and isinstance(r, dict) and isinstance(r.get("name"), str)
            and isinstance(r.get("propertyValue"), str)] if isinstance(parsed, list) else []


def _error_code(err: dict, details: list[dict], category: str | None) -> str:
    for detail in details:
        if isinstance(detail.get("code"), str) and detail["code"]:
            return detail["code"]
    return category or "FAILED"


def _error_property(err: dict, details: list[dict]) -> str | None:
    for detail in details:
        context = detail.get("context")
        names = context.get("propertyName") if isinstance(context, dict) else None
        if isinstance(names, list) and names and isinstance(names[0], str):
            return names[0]
        if isinstance(detail.get("in"), str) and detail["in"]:
            return detail["in"]
    return None
