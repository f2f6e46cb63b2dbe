from __future__ import annotations

import pytest

from crm_sync.spec import SpecError, load_spec
from crm_sync_tests.bundled_spec import bundled_unlinked


def test_bundled_spec_loads_with_four_syncs():
    spec = bundled_unlinked()
    assert {s.crm for s in spec.syncs} == {"superleap", "hubspot", "salesforce", "brevo"}
    leads = spec.sync("leads_to_superleap")
    assert leads.fields["name"].required and leads.fields["email"].type == "email"
    assert leads.fields["status"].column == "status"  # shorthand mapping


def test_spec_errors_name_the_sync_and_field(tmp_path):
    path = tmp_path / "syncs.yaml"
    path.write_text(
        "syncs:\n"
        "  - name: broken_sync\n"
        "    source: leads\n"
        "    source_key: lead_id\n"
        "    crm: pipedrive\n"
        "    object: lead\n"
        "    matching_key: id\n"
        "    fields: {name: name}\n")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert "broken_sync" in str(err.value) and "crm" in str(err.value)


def test_spec_rejects_a_matching_key_the_crm_does_not_have(tmp_path):
    path = tmp_path / "syncs.yaml"
    path.write_text(
        "syncs:\n"
        "  - {name: s, source: leads, source_key: lead_id, crm: superleap, object: lead,\n"
        "     matching_key: external_id, fields: {name: name}}\n")
    with pytest.raises(SpecError, match="superleap matches records by"):
        load_spec(path)


def test_missing_spec_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(tmp_path / "nope.yaml")
