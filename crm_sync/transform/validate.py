"""Validate one partition of a sync before anything is sent: valid rows go on, the others go to
quarantine with the rule, the column, the bad value and a message a person can act on."""

from __future__ import annotations

import hashlib
import json
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace

import pandas as pd
from pandera.errors import SchemaErrors

from crm_sync.transform import matching
from crm_sync.transform import safejson
from crm_sync.transform.convert import add_payloads
from crm_sync.transform.unchanged import SOURCE_DIGEST
from crm_sync.connectors import PROFILES
from crm_sync.state.masking import sensitive_names
from crm_sync.state.quarantine import QuarantineEntry, row_days
from crm_sync.connectors.profile import CREATE_MODES
from crm_sync.spec import SyncSpec
from crm_sync.spec_links import link_column
from crm_sync.errors import SourceTableError  # re-exported: its old home
from crm_sync.transform.schemas import (build_schema, create_requirements, required_fields,
                                        rule_of, rule_texts)

META_COLUMNS = ["_key", "_updated_at", "_crm_id", "_extra"]


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    failures: list[QuarantineEntry] = field(default_factory=list)
    rows_in: int = 0
    warnings: Counter = field(default_factory=Counter)
    unpartitioned: int = 0  # rows without a valid updated_at (in no partition), quarantined
    keyless: int = 0  # rows without a source key (quarantined under a digest of their values)
    # rows set aside before validation, unchanged (crm_sync/transform/unchanged.py): counted in
    # rows_in, so the share quarantined is of the whole partition
    unchanged_skipped: int = 0

    @property
    def by_rule(self) -> Counter:
        return Counter(rule for f in self.failures
                       for rule in (f.rules or f.error_code).split(","))

    @property
    def share_quarantined(self) -> float:
        """Share of the partition's own rows that failed (rows that belong to no partition are
        reported with every partition, so they do not count against one)."""
        rows = self.rows_in - self.unpartitioned
        return (len(self.failures) - self.unpartitioned) / rows if rows else 0.0


def _blank(series: pd.Series) -> pd.Series:
    """Missing values and empty or whitespace-only text, vectorized."""
    text = series.astype("string")
    return series.isna() | text.str.strip().eq("").fillna(True)


def _without_blanks(series: pd.Series) -> pd.Series:
    """`series` with its blank values (`_blank`) as None. Source columns are text or None
    (every reader hands them over so): for those, one pass in Python is several times cheaper
    than pandas' string methods plus `mask`, and gives the same values (`not v or
    v.isspace()` is `v.strip() == ""`: both use Python's definition of whitespace). Any other
    column goes the general way."""
    values = series.tolist()
    if not all(v is None or type(v) is str for v in values):
        return series.mask(_blank(series), None)
    return pd.Series([None if v is None or not v or v.isspace() else v for v in values],
                     index=series.index, dtype=object, name=series.name)


def to_crm_frame(spec: SyncSpec, source: pd.DataFrame) -> pd.DataFrame:
    """Rename source columns to CRM field names; empty strings become missing values."""
    missing = [c for c in spec.source_columns if c not in source.columns]
    if missing:
        raise SourceTableError(
            f"sync {spec.name!r}: source table {spec.source!r} has no column(s) {missing}; "
            f"it has {list(source.columns)}. Fix the table or the sync spec's field mapping.")
    columns = {crm_field: source[m.column] for crm_field, m in spec.fields.items()}
    columns["_key"] = source[spec.source_key]
    columns["_updated_at"] = source["updated_at"]
    profile = PROFILES[spec.crm]
    columns["_crm_id"] = source[spec.matching_column] if spec.matching_column and \
        profile.matching_column_is_record_id else pd.Series(None, index=source.index,
                                                            dtype=object)
    columns["_extra"] = source[spec.attributes_json_column] if spec.attributes_json_column \
        else pd.Series(None, index=source.index, dtype=object)
    for name, link in spec.associations.items():  # the target's key (crm_sync/load/links.py)
        columns[link_column(name)] = source[link.column]
    frame = pd.DataFrame(columns, index=source.index).astype(object)
    for name in frame.columns:
        frame[name] = _without_blanks(frame[name])
    if profile.measures_attributes:
        _add_record_measures(spec, frame)
    return frame


