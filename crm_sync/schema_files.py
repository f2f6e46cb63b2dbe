"""CRM field schemas pulled into the project, and the spec checked against them.

`crm-sync schema pull [SYNC...]` asks each sync's CRM for its object's fields
(`Connector.describe`: HubSpot's properties API, Salesforce's describe, Superleap's Get Object)
through the sync's resource, as a backfill builds it (crm_sync/project.py), and writes
`crm_schemas/<crm>/<object>.json` next to the spec (crm_sync/paths.py): a file users commit and
review like a lock file. A CRM without a schema endpoint (Brevo) is reported and skipped.

`crm-sync schema check [SYNC...]` and `load_spec` (whenever a pulled file exists for a sync's
object) compare the spec with it: a mapped field the object does not have (with the closest
name), one that is read-only or calculated, a matching key that is not unique (Salesforce: not
an external id), a spec type that cannot hold the field's type. Validation builds its checks
from the same file (crm_sync/transform/schemas.py).
"""

from __future__ import annotations

import asyncio
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from crm_sync import paths
from crm_sync.connectors import PROFILES
from crm_sync.connectors.fields import CrmField, CrmObjectSchema
from crm_sync.errors import FatalCrmError, SchemaUnavailable, SpecError, TransientFailure
from crm_sync.connectors.profile import CREATE_MODES

# The spec types (crm_sync.spec.FieldType) that can carry each CRM field type.
HOLDS: dict[str, frozenset[str]] = {
    **{t: frozenset({"string", "email", "phone"})
       for t in ("string", "text", "url", "id", "reference", "enumeration", "other")},
    "email": frozenset({"string", "email"}),
    "phone": frozenset({"string", "phone"}),
    "integer": frozenset({"integer"}),
    "number": frozenset({"integer", "number"}),
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "datetime": frozenset({"string"}),  # the spec has no datetime type: text, format-checked
    "multi_enumeration": frozenset({"string", "json"}),
    "json": frozenset({"json"}),
}


def schema_path(crm: str, obj: str, root: str | os.PathLike | None = None) -> Path:
    """`crm_schemas/<crm>/<object>.json` under `root` (default: next to the project's spec)."""
    return Path(root) / crm / f"{obj}.json" if root is not None \
        else paths.schemas_dir() / crm / f"{obj}.json"


def shown(path: Path) -> str:
    """The path as messages name it: relative to the project when inside it."""
    try:
        return str(path.relative_to(paths.project_dir()))
    except ValueError:
        return str(path)


