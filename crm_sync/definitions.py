"""The clone's code location (`dagster dev -w workspace.yaml` loads `defs`): the syncs of the
project's syncs.yaml ($CRM_SYNC_SPEC), with the resources of the deployment the environment
names (live, or `CRM_SYNC_DEPLOYMENT=sandbox` as `crm-sync ui` starts it:
crm_sync/project.py `deployment_resources`). A project of your own calls `crm_sync.build_defs`."""

from __future__ import annotations

from crm_sync.project import build_defs, build_resources, crm_resources

__all__ = ["build_definitions", "build_resources", "crm_resources", "defs"]


def build_definitions(spec_path: str | None = None):
    return build_defs(spec_path)


defs = build_defs()
