"""Reading a sync spec: from a YAML file (`syncs.yaml`, `load_spec`) or from a mapping already
read (the attributes of a CrmSync Component's defs.yaml). One validation and one wording of its
errors for both: each names where the spec came from and the offending sync and field."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from crm_sync import paths
from crm_sync.errors import SpecError


def read_spec_file(path: str | os.PathLike | None = None, check_schemas: bool = True):
    """The spec of a YAML file (default: $CRM_SYNC_SPEC, else the project's syncs.yaml)."""
    path = paths.spec_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"sync spec not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"sync spec {path} is not valid YAML: {exc}") from None
    return spec_from_mapping(raw, where=f"sync spec {path}", spec_path=path,
                             check_schemas=check_schemas)


def spec_from_mapping(raw, where: str, spec_path: Path, check_schemas: bool = True):
    """Validate `raw` (start_date, connections, syncs) as a Spec. `where` opens every error
    ("sync spec /p/syncs.yaml", "defs.yaml /p/defs/crm/defs.yaml"); `spec_path`: the file the
    pulled CRM schemas sit next to (crm_schemas/, crm_sync/schema_files.py)."""
    from crm_sync.spec import Spec

    if not isinstance(raw, dict):
        raise SpecError(f"{where} must be a mapping with a `syncs` list")
    try:
        spec = Spec.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError: make it readable, name the sync
        raise SpecError(f"{where} is invalid:\n{describe_errors(exc, raw)}") from None
    if check_schemas:
        from crm_sync import schema_files  # late: it imports the connectors, which import spec

        schema_files.attach(spec, Path(spec_path))
    return spec


def describe_errors(exc, raw) -> str:
    """One line per pydantic error: `sync 'name': field.path: message`."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    lines = []
    for err in errors():
        loc = list(err.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and loc[0] == "syncs" and isinstance(loc[1], int):
            try:
                where = f"sync {raw['syncs'][loc[1]].get('name', loc[1])!r}: " + ".".join(
                    str(p) for p in loc[2:]
                )
            except (LookupError, TypeError, AttributeError):
                pass  # the spec's shape is what is wrong: name the location as pydantic does
        lines.append(f"  - {where}: {err.get('msg')}")
    return "\n".join(lines)