def _add_record_measures(spec: SyncSpec, frame: pd.DataFrame) -> None:
    """Attribute count and a lower bound of the record's size, for the CRM's limits (its
    profile's record rules check them)."""
    mapped = [c for c in spec.fields]
    count = frame[mapped].notna().sum(axis=1)
    size = sum(frame[c].astype("string").str.len().fillna(0) for c in mapped)
    extra = frame["_extra"]
    present = extra.notna()
    extra_counts = pd.Series(0, index=frame.index)
    if present.any():
        # One parse per row that has extra attributes: JSON has no vectorized parser.
        extra_counts[present] = extra[present].map(_attribute_count)
        size = size + extra.astype("string").str.len().fillna(0)
    frame["_attribute_count"] = (count + extra_counts).where(extra_counts >= 0, -1).astype(int)
    frame["_record_bytes"] = size.astype(int)


def _attribute_count(text) -> int:
    try:
        value = safejson.loads(text)
    except (TypeError, ValueError):
        return -1
    return len(value) if isinstance(value, dict) else -1


def validate_partition(spec: SyncSpec, source: pd.DataFrame,
                       partition: str | None = None) -> ValidationResult:
    """`partition`: the day the rows were read for, the quarantine's day of a failing row whose
    updated_at pandas cannot read (every other row's is the day of its updated_at)."""
    source = source.reset_index(drop=True)
    # Rows the source flagged as having no valid updated_at (`SourceResource.read_partition(...,
    # include_unpartitioned=True)`): they are in no daily partition, so they are quarantined
    # here rather than lost, and take no part in the checks of the partition's rows.
    orphan = source.pop("_no_partition").eq(True) if "_no_partition" in source.columns else None
    why = {c: source.pop(c) for c in _ORPHAN_COLUMNS if c in source.columns}
    digests = source.pop(SOURCE_DIGEST) if SOURCE_DIGEST in source.columns else None  # (kept)
    frame = to_crm_frame(spec, source)
    failures: dict[int, list[tuple[str, str, object]]] = {}
    unpartitioned = 0
    if orphan is not None and orphan.any():
        for idx in frame.index[orphan.to_numpy()]:
            failures[idx] = [_orphan_reason(frame, why, idx)]
        unpartitioned = len(failures)
    identities = keyless_identities(spec, source, frame, why.get("_malformed_key"))
    checked = frame.drop(index=list(failures)) if failures else frame

    # Two rows that would upsert the same CRM record: keep the newest by updated_at.
    # (pandera's `unique` flags every copy; here the newest must go on, so pandas decides.)
    winners = _duplicates(spec, checked, failures)
    _creates_without(spec, checked, failures)

    try:
        # inplace: nothing is coerced, so pandera need not copy the partition first
        build_schema(spec).validate(checked, lazy=True, inplace=True)
    except SchemaErrors as exc:
        # pandera's frames (in the traceback) hold copies of the partition: free them now
        # rather than whenever the garbage collector next finds the cycle.
        traceback.clear_frames(exc.__traceback__)
        cases = exc.failure_cases
        whole_table = cases[cases["index"].isna()]
        if not whole_table.empty:
            raise SourceTableError(f"sync {spec.name!r}: " + "; ".join(
                f"{r.column}: {r.check}" for r in whole_table.itertuples())) from None
        for case in cases.itertuples():
            rule = rule_of(str(case.column), str(case.check))
            value = case.failure_case
            if case.column in ("_attribute_count", "_record_bytes") and rule == "attributes_json":
                value = frame.at[int(case.index), "_extra"]
            failures.setdefault(int(case.index), []).append((rule, case.column, value))

    order = sorted(failures)
    bad = frame.loc[order, ["_key", *spec.fields]].to_dict("index") if order else {}
    days = dict(zip(order, row_days(frame.loc[order, "_updated_at"]))) if order else {}
    bad_rows = [_failure(spec, bad[idx], idx, failures[idx], days[idx] or partition,
                         identity=identities.get(idx), note=_flag(why, "_out_of_range", idx))
                for idx in order]
    bad_rows = _name_winners(spec, order, bad_rows, winners, sensitive_names(spec))
    valid = frame.drop(index=list(failures))
    warnings = unknown_attributes(spec, valid)
    valid, unconvertible = _typed(spec, valid, partition, digests)
    by_row = dict(zip(order, bad_rows)) | unconvertible  # failures in row order
    return ValidationResult(valid=valid, failures=[by_row[i] for i in sorted(by_row)],
                            rows_in=len(frame), warnings=warnings, unpartitioned=unpartitioned,
                            keyless=sum(k.startswith("<no ") for k in identities.values()))


