"""Relationships in the sync spec: a sync's `associations:` (issue 17).

    associations:
      companies:                # Salesforce: the relationship name (Account); else a label
        sync: companies_to_brevo  # the target records' sync: same CRM, its upsert runs first
        column: company_id      # source column holding the TARGET row's source key
        type_id: 279            # HubSpot only: associationTypeId
        category: HUBSPOT_DEFINED  # HubSpot only

A row is linked to the record the target sync upserted for the source key its column holds
(the target sync's state knows that record's CRM id); crm_sync/load/links.py resolves it, the
connector sends it the CRM's documented way (`Connector.with_links` / `link_records`). The
checks here run when the spec is loaded (`Spec`), so a wrong relationship fails before any
run: the target exists, is another sync of the same CRM, no cycle, the CRM supports links,
HubSpot-only options only on HubSpot. The column joins the sync's source columns, so the
source read checks it exists (crm_sync/transform/validate.py `to_crm_frame`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
# Options a CRM takes only if its profile lists them (association_options; HubSpot: the type).
CRM_OPTIONS = ("type_id", "category")


class Association(BaseModel):
    """One relationship of a sync's records to the records of another sync."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sync: str = Field(description="the sync whose records are the targets (same CRM)")
    column: str = Field(description="source column holding the target row's source key")
    type_id: int | None = Field(default=None, ge=1, description="HubSpot: associationTypeId")
    category: Literal["HUBSPOT_DEFINED", "USER_DEFINED"] | None = Field(
        default=None, description="HubSpot: the association category")
    # The target's SyncSpec, set when the spec is loaded (check_associations).
    _target: object = PrivateAttr(default=None)

    @property
    def target(self):
        """The target sync (a SyncSpec); known once the sync was loaded in its Spec."""
        if self._target is None:
            raise ValueError(f"association to {self.sync!r}: its target is known only when "
                             f"the sync is loaded in its spec (load_spec / Spec)")
        return self._target


def link_column(name: str) -> str:
    """The column of validation's CRM frame holding association `name`'s target key."""
    return f"_link_{name}"


def check_associations(spec) -> None:
    """Every sync's associations against the spec (`spec`: crm_sync.spec.Spec); raises
    ValueError naming the sync and the association."""
    from crm_sync.connectors import PROFILES  # late: the connector modules import the spec

    syncs = {s.name: s for s in spec.syncs}
    for sync in spec.syncs:
        for name, link in sync.associations.items():
            where = f"sync {sync.name!r}: association {name!r}"
            reason = PROFILES[sync.crm].associations_unsupported
            if reason:
                raise ValueError(f"{where}: {sync.crm} has no associations: {reason}")
            if not re.fullmatch(_NAME, name):
                raise ValueError(f"{where}: the name must be letters, digits and _ "
                                 f"(it becomes a key of the {sync.crm} request)")
            target = syncs.get(link.sync)
            if target is None:
                raise ValueError(f"{where}: no sync named {link.sync!r}; known: "
                                 f"{sorted(syncs)}")
            if target.name == sync.name:
                raise ValueError(f"{where}: a sync cannot link to its own records")
            if target.crm != sync.crm:
                raise ValueError(f"{where}: target sync {target.name!r} writes to "
                                 f"{target.crm}, not {sync.crm}; both must be one CRM")
            taken = PROFILES[sync.crm].association_options
            given = [o for o in CRM_OPTIONS if getattr(link, o) is not None and o not in taken]
            if given:
                raise ValueError(f"{where}: {', '.join(given)} are HubSpot's association "
                                 f"options; {sync.crm} takes none")
            link._target = target
    _no_cycle(syncs)


def _no_cycle(syncs: dict) -> None:
    """A sync's targets run first (asset dependencies): the links may form no cycle."""
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ValueError(f"associations form a cycle: {' -> '.join(cycle)} (each sync's "
                             f"targets are synced first, so one of them must go)")
        state[name] = 1
        for link in syncs[name].associations.values():
            visit(link.sync, path + [name])
        state[name] = 2

    for name in syncs:
        visit(name, [])


def target_syncs(sync) -> list[str]:
    """The syncs whose upserts run before this sync's (its associations' targets)."""
    return list(dict.fromkeys(link.sync for link in sync.associations.values()))


def without_associations(spec):
    """`spec` (a Spec) with no sync's associations: its syncs' records unlinked, each sync
    runnable alone (the benchmark's syncs; the tests of other behaviour)."""
    return spec.model_copy(update={"syncs": [
        s.model_copy(update={"associations": {}}) for s in spec.syncs]})
