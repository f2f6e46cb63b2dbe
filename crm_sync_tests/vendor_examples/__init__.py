"""Documented accept/reject examples per CRM: the data the client's validation and the sandbox
share, and nothing else (they share no code).

One YAML file per CRM, `<crm>.yaml`: a list of entries

    - id: hubspot-number-comma          # unique, names the pytest case
      object: contacts                  # the CRM object (a sandbox fixture object)
      field: annualrevenue              # the CRM field the value goes into
      type: number                      # crm_sync's type for the field (connectors/fields.py)
      value: "4,68"                     # the value as the source table holds it (text)
      verdict: reject                   # accept | reject
      error_code: INVALID_INTEGER       # the CRM's documented code when rejected (or null)
      error_text: "was not a valid number"  # a fragment of the CRM's documented message
      client_rule: number_format        # optional: the validation rule expected to catch it
      status: 400                       # optional: the HTTP status of the CRM's answer
      source: "REFERENCE.md §HubSpot errors; https://..."  # where the example comes from

Each CRM's test (`test_vendor_examples_<crm>.py`) runs every entry twice: through the client's
validation (`validate_partition`), and as a raw HTTP request to the sandbox (built from the
vendor's documented wire format, not by the client's connector).
"""

from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
FIELDS = ("id", "object", "field", "type", "value", "verdict", "source")


def load_examples(crm: str) -> list[dict]:
    entries = yaml.safe_load((HERE / f"{crm}.yaml").read_text()) or []
    ids = [e.get("id") for e in entries]
    assert len(ids) == len(set(ids)), f"{crm}.yaml: duplicate ids"
    for entry in entries:
        missing = [f for f in FIELDS if f not in entry]
        assert not missing, f"{crm}.yaml {entry.get('id')}: missing {missing}"
        assert entry["verdict"] in ("accept", "reject"), entry["id"]
    return entries