def _typed(spec: SyncSpec, valid: pd.DataFrame, partition: str | None, digests=None
           ) -> tuple[pd.DataFrame, dict[int, QuarantineEntry]]:
    """The valid rows with their typed payload and digest (crm_sync/transform/convert.py), and the
    entries (by row) of the rows whose values cannot be converted (a number too large for a
    float, a JSON column that holds no object): those are quarantined here, not sent.
    `digests`: the rows' source digests, carried to the runner unchecked (unchanged.py)."""
    reasons = add_payloads(spec, valid)
    if digests is not None:
        valid[SOURCE_DIGEST] = digests.reindex(valid.index)
    if not reasons:
        return valid, {}
    order = list(reasons)
    rows = valid.loc[order].to_dict("index")
    days = row_days(valid.loc[order, "_updated_at"])
    entries = {idx: QuarantineEntry.conversion_failure(spec, rows[idx]["_key"], reasons[idx],
                                                       rows[idx], day or partition)
               for idx, day in zip(order, days)}
    return valid.drop(index=order), entries


# Columns the source adds to rows that belong to no partition (crm_sync/extract/sources.py): why.
_ORPHAN_COLUMNS = ("_out_of_range", "_malformed_key", "_malformed")
# Rules of rows that belong to no daily partition: reported with every partition.
NO_PARTITION_RULES = ("updated_at", "updated_at_out_of_range", "malformed_source_row")


def _flag(why: dict, column: str, idx: int):
    series = why.get(column)
    value = None if series is None else series.iat[idx]
    return None if value is None or pd.isna(value) else value


def _orphan_reason(frame: pd.DataFrame, why: dict, idx: int) -> tuple[str, str, object]:
    """Why a row of no partition is quarantined: a CSV line that cannot be read, an
    updated_at outside the partitions, or one that is missing or not a timestamp."""
    if _flag(why, "_malformed_key", idx) is not None:
        return ("malformed_source_row", "_malformed", _flag(why, "_malformed", idx))
    rule = "updated_at_out_of_range" if _flag(why, "_out_of_range", idx) else "updated_at"
    return (rule, "_updated_at", frame.at[idx, "_updated_at"])


def keyless_identities(spec: SyncSpec, source: pd.DataFrame, frame: pd.DataFrame,
                       malformed: pd.Series | None = None) -> dict[int, str]:
    """A stable quarantine key for each row without a source key: a digest of the row's
    source values (the same row gets the same entry on every run and in every partition;
    two rows get two). A CSV line that cannot be read is named by its line and digest."""
    identities: dict[int, str] = {}
    for idx in frame.index[frame["_key"].isna().to_numpy()]:
        line = None if malformed is None else malformed.iat[idx]
        if line is not None and not pd.isna(line):
            identities[idx] = str(line)
            continue
        values = {str(k): (None if v is None or (not isinstance(v, str) and pd.isna(v))
                           else str(v)) for k, v in source.loc[idx].items()}
        digest = hashlib.sha256(json.dumps(values, sort_keys=True, ensure_ascii=False)
                                .encode()).hexdigest()[:16]
        identities[idx] = f"<no {spec.source_key}: {digest}>"
    return identities


def _duplicates(spec: SyncSpec, checked: pd.DataFrame, failures: dict) -> dict[int, str]:
    """Flag every row but the newest of each group sharing a source key, or a matching value
    as the CRM compares it (crm_sync/transform/matching.py); return row -> the source key that won a
    matching value."""
    winners: dict[int, str] = {}
    names = [("_key", checked["_key"])]
    column = matching.frame_column(spec)
    if column not in (None, "_key"):
        values = matching.matching_values(spec, checked)
        if values is not None:
            names.append((column, values))
    for col, values in names:
        # Only rows whose value occurs more than once are sorted (a hash pass finds them).
        shared = values.notna() & values.duplicated(keep=False)
        if not shared.any():
            continue
        ordered = pd.DataFrame({"value": values[shared],
                                "at": checked.loc[shared, "_updated_at"]}).sort_values(
            "at", kind="stable")
        newest = ordered.drop_duplicates(subset=["value"], keep="last")
        winner_of = dict(zip(newest["value"], checked.loc[newest.index, "_key"]))
        dupes = ordered[ordered.duplicated(subset=["value"], keep="last")]
        for idx, value in zip(dupes.index, dupes["value"]):
            failures.setdefault(idx, []).append(("duplicate_key", col, checked.at[idx, col]))
            if col != "_key":
                winners.setdefault(idx, winner_of[value])
    return winners


