"""The sync spec: a YAML file that declares every sync (source table -> CRM object).

Assets, checks and schedules are generated from it, so adding a sync is a YAML edit.
The default spec is the project's ``syncs.yaml`` (crm_sync/paths.py); ``CRM_SYNC_SPEC`` points
elsewhere.
"""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from crm_sync import paths
from crm_sync.errors import SpecError  # re-exported: its old home
from crm_sync.spec_links import Association, check_associations

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


# A value in the `connections:` block: text (`${VAR}` is replaced by the environment variable
# when the source is opened) or `{env: VAR}`. Kept as written: the secret itself is read only
# when the source is opened (crm_sync/extract/connections.py), never stored in the spec.
class EnvValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


class Connection(BaseModel):
    """A named source connection: exactly one of a DuckDB file, a folder of CSV/Parquet files
    (one file per table) or a SQLAlchemy URL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    duckdb: str | EnvValue | None = Field(default=None, description="DuckDB database file")
    folder: str | EnvValue | None = Field(default=None,
                                          description="folder of <table>.csv / .parquet files")
    url: str | EnvValue | None = Field(default=None, description="SQLAlchemy URL", repr=False)

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [k for k in ("duckdb", "folder", "url") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a connection takes exactly one of duckdb, folder, url "
                             f"(got {given or 'none'})")
        return self


_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SourceRef(BaseModel):
    """`source: {connection: NAME, table: T}` or `{connection: NAME, query: "SELECT ..."}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connection: str | None = None
    table: str | None = Field(default=None, pattern=_IDENT)
    query: str | None = None

    @model_validator(mode="after")
    def _table_or_query(self):
        if (self.table is None) == (self.query is None):
            raise ValueError("a source takes exactly one of table, query")
        if self.query is not None and self.connection is None:
            raise ValueError("a query source needs a connection (the connections: block)")
        return self


class SyncSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    source: str = Field(description="source table name (a query source: the sync's name)")
    source_connection: str | None = Field(
        default=None, description="the connection (spec `connections:`) the source is read "
        "from; none: the `source` resource (today's default)")
    source_query: str | None = Field(default=None, description="a SQL query read as the source")
    cursor_column: str = Field(default="updated_at", pattern=_IDENT,
                               description="the column whose day puts a row in a partition")
    source_key: str = Field(description="column that identifies a source row")
    crm: str = Field(description="the CRM (a name in crm_sync.connectors.PROFILES)")
    object: str = Field(description="CRM object type / slug / sObject")
    matching_key: str = Field(
        description="CRM-side identifier: Superleap `id`, Brevo `ext_id`, HubSpot idProperty, "
        "Salesforce external id field")
    matching_column: str | None = Field(
        default=None, description="source column holding the matching key's value")
    matching_key_case_sensitive: bool = Field(
        default=False, description="Salesforce: the external id field is case-sensitive "
        "(otherwise two values differing only in case name one record; crm_sync/transform/matching.py)")
    fields: dict[str, FieldMapping]
    attributes_json_column: str | None = Field(
        default=None, description="optional source column with a JSON object of extra "
        "attributes (Brevo)")
    known_attributes: list[str] | None = Field(
        default=None, description="Brevo: the attributes the object's schema defines. Others "
        "would be silently ignored by Brevo, so they are reported as a warning and not sent")
    mode: Literal["upsert", "update_only", "create_only", "mirror", "append"] = "upsert"
    all_or_none: bool = False
    quarantine_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # share of a run's sent rows the CRM rejected above which the upsert's WARN check fails
    alert_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    batch_size: int | None = Field(default=None, ge=1)
    bulk_threshold: int | None = Field(default=2000, ge=1)  # Salesforce Bulk API 2.0 (README)
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
    associations: dict[str, Association] = {}  # links to other syncs' records (spec_links.py)
    # The CRM object's pulled field schema (crm_sync/schema_files.py PulledSchema), set by
    # load_spec when crm_schemas/<crm>/<object>.json exists; validation reads it.
    _crm_schema: object = PrivateAttr(default=None)
    # The Connection of `source_connection` (set by Spec: the connections are the spec's).
    _connection: object = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _source_mapping(cls, data):
        # `source: {connection, table | query}` is kept as flat fields; `source` stays a name.
        if isinstance(data, dict) and isinstance(data.get("source"), dict):
            ref = SourceRef.model_validate(data["source"])
            data = {**data, "source": ref.table or data.get("name"),
                    "source_connection": ref.connection, "source_query": ref.query}
        return data

    @property
    def source_asset(self) -> str:
        """The source asset's name: `source_<table>` (the default connection),
        `source_<connection>_<table>` (a named one), plus `_by_<cursor_column>` when that is
        not `updated_at`; `source_<sync>` for a query."""
        if self.source_query is not None:
            return f"source_{self.name}"
        name = f"source_{self.source_connection}_{self.source}" if self.source_connection \
            else f"source_{self.source}"
        return name if self.cursor_column == "updated_at" else f"{name}_by_{self.cursor_column}"

    @property
    def connection(self):
        """The spec's Connection this sync reads (None: the `source` resource)."""
        return self._connection

    @property
    def crm_schema(self):
        """The pulled schema of the sync's object (PulledSchema), or None."""
        return self._crm_schema

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
        if reason := _profile(self.crm).mode_refusal(self):  # mirror, append
            raise ValueError(reason)
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
        cols = [self.source_key, "updated_at", self.cursor_column, *(m.column for m in self.fields.values())]
        extras = (self.matching_column, self.attributes_json_column,
                  *(a.column for a in self.associations.values()))
        return list(dict.fromkeys(cols + [c for c in extras if c]))

    @property
    def sensitive_fields(self) -> set[str]:
        return {name for name, m in self.fields.items() if m.sensitive}


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start_date: str = "2026-11-01"
    connections: dict[str, Connection] = Field(default_factory=dict)
    syncs: list[SyncSpec]

    @model_validator(mode="after")
    def _unique_names(self):
        names = [s.name for s in self.syncs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"sync names must be unique; repeated: {dupes}")
        return self

    @model_validator(mode="after")
    def _associations(self):
        check_associations(self)  # targets, CRMs, cycles (crm_sync/spec_links.py)
        return self

    @model_validator(mode="after")
    def _known_connections(self):
        for sync in self.syncs:
            if sync.source_connection and sync.source_connection not in self.connections:
                raise ValueError(
                    f"sync {sync.name!r}: unknown connection {sync.source_connection!r}; "
                    f"the connections: block names {sorted(self.connections) or 'none'}")
            sync._connection = self.connections.get(sync.source_connection or "")
            if sync.source_query is not None and sync._connection.folder is not None:
                raise ValueError(f"sync {sync.name!r}: a query source needs a duckdb or url "
                                 f"connection, not a folder")
        # One source asset reads one thing: syncs sharing an asset name must read it alike.
        seen: dict[str, SyncSpec] = {}
        for sync in self.syncs:
            other = seen.setdefault(sync.source_asset, sync)
            read = (sync.source_connection, sync.source, sync.source_query, sync.cursor_column)
            if (other.source_connection, other.source, other.source_query,
                    other.cursor_column) != read:
                raise ValueError(
                    f"syncs {other.name!r} and {sync.name!r} both name the source asset "
                    f"{sync.source_asset!r} but read it differently (connection, table, query "
                    f"or cursor_column); rename a sync or read the same source alike")
        return self

    def connection(self, name: str | None) -> Connection | None:
        return self.connections[name] if name else None

    def sync(self, name: str) -> SyncSpec:
        for s in self.syncs:
            if s.name == name:
                return s
        raise KeyError(f"no sync named {name!r}; known: {[s.name for s in self.syncs]}")


def load_spec(path: str | os.PathLike | None = None, check_schemas: bool = True) -> Spec:
    """Read and validate a spec file (default: the project's syncs.yaml); errors name the file
    and the offending sync (crm_sync/spec_load.py, shared with the CrmSync Component)."""
    from crm_sync.spec_load import read_spec_file

    return read_spec_file(path, check_schemas=check_schemas)
