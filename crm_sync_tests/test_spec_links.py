"""`associations:` in the sync spec (crm_sync/spec_links.py): the checks made when a spec is
loaded, the target's key column extracted with the row, and the upsert of a sync after the
upserts of its targets in the Dagster graph (same partition)."""

from __future__ import annotations

import dagster as dg
import pytest
import yaml

from crm_sync.project import build_defs, sandbox_resources
from crm_sync.sandbox.app import DEFAULT_TOKENS
from crm_sync.spec import SpecError, load_spec

COMPANIES = {"name": "companies_to_brevo", "source": "companies", "source_key": "company_id",
             "crm": "brevo", "object": "client", "matching_key": "ext_id",
             "fields": {"name": "name"}}
PROJECTS = {"name": "projects_to_brevo", "source": "projects", "source_key": "project_id",
            "crm": "brevo", "object": "project", "matching_key": "ext_id",
            "fields": {"name": "name"},
            "associations": {"client": {"sync": "companies_to_brevo", "column": "company_id"}}}


def _load(tmp_path, *syncs):
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"syncs": list(syncs)}))
    return load_spec(path, check_schemas=False)


def _refused(tmp_path, *syncs) -> str:
    with pytest.raises(SpecError) as err:
        _load(tmp_path, *syncs)
    return str(err.value)


def _with(sync: dict, **links) -> dict:
    return {**sync, "associations": links}


def test_an_association_loads_and_its_column_is_read_with_the_row(tmp_path):
    spec = _load(tmp_path, COMPANIES, PROJECTS)
    projects = spec.sync("projects_to_brevo")
    link = projects.associations["client"]
    assert (link.sync, link.column, link.target.name) == \
        ("companies_to_brevo", "company_id", "companies_to_brevo")
    assert "company_id" in projects.source_columns  # extracted, though no field maps it
    assert spec.sync("companies_to_brevo").associations == {}


def test_an_unknown_target_sync_is_refused_naming_both(tmp_path):
    message = _refused(tmp_path, _with(PROJECTS, client={"sync": "nope", "column": "c"}))
    assert "projects_to_brevo" in message and "'client'" in message
    assert "no sync named 'nope'" in message


def test_a_sync_cannot_link_to_itself(tmp_path):
    message = _refused(tmp_path, _with(PROJECTS, parent={"sync": "projects_to_brevo",
                                                         "column": "company_id"}))
    assert "cannot link to its own records" in message


def test_a_target_in_another_crm_is_refused(tmp_path):
    other = {**COMPANIES, "crm": "hubspot", "object": "companies", "matching_key": "domain",
             "fields": {"domain": "domain"}}
    message = _refused(tmp_path, other, PROJECTS)
    assert "writes to hubspot, not brevo" in message


def test_a_cycle_of_associations_is_refused(tmp_path):
    companies = _with(COMPANIES, projects={"sync": "projects_to_brevo", "column": "name"})
    message = _refused(tmp_path, companies, PROJECTS)
    assert "cycle" in message
    assert "companies_to_brevo -> projects_to_brevo -> companies_to_brevo" in message or \
        "projects_to_brevo -> companies_to_brevo -> projects_to_brevo" in message


def test_hubspot_options_are_refused_on_another_crm(tmp_path):
    link = {"sync": "companies_to_brevo", "column": "company_id", "type_id": 279}
    message = _refused(tmp_path, COMPANIES, _with(PROJECTS, client=link))
    assert "type_id are HubSpot's association options; brevo takes none" in message
    link = {"sync": "companies_to_brevo", "column": "company_id", "category": "SOMETHING"}
    assert "category" in _refused(tmp_path, COMPANIES, _with(PROJECTS, client=link))


def test_hubspot_takes_its_type_id_and_category(tmp_path):
    companies = {"name": "companies_to_hubspot", "source": "companies",
                 "source_key": "company_id", "crm": "hubspot", "object": "companies",
                 "matching_key": "domain", "fields": {"domain": "domain"}}
    contacts = {"name": "contacts_to_hubspot", "source": "contacts", "source_key": "contact_id",
                "crm": "hubspot", "object": "contacts", "matching_key": "email",
                "fields": {"email": "email"}, "associations": {"companies": {
                    "sync": "companies_to_hubspot", "column": "company_id", "type_id": 279,
                    "category": "HUBSPOT_DEFINED"}}}
    link = _load(tmp_path, companies, contacts).sync("contacts_to_hubspot") \
        .associations["companies"]
    assert (link.type_id, link.category) == (279, "HUBSPOT_DEFINED")


def test_superleap_refuses_associations_and_says_why(tmp_path):
    leads = {"name": "leads_to_superleap", "source": "leads", "source_key": "lead_id",
             "crm": "superleap", "object": "lead", "matching_key": "id",
             "fields": {"name": "name"}}
    other = {**leads, "name": "more_leads", "associations": {
        "lead": {"sync": "leads_to_superleap", "column": "lead_id"}}}
    message = _refused(tmp_path, leads, other)
    assert "superleap has no associations" in message
    assert "documents no relationship fields" in message


def test_an_association_name_must_be_a_plain_name(tmp_path):
    link = {"sync": "companies_to_brevo", "column": "company_id"}
    message = _refused(tmp_path, COMPANIES, _with(PROJECTS, **{"../x": link}))
    assert "letters, digits and _" in message


def test_an_unknown_option_is_refused(tmp_path):
    link = {"sync": "companies_to_brevo", "column": "company_id", "colum": "x"}
    assert "colum" in _refused(tmp_path, COMPANIES, _with(PROJECTS, client=link))


def test_the_upsert_depends_on_its_targets_upsert_in_the_graph(tmp_path):
    spec = _load(tmp_path, COMPANIES, PROJECTS)
    resources = sandbox_resources("http://127.0.0.1:9", tmp_path / "s.sqlite", tmp_path,
                                  tokens=DEFAULT_TOKENS)
    defs = build_defs(spec, resources=resources)
    graph = defs.resolve_asset_graph()
    node = graph.get(dg.AssetKey("projects_to_brevo"))
    assert {k.to_user_string() for k in node.parent_keys} == \
        {"validated_projects_to_brevo", "companies_to_brevo"}
    assert {k.to_user_string() for k in graph.get(dg.AssetKey("companies_to_brevo"))
            .parent_keys} == {"validated_companies_to_brevo"}
    # same daily partitions: partition D of the projects waits for partition D of the companies
    upsert = defs.resolve_assets_def("projects_to_brevo")
    assert upsert.partitions_def == defs.resolve_assets_def("companies_to_brevo").partitions_def
    parents = graph.get_parent_partition_keys_for_child(
        "2026-11-03", dg.AssetKey("companies_to_brevo"), dg.AssetKey("projects_to_brevo"))
    assert set(parents.partitions_subset.get_partition_keys()) == {"2026-11-03"}
