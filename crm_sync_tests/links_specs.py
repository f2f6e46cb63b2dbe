"""What the relationship tests share: two Brevo syncs, projects linked to companies (the
sandbox's custom object `client`; README "Relationships"), and the fixture `brevo`
(the Brevo sandbox with its settings pinned)."""

from __future__ import annotations

from crm_sync_tests.test_connector_brevo import brevo  # noqa: F401 (the fixture)

COMPANIES = {"name": "companies_to_brevo", "source": "companies", "source_key": "company_id",
             "crm": "brevo", "object": "client", "matching_key": "ext_id",
             "fields": {"name": {"column": "name", "required": True}, "domain": "domain"}}
LINK = {"client": {"sync": "companies_to_brevo", "column": "company_id"}}
PROJECTS = {"name": "projects_to_brevo", "source": "projects", "source_key": "project_id",
            "crm": "brevo", "object": "project", "matching_key": "ext_id",
            "fields": {"name": {"column": "name", "required": True}, "status": "status"},
            "associations": LINK}



def load_syncs(tmp_path, *syncs: dict):
    """A spec of just these syncs (written to tmp_path/syncs.yaml and loaded)."""
    import yaml

    from crm_sync.spec import load_spec

    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"syncs": list(syncs)}))
    return load_spec(path, check_schemas=False)
