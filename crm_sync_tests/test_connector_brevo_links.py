"""Brevo relationships end to end (issue 17): a spec with `associations:`, Dagster runs of the
generated assets, and the Brevo sandbox's records over HTTP. Which records are linked after
create, after the source value changes (the old one unlinked, the new one linked), after the
value is removed (unlinked); a project whose company is synced in a later partition waits in
the quarantine (ASSOCIATION_TARGET_MISSING) and is sent by a later run's replay step."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import yaml

from crm_sync.connectors.brevo import BrevoConnector
from crm_sync.connectors.model import RowLinks, TargetRef
from crm_sync.pipeline.assets import build_assets
from crm_sync.project import sandbox_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import load_spec
from crm_sync_tests.conftest import stored
from crm_sync_tests.links_specs import COMPANIES, PROJECTS, brevo  # noqa: F401 (fixture)

DAY, NEXT = "2026-11-03", "2026-11-04"


class Project:
    """A spec, a data folder and the sandbox: write the tables, run a partition, look."""

    def __init__(self, tmp_path, url, sandbox):
        (tmp_path / "data").mkdir()
        self.data, self.sandbox = tmp_path / "data", sandbox
        (tmp_path / "syncs.yaml").write_text(yaml.safe_dump({"syncs": [COMPANIES, PROJECTS]}))
        self.spec = load_spec(tmp_path / "syncs.yaml", check_schemas=False)
        self.resources = sandbox_resources(url, tmp_path / "crm_sync.sqlite", self.data,
                                           tokens=DEFAULT_TOKENS)

    def write(self, companies: dict[str, str], projects: dict[str, tuple[str, str | None]]):
        """companies: id -> day; projects: id -> (day, company id or None)."""
        pd.DataFrame([{"company_id": k, "name": f"Company {k}", "domain": f"{k.lower()}.com",
                       "updated_at": f"{day}T09:00:00Z"} for k, day in companies.items()]
                     ).to_csv(self.data / "companies.csv", index=False)
        pd.DataFrame([{"project_id": k, "name": f"Project {k}", "status": "active",
                       "company_id": company or "", "updated_at": f"{day}T10:00:00Z"}
                      for k, (day, company) in projects.items()]
                     ).to_csv(self.data / "projects.csv", index=False)

    def run(self, day: str) -> dict:
        result = dg.materialize(build_assets(self.spec), partition_key=day,
                                resources=self.resources)
        assert result.success
        [upsert] = result.asset_materializations_for_node("projects_to_brevo")
        return {k: v.value for k, v in upsert.metadata.items()}

    def ids(self, obj: str) -> dict[str, int]:
        return {r["identifiers"]["ext_id"]: r["identifiers"]["id"]
                for r in stored(self.sandbox, "brevo", obj)}

    def linked(self, obj: str, other: str) -> dict[str, set[str]]:
        """ext_id -> the ext_ids of the `other` records it is linked to (records with links)."""
        names = {v: k for k, v in self.ids(other).items()}
        return {r["identifiers"]["ext_id"]: {names[i] for i in r["associations"][other]}
                for r in stored(self.sandbox, "brevo", obj)
                if r.get("associations", {}).get(other)}


def test_projects_are_linked_moved_and_unlinked_in_the_sandbox(brevo, sandbox_url, tmp_path):
    project = Project(tmp_path, sandbox_url, brevo)
    project.write({"CO-1": DAY, "CO-2": DAY, "CO-3": NEXT},
                  {"PR-1": (DAY, "CO-1"), "PR-2": (DAY, "CO-3"), "PR-3": (DAY, None)})
    meta = project.run(DAY)  # the companies' upsert runs first (asset dependency)
    assert (meta["created"], meta["links_created"], meta["targets_missing"]) == (2, 1, 1)
    assert meta["failed_ASSOCIATION_TARGET_MISSING"] == 1
    assert set(project.ids("project")) == {"PR-1", "PR-3"}  # PR-2 waits for CO-3
    assert project.linked("project", "client") == {"PR-1": {"CO-1"}}
    assert project.linked("client", "project") == {"CO-1": {"PR-1"}}  # both sides
    store = project.resources["store"].get()
    [entry] = store.quarantine_frame("projects_to_brevo").to_dict("records")
    assert (entry["source_key"], entry["error_code"]) == ("PR-2", "ASSOCIATION_TARGET_MISSING")
    assert "companies_to_brevo" in entry["message"] and "'CO-3'" in entry["message"]

    # CO-3 is synced by the next day's run; that run's replay step sends PR-2, linked
    project.run(NEXT)
    assert project.linked("project", "client") == {"PR-1": {"CO-1"}, "PR-2": {"CO-3"}}
    assert store.quarantine_frame("projects_to_brevo").empty

    # PR-1 moves to CO-2: unlinked from CO-1, linked to CO-2 (only its company_id changed)
    project.write({"CO-1": DAY, "CO-2": DAY, "CO-3": NEXT},
                  {"PR-1": (DAY, "CO-2"), "PR-2": (DAY, "CO-3"), "PR-3": (DAY, None)})
    meta = project.run(DAY)
    assert (meta["updated"], meta["unchanged"], meta["links_created"],
            meta["links_removed"]) == (1, 2, 1, 1)
    assert project.linked("project", "client") == {"PR-1": {"CO-2"}, "PR-2": {"CO-3"}}
    assert project.linked("client", "project") == {"CO-2": {"PR-1"}, "CO-3": {"PR-2"}}

    # PR-1's company_id emptied: unlinked
    project.write({"CO-1": DAY, "CO-2": DAY, "CO-3": NEXT},
                  {"PR-1": (DAY, None), "PR-2": (DAY, "CO-3"), "PR-3": (DAY, None)})
    meta = project.run(DAY)
    assert (meta["updated"], meta["links_removed"]) == (1, 1)
    assert project.linked("project", "client") == {"PR-2": {"CO-3"}}
    assert project.linked("client", "project") == {"CO-3": {"PR-2"}}
    assert store.links_frame("projects_to_brevo")["source_key"].tolist() == ["PR-2"]


def test_with_links_builds_brevos_associations_and_more_than_10_are_refused(tmp_path):
    (tmp_path / "syncs.yaml").write_text(yaml.safe_dump({"syncs": [COMPANIES, PROJECTS]}))
    spec = load_spec(tmp_path / "syncs.yaml", check_schemas=False).sync("projects_to_brevo")
    connector = BrevoConnector(spec, core=None)
    links = RowLinks(link=(TargetRef("client", "client", "12", "ext_id", "CO-2"),),
                     unlink=(TargetRef("client", "client", "11", "ext_id", None),))
    item = connector.item("PR-1", {"name": "P"}, None, links)
    assert item.record["associations"] == [
        {"object_type": "client", "action": "unlink", "records": [{"identifiers": {"id": 11}}]},
        {"object_type": "client", "action": "link",
         "records": [{"identifiers": {"ext_id": "CO-2"}}]}]
    assert item.links is links
    many = RowLinks(link=tuple(TargetRef("client", "client", str(i), "ext_id", f"CO-{i}")
                               for i in range(11)))
    outcome = connector._precheck(connector.item("PR-2", {"name": "P"}, None, many), set())
    assert (outcome.status, outcome.error_code) == ("failed", "TOO_MANY_ASSOCIATIONS")
    assert "at most 10" in outcome.message
    assert connector._precheck(item, set()) is None
    assert "associations" not in connector.item("PR-3", {"name": "P"}, None).record
