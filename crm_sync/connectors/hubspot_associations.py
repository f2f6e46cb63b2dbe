"""HubSpot relationships (spec `associations:`): the associations API v4, called after the
upsert for the records it wrote. `HubSpotConnector` inherits `AssociationLinks`.

    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/archive
         {"inputs": [{"from": {"id"}, "to": [{"id"}, ...]}]}   targets no longer linked
    POST /crm/v4/associations/{fromObjectType}/{toObjectType}/batch/create
         {"inputs": [{"from": {"id"}, "to": {"id"},
                      "types": [{"associationCategory", "associationTypeId"}]}]}

(Request models of the official SDK, hubspot-api-client 12, `hubspot/crm/associations/v4/`;
HubSpot's reference, developers.hubspot.com/docs/api-reference/crm-associations-v4/.) Create
answers 201, or 207 Multi-Status with the refused inputs in `errors`; archive answers 204. Both
are idempotent (creating a link that exists, or removing one that does not, changes nothing),
so the core may resend them after a dropped connection, and a record whose links failed is
simply sent again by the next run: its upsert is idempotent too.

For each record whose upsert succeeded: its `links.unlink` targets are archived first, then
its `links.link` targets created, from the record's HubSpot id to the target's (`TargetRef.
crm_id`), with the association's `type_id` and `category` from the spec, else HubSpot's default
type for the object pair (`DEFAULT_TYPES`). A record any of whose links fail gets a failed
outcome instead of its created/updated one: ASSOCIATION_FAILED (transient when the cause may
pass: a 429/5xx that outlasted the retries, 423, 477, a transient per-input category), or
ASSOCIATION_TARGET_MISSING for a target without a HubSpot id. Each request counts in
`Stats.association_requests`.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence

from crm_sync.connectors.model import Item, Outcome, TargetRef
from crm_sync.connectors.wire import path_segment
from crm_sync.errors import AllowanceReserveReached, FatalCrmError, TransientFailure

HUBSPOT_DEFINED = "HUBSPOT_DEFINED"
# Inputs per association request. HubSpot's batch endpoints take 100 inputs; no other figure
# was found for these two (the sandbox enforces the same, docs/sandbox/hubspot.md).
ASSOCIATION_MAX_INPUTS = 100
# HubSpot's default (unlabeled) association type per object pair: the `AssociationTypes` enum
# of HubSpot's Node client (HubSpot/hubspot-api-nodejs, src/enums/AssociationTypes.ts:
# contactToCompany 279, companyToContact 280, dealToContact 3, contactToDeal 4,
# dealToCompany 341, companyToDeal 342), category HUBSPOT_DEFINED.
DEFAULT_TYPES: dict[tuple[str, str], int] = {
    ("contacts", "companies"): 279, ("companies", "contacts"): 280,
    ("deals", "contacts"): 3, ("contacts", "deals"): 4,
    ("deals", "companies"): 341, ("companies", "deals"): 342,
}
_STANDARD = {"contact": "contacts", "0-1": "contacts", "company": "companies",
             "0-2": "companies", "deal": "deals", "0-3": "deals"}
_TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "LOCKED", "INTERNAL_ERROR", "TIMEOUT"})


def default_association_type(from_object: str, to_object: str) -> int | None:
    """HubSpot's default association type id from one object to another (names, singular
    names or objectTypeIds of contacts, companies, deals); None for other pairs (custom
    objects: their types are the account's own, so the spec must name `type_id`)."""
    pair = tuple(_STANDARD.get(o.lower(), o.lower()) for o in (from_object, to_object))
    return DEFAULT_TYPES.get(pair)


class _Failure:
    """Why one record's links failed (the first failure is kept)."""

    __slots__ = ("code", "message", "transient", "status", "attempts")

    def __init__(self, code, message, transient, status=None, attempts=1):
        self.code, self.message, self.transient = code, message, transient
        self.status, self.attempts = status, attempts


class AssociationLinks:
    """`link_records` of HubSpotConnector (module docstring)."""

    async def link_records(self, items: Sequence[Item],
                           outcomes: list[Outcome]) -> list[Outcome]:
        position = {o.key: n for n, o in enumerate(outcomes)}
        work = [(item, outcomes[position[item.key]]) for item in items
                if item.links and item.key in position and outcomes[position[item.key]].ok
                and outcomes[position[item.key]].crm_id]
        if not work:
            return outcomes
        failed: dict[str, _Failure] = {}
        archives: dict[str, list[tuple[str, str, list[str]]]] = defaultdict(list)
        creates: dict[tuple[str, str, int], list[tuple[str, str, str]]] = defaultdict(list)
        for item, outcome in work:
            by_object: dict[str, list[str]] = defaultdict(list)
            for target in item.links.unlink:
                if target.crm_id and target.crm_id not in by_object[target.object]:
                    by_object[target.object].append(target.crm_id)  # no id: nothing to undo
            for to_object, ids in by_object.items():
                archives[to_object].append((item.key, outcome.crm_id, ids))
            for target in item.links.link:
                if not target.crm_id:
                    failed.setdefault(item.key, _Failure(
                        "ASSOCIATION_TARGET_MISSING",
                        f"the {target.object} record this record links to ({target.association}"
                        f"{': ' + target.key_value if target.key_value else ''}) has no HubSpot "
                        f"id", False))
                    continue
                kind = self._association_type(target)
                if isinstance(kind, str):
                    failed.setdefault(item.key, _Failure("ASSOCIATION_FAILED", kind, False))
                    continue
                creates[(target.object, *kind)].append((item.key, outcome.crm_id,
                                                        target.crm_id))
        # Unlink first: a changed source value removes the old target, then links the new one.
        await self._in_chunks(self._archive_links, archives, failed)
        await self._in_chunks(self._create_links, creates, failed)
        for key, why in failed.items():
            n = position[key]
            old = outcomes[n]
            outcomes[n] = Outcome(key, "failed", crm_id=old.crm_id, error_code=why.code,
                                  message=why.message, http_status=why.status,
                                  transient=why.transient, attempts=why.attempts)
        return outcomes

    # -- the association type ----------------------------------------------------------------
    def _association_type(self, target: TargetRef) -> tuple[str, int] | str:
        """(category, type id) of links to `target`, or why there is none."""
        link = self.spec.associations.get(target.association)  # spec_links.Association
        type_id = link.type_id if link else None
        category = (link.category if link else None) or HUBSPOT_DEFINED
        if type_id is None:
            type_id = default_association_type(self.spec.object, target.object)
        if type_id is None:
            return (f"HubSpot has no default association type from {self.spec.object} to "
                    f"{target.object}: set `type_id` (and `category`) of association "
                    f"{target.association!r} in sync {self.spec.name!r}")
        return str(category), int(type_id)

    # -- requests ----------------------------------------------------------------------------
    async def _in_chunks(self, send, groups: dict, failed: dict[str, _Failure]) -> None:
        calls = []
        for group, entries in groups.items():
            entries = [e for e in entries if e[0] not in failed]
            for start in range(0, len(entries), ASSOCIATION_MAX_INPUTS):
                calls.append(send(group, entries[start:start + ASSOCIATION_MAX_INPUTS]))
        for result in await asyncio.gather(*calls):
            for key, why in result.items():
                failed.setdefault(key, why)

    def _links_path(self, to_object: str, action: str) -> str:
        return (f"/crm/v4/associations/{path_segment(self.spec.object)}/"
                f"{path_segment(to_object)}/batch/{action}")

    async def _archive_links(self, to_object: str, entries) -> dict[str, _Failure]:
        body = {"inputs": [{"from": {"id": from_id}, "to": [{"id": i} for i in to_ids]}
                           for _, from_id, to_ids in entries]}
        answer = await self._association_call(self._links_path(to_object, "archive"), body,
                                              [e[0] for e in entries], f"unlink from {to_object}")
        if isinstance(answer, dict):
            return answer
        return {}  # any 2xx (documented: 204 No Content)

    async def _create_links(self, group: tuple[str, str, int], entries) -> dict[str, _Failure]:
        to_object, category, type_id = group
        body = {"inputs": [{"from": {"id": from_id}, "to": {"id": to_id},
                            "types": [{"associationCategory": category,
                                       "associationTypeId": type_id}]}
                           for _, from_id, to_id in entries]}
        what = f"link to {to_object}"
        answer = await self._association_call(self._links_path(to_object, "create"), body,
                                              [e[0] for e in entries], what)
        if isinstance(answer, dict):
            return answer
        response, payload, attempts = answer
        if response.status_code != 207:
            return {}  # 200/201: every input linked
        return _multi_status(entries, payload, attempts, what, response.text)

    async def _association_call(self, path: str, body: dict, keys: list[str], what: str):
        """(response, payload, attempts) of a 2xx, or {key: failure} for every record."""
        def every(code, message, transient, status=None, attempts=1):
            return {k: _Failure(code, message, transient, status, attempts) for k in keys}

        if getattr(self, "_daily_spent", False):
            return every("ALLOWANCE_RESERVE_REACHED", "HubSpot's daily API allowance is spent; "
                         "the records and their links go out on the next run", True)
        self.core.stats.association_requests += 1
        try:
            response, payload, attempts = await self.core.call(
                "POST", path, content=json.dumps(body, separators=(",", ":")).encode())
        except TransientFailure as exc:
            return every("ASSOCIATION_FAILED", f"HubSpot did not {what}: {exc}", True,
                         exc.status, exc.attempts)
        except AllowanceReserveReached as exc:
            return every("ALLOWANCE_RESERVE_REACHED", str(exc), True)
        status = response.status_code
        if 200 <= status < 300:
            return response, payload, attempts
        detail = payload if isinstance(payload, dict) else {}
        message = str(detail.get("message") or response.text[:300])
        if status in (401, 403):
            raise FatalCrmError(f"HubSpot refused to {what} (HTTP {status} on POST {path}: "
                                f"{message}): check HUBSPOT_TOKEN and its scopes (the "
                                f"associations API needs write access to both objects) for "
                                f"sync {self.spec.name!r}")
        if status == 404 or message.startswith("Unable to infer object type from"):
            raise FatalCrmError(f"HubSpot cannot {what} (HTTP {status} on POST {path}, sync "
                                f"{self.spec.name!r}): {message}")
        transient = status in (423, 477)
        return every("ASSOCIATION_FAILED", f"HubSpot did not {what} (HTTP {status}): {message}",
                     transient, status, attempts)


def _multi_status(entries, payload, attempts: int, what: str, raw: str) -> dict[str, _Failure]:
    """A 207: the inputs not in `results` failed, each with the error that names its ids
    (else the first error)."""
    body = payload if isinstance(payload, dict) else {}
    results = body.get("results") if isinstance(body.get("results"), list) else []
    errors = [e for e in body.get("errors") or () if isinstance(e, dict)]
    done = {(str(r.get("fromObjectId")), str(r.get("toObjectId")))
            for r in results if isinstance(r, dict)}
    failures = {}
    for key, from_id, to_id in entries:
        if (from_id, to_id) in done:
            continue
        err = next((e for e in errors if {from_id, to_id} & _named_ids(e)), None) or \
            (errors[0] if errors else None)
        if err is None:
            failures[key] = _Failure("ASSOCIATION_FAILED", f"HubSpot's 207 answer to {what} "
                                     f"holds neither a result nor an error for this record: "
                                     f"{raw[:300]}", True, 207, attempts)
            continue
        message = str(err.get("message") or "refused")
        named = (err.get("context") or {}).get("INVALID_OBJECT_IDS") \
            if isinstance(err.get("context"), dict) else None
        if isinstance(named, list) and named:
            message += f" ({', '.join(map(str, named))})"
        failures[key] = _Failure("ASSOCIATION_FAILED", f"HubSpot did not {what}: {message}",
                                 err.get("category") in _TRANSIENT_CATEGORIES, 207, attempts)
    return failures


def _named_ids(err: dict) -> set[str]:
    context = err.get("context") if isinstance(err.get("context"), dict) else {}
    ids = set()
    for name in ("id", "ids", "objectId", "fromObjectId", "toObjectId"):
        value = context.get(name)
        ids.update(str(v) for v in (value if isinstance(value, list) else [value]) if v)
    for text in context.get("INVALID_OBJECT_IDS") or ():
        ids.add(str(text).split("=", 1)[-1].split(" ", 1)[0])  # "COMPANY=123 is not valid"
    return ids
