"""The sync spec: a YAML file that declares every sync (source table -> CRM object).

Assets, checks and schedules are generated from it, so adding a sync is a YAML edit.
The default spec is the project's ``syncs.yaml`` (crm_sync/paths.py); ``CRM_SYNC_SPEC`` points
elsewhere.
"""

from __future__ import annotations

import os
import re
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crm_sync import paths
from crm_sync.errors import SpecError  # re-exported: its old home

# The folder holding the package (a clone's root; tests read the clone's files through it).
# Where a project's own files are is crm_sync/paths.py's business.
PROJECT_ROOT = paths.PACKAGE_PARENT
DEFAULT_SPEC_PATH = PROJECT_ROOT / paths.SPEC_NAME

FieldType = Literal["string", "email", "phone", "integer", "number", "boolean", "date", "json",
                    "datetime"]


def profiles() -> dict:
    """The registry of CRMs (crm_sync.connectors.PROFILES). Imported when first needed: the
    connector modules import this module."""
    from crm_sync.connectors import PROFILES

    return PROFILES


def _profile(crm: str | None):
    """The CRM's profile (crm_sync/connectors/profile.py), None for an unknown CRM."""
    return profiles().get(crm or "")


# The object (and Salesforce's external id field) become segments of the request's URL path,
# field names keys of its body: a name like `../../_sandbox/reset?` would send the token and the
# rows to another path of the CRM's host, so anything outside the characters each CRM documents
# (its profile's patterns) is refused when the spec is loaded.
def _check_name(crm: str | None, kind: str, what: str, value: str) -> None:
    profile = _profile(crm)
    if profile is None:
        return
    pattern = profile.object_pattern if kind == "object" else profile.field_pattern
    if not re.fullmatch(pattern, value):
        raise ValueError(f"{what} {value!r} is not {profile.name_rule}; it becomes part of the "
                         f"{crm} request, so other characters are refused")


# Old names, kept for compatibility: tables derived from the profiles (read when asked for,
# as the profiles are collected after this module is imported).
_DERIVED = {
    "CrmName": lambda: Literal[tuple(profiles())],
    "MATCHING_KEYS_BY_CRM": lambda: {n: set(p.matching_keys) for n, p in profiles().items()
                                     if p.matching_keys is not None},
    # `mode: mirror` deletes the CRM records of rows that left the source, so the CRM needs an
    # API to delete records (crm_sync/load/mirror.py). Why each CRM left out cannot mirror:
    "MIRROR_UNSUPPORTED": lambda: {n: p.mirror_unsupported for n, p in profiles().items()
                                   if p.mirror_unsupported},
    "NAME_PATTERNS": lambda: {n: {"object": p.object_pattern, "field": p.field_pattern}
                              for n, p in profiles().items()},
    "NAME_RULES": lambda: {n: p.name_rule for n, p in profiles().items()},
}


