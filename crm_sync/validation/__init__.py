"""Validate one partition of a sync before anything is sent: valid rows go on, the others go to
quarantine with the rule, the column, the bad value and a message a person can act on."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pandas as pd
from pandera.errors import SchemaErrors

from crm_sync.spec import SyncSpec
from crm_sync.validation.schemas import RULES, build_schema

META_COLUMNS = ["_key", "_updated_at", "_crm_id", "_extra"]


class SourceTableError(ValueError):
    """The source table itself is unusable (a mapped column is missing, ...)."""


@dataclass
class ValidationResult:
    valid: pd.DataFrame
    failures: list[dict] = field(default_factory=list)
    rows_in: int = 0

    @property
    def by_rule(self) -> Counter:
        return Counter(rule for f in self.failures for rule in f["rules"].split(","))


def to_crm_frame(spec: SyncSpec, source: pd.DataFrame) -> pd.DataFrame:
    """Rename source columns to CRM field names; empty strings become missing values."""
    missing = [c for c in spec.source_columns if c not in source.columns]
    if missing:
        raise SourceTableError(
            f"sync {spec.name!r}: source table {spec.source!r} has no column(s) {missing}; "
            f"it has {list(source.columns)}. Fix the table or the sync spec's field mapping.")
    frame = pd.DataFrame(index=source.index)
    for crm_field, mapping in spec.fields.items():
        frame[crm_field] = source[mapping.column]
    frame["_key"] = source[spec.source_key]
    frame["_updated_at"] = source["updated_at"]
    frame["_crm_id"] = source[spec.matching_column] if spec.matching_column and \
        spec.crm == "superleap" else None
    frame["_extra"] = source[spec.attributes_json_column] if spec.attributes_json_column else None
    frame = frame.astype(object)
    blank = frame.map(lambda v: v is None or (isinstance(v, float) and v != v) or
                      (isinstance(v, str) and not v.strip()))
    return frame.mask(blank, None)


def validate_partition(spec: SyncSpec, source: pd.DataFrame) -> ValidationResult:
    frame = to_crm_frame(spec, source.reset_index(drop=True))
    failures: dict[int, list[tuple[str, str, object]]] = {}

    # Two rows that would upsert the same CRM record: keep the newest by updated_at.
    # (pandera's `unique` flags every copy; here the newest must go on, so pandas decides.)
    key_col = spec.matching_key if spec.matching_key in frame.columns else "_key"
    for col in dict.fromkeys(["_key", key_col]):
        present = frame[frame[col].notna()]
        ordered = present.sort_values("_updated_at", kind="stable")
        dupes = ordered.index[ordered.duplicated(subset=[col], keep="last")]
        for idx in dupes:
            failures.setdefault(idx, []).append(("duplicate_key", col, frame.at[idx, col]))

    try:
        build_schema(spec).validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
        whole_table = cases[cases["index"].isna()]
        if not whole_table.empty:
            raise SourceTableError(f"sync {spec.name!r}: " + "; ".join(
                f"{r.column}: {r.check}" for r in whole_table.itertuples())) from None
        for case in cases.itertuples():
            rule = "required" if case.check in ("not_nullable", "required") else str(case.check)
            failures.setdefault(int(case.index), []).append((rule, case.column, case.failure_case))

    bad_rows = []
    for idx in sorted(failures):
        reasons = failures[idx]
        rules = list(dict.fromkeys(r for r, _, _ in reasons))
        first_rule, column, value = reasons[0]
        code, template = RULES.get(first_rule, (first_rule.upper(), "{column} failed " + first_rule))
        messages = [RULES.get(r, (r, "{column}: " + r))[1].format(column=c, value=v)
                    for r, c, v in reasons]
        bad_rows.append({
            "source_key": frame.at[idx, "_key"] if frame.at[idx, "_key"] is not None
            else f"<row {idx + 1} without {spec.source_key}>",
            "stage": "validation",
            "error_code": code,
            "rules": ",".join(rules),
            "column_name": spec.fields[column].column if column in spec.fields else column,
            "value": value,
            "message": "; ".join(dict.fromkeys(messages)),
            "payload": {k: frame.at[idx, k] for k in spec.fields},
        })
    valid = frame.drop(index=list(failures))
    return ValidationResult(valid=valid, failures=bad_rows, rows_in=len(frame))