def read_schema(path: Path) -> CrmObjectSchema | None:
    """The pulled schema at `path`, None when there is none; SpecError when it is unreadable."""
    if not path.is_file():
        return None
    try:
        return CrmObjectSchema.from_json(path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as exc:
        raise SpecError(f"pulled CRM schema {path} cannot be read ({exc}); pull it again with "
                        f"`crm-sync schema pull`") from None


def problems(sync, schema: CrmObjectSchema, where: str) -> list[str]:
    """Why the sync `sync` (a SyncSpec) cannot work with the CRM object `schema` (read from
    `where`); each names the sync and the field."""
    found: list[str] = []
    names = [f.name for f in schema.fields]
    head = f"sync {sync.name!r}"
    for name, mapping in sync.fields.items():
        crm_field = schema.field(name)
        if crm_field is None:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            found.append(f"{head}: field {name!r} does not exist on {schema.crm} object "
                         f"{schema.object!r} ({where}){hint}")
            continue
        if crm_field.calculated:
            found.append(f"{head}: field {name!r} is calculated by {schema.crm} ({where}); it "
                         f"cannot be written")
        elif crm_field.read_only:
            found.append(f"{head}: field {name!r} is read-only on {schema.crm} ({where}); it "
                         f"cannot be written")
        elif sync.mode in CREATE_MODES and not crm_field.createable:
            found.append(f"{head}: field {name!r} cannot be set on create on {schema.crm} "
                         f"({where}), and the sync only creates")
        elif sync.mode == "update_only" and not crm_field.updateable:
            found.append(f"{head}: field {name!r} cannot be updated on {schema.crm} "
                         f"({where}), and the sync only updates")
        holds = HOLDS.get(crm_field.type, frozenset())
        if mapping.type not in holds and not crm_field.read_only:
            want = " or ".join(sorted(holds)) or "no spec type"
            found.append(f"{head}: field {name!r} has type {mapping.type!r}, which cannot hold "
                         f"{schema.crm}'s {crm_field.crm_type} ({crm_field.type}) field "
                         f"({where}); use type: {want}")
    found += _matching_problems(sync, schema, where, names)
    return found


def _matching_problems(sync, schema: CrmObjectSchema, where: str, names: list[str]) -> list[str]:
    key = schema.field(sync.matching_key)
    head = f"sync {sync.name!r}: matching_key {sync.matching_key!r}"
    if key is None:
        if sync.matching_key in sync.fields:
            return []  # reported above as a field that does not exist
        close = difflib.get_close_matches(sync.matching_key, names, n=1)
        return [f"{head} does not exist on {schema.crm} object {schema.object!r} ({where})"
                + (f"; did you mean {close[0]!r}?" if close else "")]
    # What the CRM's upsert matches by (its profile): a unique field, Salesforce an external id.
    profile = PROFILES[sync.crm]
    attribute, what = profile.matching_key_needs
    if not getattr(key, attribute) and \
            (schema.object, sync.matching_key) not in profile.always_matchable:
        return [f"{head} is not {what} on {schema.crm} ({where}); the upsert cannot match "
                f"records by it"]
    return []


def attach(spec, spec_path: Path) -> None:
    """Read the pulled schema of each sync's object (if any), check the sync against it, and
    keep it on the sync for validation; SpecError naming every problem of every sync."""
    root = paths.schemas_dir(spec_path)
    found: list[str] = []
    for sync in spec.syncs:
        path = schema_path(sync.crm, sync.object, root)
        schema = read_schema(path)
        if schema is None:
            continue
        found += problems(sync, schema, shown(path))
        sync._crm_schema = PulledSchema(schema, shown(path))
    if found:
        raise SpecError(f"sync spec {spec_path} cannot work with the pulled CRM schemas "
                        f"(crm-sync schema check):\n" + "\n".join(f"  - {p}" for p in found))


@dataclass(frozen=True)
class PulledSchema:
    """A pulled schema and the file it was read from (named in quarantine messages)."""

    schema: CrmObjectSchema
    file: str

    def field(self, name: str) -> CrmField | None:
        return self.schema.field(name)


def _selected(spec, names) -> list:
    known = {s.name for s in spec.syncs}
    unknown = [n for n in names or () if n not in known]
    if unknown:
        raise ValueError(f"no sync named {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(sorted(known))}")
    return [s for s in spec.syncs if not names or s.name in names]


def pull(spec, names=None, resources: dict | None = None,
         root: str | os.PathLike | None = None) -> list[tuple[str, str, str]]:
    """Fetch and write the schema of each selected sync's object; (sync, "pulled" |
    "unavailable" | "failed", the file or the reason) per sync."""
    from crm_sync.project import build_resources

    resources = resources or build_resources()
    results = []
    for sync in _selected(spec, names):
        try:
            schema = asyncio.run(_describe(resources[sync.crm], sync))
        except SchemaUnavailable as exc:
            results.append((sync.name, "unavailable", str(exc)))
            continue
        except (FatalCrmError, TransientFailure) as exc:  # no token, refused, unreachable...
            results.append((sync.name, "failed", str(exc)))
            continue
        path = schema_path(sync.crm, sync.object, root)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(schema.to_json(), encoding="utf-8")
        results.append((sync.name, "pulled", shown(path)))
    return results


async def _describe(resource, sync) -> CrmObjectSchema:
    # A resource built for Dagster holds its token as dg.EnvVar: resolve it as a run would.
    resolved = resource.process_config_and_initialize()
    async with resolved.open(sync) as connector:
        return await connector.describe()


def check(spec, names=None, root: str | os.PathLike | None = None) -> tuple[list[str], list[str]]:
    """(problems, syncs without a pulled file) of the selected syncs."""
    found, missing = [], []
    for sync in _selected(spec, names):
        path = schema_path(sync.crm, sync.object, root)
        schema = read_schema(path)
        if schema is None:
            missing.append(sync.name)
            continue
        found += problems(sync, schema, shown(path))
    return found, missing
