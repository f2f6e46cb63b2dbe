"""The clone's code location `crm_sync` (`dg dev`, `dagster dev -w workspace.yaml`): the defs
folder crm_sync/defs, whose CrmSync Component (syncs/defs.yaml) reads the project's syncs.yaml
($CRM_SYNC_SPEC), with the resources of the deployment the environment names (live, or
`CRM_SYNC_DEPLOYMENT=sandbox` as `crm-sync ui` starts it: crm_sync/project.py
`deployment_resources`). A project of your own scaffolds its own CrmSync
(`dg scaffold defs crm_sync.CrmSync my_syncs`) or calls `crm_sync.build_defs`."""

from __future__ import annotations

import dagster as dg

import crm_sync.defs
from crm_sync import paths
from crm_sync.project import build_defs, build_resources, crm_resources

__all__ = ["build_definitions", "build_resources", "crm_resources", "defs", "load_defs"]


def build_definitions(spec_path: str | None = None):
    return build_defs(spec_path)


def load_defs() -> dg.Definitions:
    """The defs folder, its project the user's (crm_sync/paths.py `project_dir`: the working
    directory, or the clone run from elsewhere), never site-packages: ComponentTree.from_module
    rather than load_from_defs_folder, which looks for a pyproject.toml an installed package
    does not have."""
    return dg.ComponentTree.from_module(defs_module=crm_sync.defs,
                                        project_root=paths.project_dir()).build_defs()


defs = load_defs()
