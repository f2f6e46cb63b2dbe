"""The bundled spec (syncs.yaml) as the tests of other behaviour use it: without its
relationships (`associations:`), so one of its child syncs can run alone."""

from __future__ import annotations

import yaml

from crm_sync.spec import DEFAULT_SPEC_PATH, Spec, load_spec
from crm_sync.spec_links import without_associations


def bundled_unlinked() -> Spec:
    """The bundled spec (syncs.yaml) without its relationships: for the tests of other
    behaviour that run a child sync (contacts_to_hubspot, projects_to_brevo,
    contacts_to_salesforce) without syncing its target first. With its relationships, every
    linked row of such a run waits as ASSOCIATION_TARGET_MISSING (what test_load_links.py and
    the relationship tests of each CRM test)."""
    return without_associations(load_spec())


def bundled_raw() -> dict:
    """The bundled syncs.yaml as parsed YAML, without its relationships (for the tests that
    edit the spec before loading it)."""
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    for sync in raw["syncs"]:
        sync.pop("associations", None)
    return raw
