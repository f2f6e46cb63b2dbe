"""The `crm_sync.CrmSync` Dagster Component: syncs declared in a `defs.yaml`.

    type: crm_sync.CrmSync
    attributes:
      key_prefix: crm             # optional: every asset key and job name under it
      start_date: "2026-11-01"
      syncs:
        - name: leads_to_superleap
          ...                     # the fields of a syncs.yaml sync, same names

or `spec_file: syncs.yaml` (relative to the defs.yaml's folder) instead of start_date /
connections / syncs. A project that ran `pip install crm_sync` sees it in `dg list components`
(the `dagster_dg_cli.registry_modules` entry point in pyproject.toml) and writes one with
`dg scaffold defs crm_sync.CrmSync my_syncs` (crm_sync/component_scaffold.py).

Validation is the spec's own (crm_sync/spec_load.py `spec_from_mapping`): the attributes are
typed loosely here so that a wrong field reads as it would in syncs.yaml, naming the defs.yaml
and the sync and field ("defs.yaml /p/defs/my_syncs/defs.yaml is invalid: - sync 'x':
fields..."). Docs: https://docs.dagster.io/guides/build/components/creating-new-components
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crm_sync.component_scaffold import CrmSyncScaffolder
from crm_sync.errors import SpecError

SPEC_FIELDS = ("start_date", "connections", "syncs")


@dg.scaffold_with(CrmSyncScaffolder)
class CrmSync(dg.Component, dg.Resolvable, dg.Model):
    """Syncs of source tables into CRMs (Superleap, Brevo, HubSpot, Salesforce): per sync, its
    source, validated and upsert assets (daily partitions), a job, a schedule and a sensor, and
    one quarantine asset. The attributes are those of crm_sync's syncs.yaml."""

    spec_file: str | None = Field(
        default=None, description="a syncs.yaml to read instead of start_date/connections/"
        "syncs, relative to this defs.yaml's folder ($CRM_SYNC_SPEC replaces it)")
    # Loosely typed on purpose: crm_sync's Spec validates them, with its own messages.
    start_date: Any = Field(default=None, description="first daily partition, YYYY-MM-DD")
    connections: Any = Field(default=None, description="named sources: {NAME: {folder | "
                             "duckdb | url: ...}}; relative paths: from this defs.yaml's folder")
    syncs: Any = Field(default=None, description="one or more syncs (the fields of a "
                       "syncs.yaml sync: name, source, source_key, crm, object, ...)")
    key_prefix: str | list[str] | None = Field(
        default=None, description="puts every asset key (and job, schedule, sensor name) of "
        "these syncs under this prefix, so two components never collide")

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        from crm_sync.project import build_defs

        return build_defs(self.load_spec(Path(context.path)), resources=shared_resources(),
                          key_prefix=self.key_prefix)

    def load_spec(self, folder: Path):
        """The Spec of these attributes (or of spec_file), validated as syncs.yaml is;
        `folder`: the defs.yaml's (the component's path, dg's ComponentLoadContext.path)."""
        from crm_sync.spec_load import read_spec_file, spec_from_mapping

        defs_file = folder / "defs.yaml" if folder.is_dir() else folder
        folder = defs_file.parent
        inline = [name for name in SPEC_FIELDS if getattr(self, name) is not None]
        if self.spec_file is not None:
            if inline:
                raise SpecError(f"defs.yaml {defs_file} is invalid:\n  - spec_file or "
                                f"{', '.join(SPEC_FIELDS)}, not both (got spec_file and "
                                f"{', '.join(inline)})")
            return read_spec_file(os.environ.get("CRM_SYNC_SPEC") or folder / self.spec_file)
        raw = {name: getattr(self, name) for name in inline}
        if isinstance(raw.get("connections"), dict):
            raw["connections"] = _relative_to(folder, raw["connections"])
        return spec_from_mapping(raw, where=f"defs.yaml {defs_file}", spec_path=defs_file)


def _relative_to(folder: Path, connections: dict) -> dict:
    """`folder:` and `duckdb:` paths written relative resolve from the defs.yaml's folder
    (a syncs.yaml's resolve in the working directory); `${VAR}` and `{env: VAR}` stay as
    written (read when the source is opened, crm_sync/extract/connections.py)."""
    out = {}
    for name, conn in connections.items():
        if isinstance(conn, dict):
            conn = {key: str(folder / value) if key in ("folder", "duckdb")
                    and isinstance(value, str) and "${" not in value
                    and not Path(value).expanduser().is_absolute() else value
                    for key, value in conn.items()}
        out[name] = conn
    return out


_RESOURCES: dict[tuple, dict] = {}  # at most one entry: the current environment's


def shared_resources() -> dict:
    """The deployment's resources (crm_sync/project.py `deployment_resources`), one set per
    environment: Definitions.merge refuses two resources of one key unless they are the same
    object, so every CrmSync in a code location hands Dagster the same ones."""
    from crm_sync.project import deployment_resources

    key = (os.getcwd(), *sorted(os.environ.items()))  # what they are built from
    if key not in _RESOURCES:
        _RESOURCES.clear()
        _RESOURCES[key] = deployment_resources()
    return _RESOURCES[key]