def __getattr__(name: str):
    if name in _DERIVED:
        return _DERIVED[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FieldMapping(BaseModel):
    """One CRM field and where its value comes from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str
    type: FieldType = "string"
    required: bool = False
    sensitive: bool = False


class SyncSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    source: str = Field(description="source table name")
    source_key: str = Field(description="column that identifies a source row")
    crm: str = Field(description="the CRM (a name in crm_sync.connectors.PROFILES)")
    object: str = Field(description="CRM object type / slug / sObject")
    matching_key: str = Field(
        description="CRM-side identifier: Superleap `id`, Brevo `ext_id`, HubSpot idProperty, "
        "Salesforce external id field"
    )
    matching_column: str | None = Field(
        default=None, description="source column holding the matching key's value"
    )
    matching_key_case_sensitive: bool = Field(
        default=False, description="Salesforce: the external id field is case-sensitive "
        "(otherwise two values differing only in case name one record; crm_sync/transform/matching.py)"
    )
    fields: dict[str, FieldMapping]
    attributes_json_column: str | None = Field(
        default=None,
        description="optional source column with a JSON object of extra attributes (Brevo)",
    )
    known_attributes: list[str] | None = Field(
        default=None,
        description="Brevo: the attributes the object's schema defines. Others would be "
        "silently ignored by Brevo, so they are reported as a warning and not sent",
    )
    mode: Literal["upsert", "update_only", "create_only", "mirror"] = "upsert"
    all_or_none: bool = False
    quarantine_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    batch_size: int | None = Field(default=None, ge=1)
    schedule: str | None = None
    max_unconfirmed_runs: int = Field(
        default=3, ge=1,
        description="runs a row may end unconfirmed (Brevo NOT_CONFIRMED: the CRM accepted it "
        "and then holds no such record) before its quarantine entry becomes permanent and it "
        "is no longer resent automatically")
    mirror_max_delete_share: float = Field(
        default=0.1, ge=0.0, le=1.0,
        description="mode mirror: a run that would delete more than this share of the sync's "
        "records deletes nothing and fails (a truncated source looks like mass deletion), "
        "unless its run config sets allow_mass_delete")

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value):
        # `crm_field: source_column` is shorthand for `crm_field: {column: source_column}`.
        if not isinstance(value, dict) or not value:
            raise ValueError("fields must be a non-empty mapping of CRM field -> source column")
        return {k: ({"column": v} if isinstance(v, str) else v) for k, v in value.items()}

    @field_validator("crm")
    @classmethod
    def _known_crm(cls, value: str) -> str:
        if value not in profiles():
            raise ValueError(f"unknown CRM {value!r}; known: {', '.join(sorted(profiles()))}")
        return value

    @field_validator("object")
    @classmethod
    def _object_name(cls, value: str, info):
        _check_name(info.data.get("crm"), "object", "object", value)
        return value

    @field_validator("matching_key")
    @classmethod
    def _matching_key_name(cls, value: str, info):
        _check_name(info.data.get("crm"), "field", "matching_key", value)
        return value

    @field_validator("fields")
    @classmethod
    def _field_names(cls, value: dict, info):
        for name in value:
            _check_name(info.data.get("crm"), "field", "field", name)
        return value

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
            raise ValueError("must be lower_snake_case (it becomes a Dagster asset name)")
        return value

    @model_validator(mode="after")
    def _matching_key_fits_crm(self):
        profile = _profile(self.crm)
        allowed = profile.matching_keys
        if allowed is not None and self.matching_key not in allowed:
            raise ValueError(
                f"{self.crm} matches records by {sorted(allowed)}, not {self.matching_key!r}"
            )
        if profile.matching_key_is_field and self.matching_key not in self.fields:
            raise ValueError(
                f"matching_key {self.matching_key!r} must also be a mapped field "
                f"(the {self.crm} upsert sends it as a property)"
            )
        return self

    @model_validator(mode="after")
    def _mode_fits_crm(self):
        reason = _profile(self.crm).mirror_unsupported
        if self.mode == "mirror" and reason:
            raise ValueError(f"mode 'mirror' is not available for {self.crm}: {reason}")
        return self

    @property
    def key_column(self) -> str | None:
        """Source column whose value identifies the CRM record, if any."""
        if self.matching_column:
            return self.matching_column
        mapping = self.fields.get(self.matching_key)
        return mapping.column if mapping else None

    @property
    def source_columns(self) -> list[str]:
        cols = [self.source_key, "updated_at", *(m.column for m in self.fields.values())]
        for extra in (self.matching_column, self.attributes_json_column):
            if extra:
                cols.append(extra)
        return list(dict.fromkeys(cols))

    @property
    def sensitive_fields(self) -> set[str]:
        return {name for name, m in self.fields.items() if m.sensitive}


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_date: str = "2026-11-01"
    syncs: list[SyncSpec]

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.syncs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sync names must be unique; repeated: {dupes}")
        return self

    def sync(self, name: str) -> SyncSpec:
        for s in self.syncs:
            if s.name == name:
                return s
        raise KeyError(f"no sync named {name!r}; known: {[s.name for s in self.syncs]}")


def load_spec(path: str | os.PathLike | None = None) -> Spec:
    """Read and validate a spec; errors name the file and the offending sync."""
    path = paths.spec_path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"sync spec not found: {path}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"sync spec {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"sync spec {path} must be a mapping with a `syncs` list")
    try:
        return Spec.model_validate(raw)
    except Exception as exc:  # pydantic.ValidationError: make it readable, name the sync
        raise SpecError(f"sync spec {path} is invalid:\n{_describe(exc, raw)}") from None


def _describe(exc, raw) -> str:
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
