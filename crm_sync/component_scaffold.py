"""`dg scaffold defs crm_sync.CrmSync <name>`: a `<name>/defs.yaml` holding one example sync
with every field a sync takes (the required ones filled in, the optional ones at their
defaults, each with a one-line comment), and the tiny CSV it reads (`<name>/data/leads.csv`),
so `dg check defs` passes and a partition syncs as written (against the CRM sandbox, or a real
CRM once its token is set). Scaffolder API:
https://docs.dagster.io/guides/build/components/creating-new-components/component-customization
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

EXAMPLE_DAY = "2026-11-04"
EXAMPLE_CSV = f"""\
lead_id,name,email,updated_at
L-1,Ada Lovelace,ada@example.com,{EXAMPLE_DAY}T08:00:00Z
L-2,Alan Turing,alan@example.com,{EXAMPLE_DAY}T09:30:00Z
L-3,Grace Hopper,grace@example.com,2026-11-05T10:00:00Z
"""

# The example's values for the sync's required fields (and the few optional ones it sets);
# every other field is written with its default (SyncSpec's own, read from the model).
EXAMPLE = {
    "name": "example_leads",
    "description": "Example: the leads of data/leads.csv into CRM `lead` records.",
    "source": "leads",
    "source_connection": "example_data",
    "source_key": "lead_id",
    "crm": "superleap",
    "object": "lead",
    "matching_key": "id",
}
EXAMPLE_FIELDS = """\
      fields:                  # CRM field: source column, or {column, type, required, sensitive}
        name: {column: name, type: string, required: true, sensitive: false}
        email: {column: email, type: email}  # types: string email phone integer number boolean date datetime json
        external_id: lead_id   # shorthand for {column: lead_id}
"""
# One line per field of a sync (SyncSpec), in its order; test_component.py checks that every
# field is here, so a new field cannot be left out of the scaffold.
NOTES = {
    "name": "lower_snake_case; becomes the upsert asset's name",
    "description": "shown on the asset in the Dagster UI",
    "source": "source table (a <table>.csv/.parquet of the connection's folder)",
    "source_connection": "a name of `connections:` above; null: the `source` resource (data/)",
    "source_query": "a SQL query read instead of a table (duckdb/url connections)",
    "cursor_column": "the column whose day puts a row in a daily partition",
    "source_key": "the column that identifies a source row",
    "crm": "superleap, brevo, hubspot or salesforce",
    "object": "the CRM object (type / slug / sObject)",
    "matching_key": "the CRM-side identifier (README: matching keys per CRM)",
    "matching_column": "a source column holding the matching key's value",
    "matching_key_case_sensitive": "Salesforce: the external id field is case-sensitive",
    "fields": "",
    "attributes_json_column": "a source column with a JSON object of extra attributes (Brevo)",
    "known_attributes": "Brevo: the attributes the object defines (others are not sent)",
    "mode": "upsert, update_only, create_only, mirror or append",
    "all_or_none": "Salesforce: a batch is written whole or not at all",
    "quarantine_threshold": "a run fails when more than this share of rows is rejected",
    "alert_threshold": "share of sent rows the CRM rejected above which the WARN check fails",
    "batch_size": "rows per request; null: the CRM's maximum",
    "bulk_threshold": "Salesforce: from this many rows, Bulk API 2.0",
    "schedule": "a cron schedule, e.g. \"0 2 * * *\"; null: none (run it from the UI)",
    "max_unconfirmed_runs": "runs a row may end unconfirmed before its quarantine is permanent",
    "mirror_max_delete_share": "mode mirror: refuse a run that would delete more than this",
    "associations": "links to other syncs' records: {name: {sync: other_sync, column: col}}",
}
HEADER = """\
# crm_sync: syncs from your own tables into CRMs (README "Adding a sync"). The fields are
# those of crm_sync's syncs.yaml; `dg check defs` validates them and names the sync and field.
# Several syncs: add entries under `syncs:`. Tokens and CRM addresses come from the
# environment (<CRM>_TOKEN, <CRM>_BASE_URL; README "Tokens").
type: {type_name}

attributes:
  # key_prefix: crm            # optional: every asset key, job, schedule and sensor name under it
  start_date: "2026-11-01"     # the first daily partition
  connections:                 # named sources; relative paths from this file's folder
    example_data: {{folder: data}}   # data/leads.csv, written next to this file
  syncs:
"""


def _line(key: str, value, note: str, first: bool) -> str:
    text = f"{'    - ' if first else '      '}{key}: {json.dumps(value)}"
    return f"{text.ljust(40)} # {note}\n" if note else text + "\n"


def render_defs_yaml(type_name: str) -> str:
    """The scaffolded defs.yaml: the header, then each field of SyncSpec in its order."""
    from crm_sync.spec import SyncSpec

    out = HEADER.format(type_name=type_name)
    for i, (name, info) in enumerate(SyncSpec.model_fields.items()):
        if name == "fields":
            out += EXAMPLE_FIELDS
            continue
        value = EXAMPLE[name] if name in EXAMPLE else info.get_default(call_default_factory=True)
        out += _line(name, value, NOTES[name], first=i == 0)
    return out


class CrmSyncScaffolder(dg.Scaffolder):
    def scaffold(self, request: dg.ScaffoldRequest) -> None:
        folder = Path(request.target_path)
        (folder / "data").mkdir(parents=True, exist_ok=True)
        (folder / "defs.yaml").write_text(render_defs_yaml(request.type_name))
        (folder / "data" / "leads.csv").write_text(EXAMPLE_CSV)
