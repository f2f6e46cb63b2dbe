"""Unchanged rows, set aside before pandas: a partition's rows that are exactly what the CRM
last confirmed cost one digest each and never reach pandas, pandera or the planner.

Each row of the source partition (the pyarrow Table `source_<table>` materializes) gets a
*source digest*, computed in DuckDB over the Arrow table: a hash of the row as read (every
column) and of the sync's *fingerprint*, everything
else that decides the row's verdict and payload (the sync's spec as JSON, the pulled CRM
schema its checks come from, crm_sync's version). The sync store keeps it per (sync,
source_key), in `sync_state.source_digest`, written with the state of a row the CRM confirmed
and for a row the runner found unchanged (crm_sync/load/runner.py `_record`); a row that
fails, is quarantined, skipped by the mode or superseded gets none (a quarantined one loses
it). The next run fetches the stored digests of the day's keys (one query; DuckDB's sqlite /
postgres extensions are not used: the store hands them over in Python) and drops, in Arrow,
the rows whose digest matches: the runner would have found them unchanged.

Never dropped, because their verdict depends on more than the row itself: rows of no
partition (`_no_partition`), rows without a key, keys that occur more than once in the
partition and rows whose matching value (crm_sync/transform/matching.py, as the CRM compares
it) another row of the partition shares (validation's duplicate rules compare rows within the
partition), keys in the sync's quarantine (a row reverted to its synced version must leave
it); nothing is dropped in a full resync (the upsert then validates the whole partition
itself, crm_sync/pipeline/validated_rows.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import Counter
from dataclasses import dataclass
from importlib import metadata

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from crm_sync.connectors import PROFILES
from crm_sync.spec import SyncSpec
from crm_sync.transform import matching

SOURCE_DIGEST = "_source_digest"  # column: the row's source digest (to the runner)
# The validated frame's attribute (DataFrame.attrs, pickled with it): rows set aside here.
SKIPPED = "rows_unchanged_skipped"
# Bumped when what a source digest covers changes (every stored digest then misses once).
DIGEST_FORMAT = "s1"
_POS = "__crm_sync_pos"
# One in-memory DuckDB per thread, kept: opening one costs 0.15-0.4 s on the bench machine
# (profiled), more than the digests of a partition.
_DUCKDB = threading.local()


def _duckdb():
    if getattr(_DUCKDB, "conn", None) is None:
        _DUCKDB.conn = duckdb.connect()
    return _DUCKDB.conn


@dataclass
class Prefiltered:
    rows: pa.Table | pd.DataFrame  # the rows that go on (with their SOURCE_DIGEST column)
    skipped: int  # unchanged rows set aside


@functools.cache
def _version() -> str:
    try:
        return metadata.version("crm_sync")
    except metadata.PackageNotFoundError:  # (run from a checkout that is not installed)
        return "unknown"


def fingerprint(sync: SyncSpec) -> str:
    """What besides the row decides its verdict and payload, as one digest."""
    pulled = sync.crm_schema
    parts = [DIGEST_FORMAT, _version(), sync.model_dump_json(),
             pulled.schema.to_json() if pulled is not None else ""]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def with_digests(sync: SyncSpec, table: pa.Table) -> pa.Table:
    """The table with its rows' source digests (column SOURCE_DIGEST), computed in DuckDB:
    its 64-bit `hash` of the fingerprint and every column (as the payload digests are 64-bit,
    crm_sync/transform/convert.py; md5 of the row as JSON cost 10x more in a profile)."""
    if SOURCE_DIGEST in table.column_names:
        table = table.drop_columns([SOURCE_DIGEST])
    columns = ", ".join(_quoted(name) for name in table.column_names)
    salt = json.dumps([fingerprint(sync), duckdb.__version__, table.column_names])
    con = _duckdb()
    try:
        con.register("source_rows", table)
        # (preserve_insertion_order, DuckDB's default: a projection keeps the table's order)
        # B608: the only names are the table's columns, quoted; the salt is a parameter
        digests = con.sql(
            f"SELECT CAST(hash($salt, {columns}) AS VARCHAR) FROM source_rows",  # nosec B608
            params={"salt": salt}).to_arrow_table()
    finally:
        con.unregister("source_rows")
    return table.append_column(SOURCE_DIGEST, digests.column(0).cast(pa.string()))


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def prefilter(sync: SyncSpec, table: pa.Table, store, enabled: bool = True) -> Prefiltered:
    """The partition's rows less the unchanged ones (`enabled` False: a full resync, every
    row goes on); `store`: the SyncStore holding the stored digests. Row by row in Python
    only the candidates' keys and digests, which the store takes and gives as Python objects:
    the rest is Arrow's and numpy's (a partition may be a million rows)."""
    table = with_digests(sync, table)
    if not enabled or table.num_rows == 0 or sync.source_key not in table.column_names:
        return Prefiltered(table, 0)
    keys, positions = _candidates(sync, table)
    if not len(keys):
        return Prefiltered(table, 0)
    keys = keys.to_pylist()
    stored = store.source_digests(sync.name, keys)
    if not stored:
        return Prefiltered(table, 0)
    same = pc.fill_null(pc.equal(table.column(SOURCE_DIGEST).take(positions),
                                 pa.array([stored.get(k) for k in keys], pa.string())), False)
    drop = np.zeros(table.num_rows, dtype=bool)
    drop[positions.filter(same).to_numpy()] = True
    drop[list(_sharing_matching_values(sync, table))] = False
    if not drop.any():
        return Prefiltered(table, 0)
    return Prefiltered(table.filter(pa.array(~drop)), int(drop.sum()))


def _candidates(sync: SyncSpec, table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """(keys as the store keeps them: text, their positions) of the rows that may be set
    aside: in a partition, with a key that no other row of the partition has."""
    key = table.column(sync.source_key).combine_chunks()
    if not pa.types.is_string(key.type):  # (a frame's column of other values: as DuckDB says)
        return _candidates_in_duckdb(sync, table)
    codes = pc.dictionary_encode(key).indices.to_numpy(zero_copy_only=False)  # (NaN: no key)
    present = ~np.isnan(codes) if codes.dtype.kind == "f" else np.ones(len(codes), bool)
    ints = np.where(present, codes, 0).astype(np.int64)
    once = np.bincount(ints[present], minlength=1)[ints] == 1
    # (RE2's \s, as DuckDB's regexp_full_match(k, '\s*') reads it: blank text is no key)
    blank = pc.fill_null(pc.match_substring_regex(key, r"^\s*$"), True).to_numpy(
        zero_copy_only=False)
    keep = present & once & ~blank
    if "_no_partition" in table.column_names:
        keep &= ~pc.fill_null(table.column("_no_partition").cast(pa.bool_()), False).to_numpy(
            zero_copy_only=False)
    positions = pa.array(np.flatnonzero(keep), pa.int64())
    return key.take(positions), positions


def _candidates_in_duckdb(sync: SyncSpec, table: pa.Table) -> tuple[pa.Array, pa.Array]:
    """`_candidates` of a key column that is not text: its values cast to text by DuckDB."""
    columns = [sync.source_key] + (["_no_partition"] if "_no_partition" in table.column_names
                                   else [])
    rows = table.select(columns).append_column(_POS, pa.array(range(table.num_rows)))
    orphan = 'COALESCE(CAST("_no_partition" AS BOOLEAN), false)' if len(columns) > 1 \
        else "false"
    key = _quoted(sync.source_key)
    con = _duckdb()
    try:
        con.register("keys", rows)
        # B608: the only name is the spec's source key, quoted; no value is inlined
        found = con.sql(
            f"SELECT k, pos FROM (SELECT CAST({key} AS VARCHAR) AS k, "  # nosec B608
            f"{_quoted(_POS)} AS pos, {orphan} AS orphan, count(*) OVER (PARTITION BY "
            f"CAST({key} AS VARCHAR)) AS n FROM keys) "
            "WHERE n = 1 AND NOT orphan AND k IS NOT NULL AND NOT regexp_full_match(k, '\\s*')"
        ).to_arrow_table()
    finally:
        con.unregister("keys")
    return (found.column("k").combine_chunks().cast(pa.string()),
            found.column("pos").combine_chunks().cast(pa.int64()))


def _sharing_matching_values(sync: SyncSpec, table: pa.Table) -> set[int]:
    """Positions of the rows whose matching value, as the CRM compares it, another row of the
    partition shares (or every row, when the matching value's column cannot be told)."""
    frame_column = matching.frame_column(sync)
    if frame_column in (None, "_key"):  # none, or the key (those are unique already)
        return set()
    if frame_column in sync.fields:
        column = sync.fields[frame_column].column
    elif frame_column == "_crm_id":
        if not (sync.matching_column and PROFILES[sync.crm].matching_column_is_record_id):
            return set()
        column = sync.matching_column
    else:
        return set(range(table.num_rows))
    if column not in table.column_names:
        return set(range(table.num_rows))
    normalise = matching.normaliser(sync)
    # as validation reads them: blank text is no value (validate.py `_without_blanks`)
    values = [None if v is None or (type(v) is str and (not v or v.isspace()))
              else normalise(v) for v in table.column(column).to_pylist()]
    counts = Counter(v for v in values if v is not None)
    return {pos for pos, v in enumerate(values) if v is not None and counts[v] > 1}


def as_frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The rows as the pandas frame validation reads (what `read_partition` returned)."""
    return table if isinstance(table, pd.DataFrame) else table.to_pandas()


def as_table(rows: pa.Table | pd.DataFrame) -> pa.Table | None:
    """A source partition as a pyarrow Table (a frame stored before sources were Arrow), or
    None when Arrow cannot hold a column of it (values of several types, from a SQL source)."""
    if isinstance(rows, pa.Table):
        return rows
    try:
        return pa.Table.from_pandas(rows, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