def _creates_without(spec: SyncSpec, checked: pd.DataFrame, failures: dict) -> None:
    """Rows that would create a record (no known CRM id in the row; every row in mode
    create_only / append) without a field the pulled schema requires on create."""
    fields = [f for f in create_requirements(spec) if f not in required_fields(spec)]
    if not fields:
        return
    creates = checked["_crm_id"].isna() if spec.mode not in CREATE_MODES else \
        pd.Series(True, index=checked.index)
    for name in fields:
        for idx in checked.index[(creates & checked[name].isna()).to_numpy()]:
            failures.setdefault(idx, []).append((f"crm_required:{name}", name, None))


def _name_winners(spec: SyncSpec, order: list, entries: list[QuarantineEntry],
                  winners: dict[int, str], sensitive: frozenset[str]) -> list[QuarantineEntry]:
    """A row that lost its matching value says which row won it (by source key, unless the
    source key is sensitive)."""
    named = []
    for idx, entry in zip(order, entries):
        if idx in winners and entry.error_code == "DUPLICATE_MATCHING_KEY":
            kept = "" if spec.source_key in sensitive else \
                f"; the row kept is {spec.source_key} {winners[idx]!r}"
            entry = replace(entry, message=entry.message + f" ({matching.describe(spec)}{kept})")
        named.append(entry)
    return named


def unknown_attributes(spec: SyncSpec, frame: pd.DataFrame) -> Counter:
    """Attributes the CRM would silently ignore (Brevo drops attributes its object schema does
    not define): name -> rows that carry it. They are reported, and not sent."""
    if spec.known_attributes is None:
        return Counter()
    known = set(spec.known_attributes)
    unknown = Counter(f for f in spec.fields if f not in known and f != spec.matching_key
                      for _ in range(int(frame[f].notna().sum())))
    for text in frame["_extra"].dropna():
        try:
            unknown.update(k for k in json.loads(text) if k not in known)
        except (TypeError, ValueError, AttributeError):
            continue
    return unknown


def _source_column(spec: SyncSpec, column: str) -> str:
    if column in spec.fields:
        return spec.fields[column].column
    return {"_key": spec.source_key, "_crm_id": spec.matching_column, "_updated_at": "updated_at",
            "_extra": spec.attributes_json_column,
            "_attribute_count": spec.attributes_json_column}.get(column) or column


def _failure(spec: SyncSpec, row: dict, idx: int, reasons: list, day: str | None,
             identity: str | None = None, note: str | None = None) -> QuarantineEntry:
    """The quarantine entry of one failing row (`row`: its _key and mapped fields; `day`: the
    day of its updated_at; `identity`: its key when it has no source key; `note`: added to the
    message). Masked where it enters the store (crm_sync/state/quarantine.py)."""
    rules = list(dict.fromkeys(r for r, _, _ in reasons))
    first_rule, column, value = reasons[0]
    texts = rule_texts(spec)
    code = texts.get(first_rule, (first_rule.upper(), ""))[0]
    messages = [
        texts.get(rule, (rule, "{column} failed check " + rule))[1].format(
            column=_source_column(spec, col), value=val)
        for rule, col, val in reasons
    ]
    key = row["_key"]
    return QuarantineEntry.validation_failure(
        spec, key if key is not None else identity or f"<row {idx + 1} without {spec.source_key}>",
        error_code=code, rules=",".join(rules),
        column_name=None if column == "_malformed" else _source_column(spec, column),
        value=value, message="; ".join(dict.fromkeys(messages + ([note] if note else []))),
        payload={k: row[k] for k in spec.fields},
        # a row of no daily partition has no day (its updated_at is none, or out of range)
        day=None if first_rule in NO_PARTITION_RULES else day)
