"""The rules `crm_sync.transform.validate.validate_partition` applies (pandera schemas plus the pandas
duplicate check), written out by hand as vectorized pandas, to price pandera's overhead.

It reads the source table itself (no crm_sync.transform.validate code), and returns one verdict per row:
the set of rules the row breaks (empty: valid). The benchmark asserts that both agree row for
row. A rule added to the schemas must be added here too, or that assertion fails.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from crm_sync.connectors.brevo import BREVO_MAX_ATTRIBUTES, BREVO_MAX_BODY_BYTES
from crm_sync.connectors.superleap import SUPERLEAP_ID_PATTERN
from crm_sync.spec import SyncSpec
from crm_sync.connectors import PROFILES
from crm_sync.transform.schemas import _FORMAT_CHECKS, required_fields


def _blank(series: pd.Series) -> np.ndarray:
    """Missing, empty or whitespace-only."""
    return (series.isna() | series.str.strip().eq("")).to_numpy()


def _fails(series: pd.Series, present: np.ndarray, pattern: str) -> np.ndarray:
    """Present values that do not match the pattern (re.match, as pandera's str_matches)."""
    return present & ~series.str.match(pattern).eq(True).to_numpy()


def verdicts(spec: SyncSpec, source: pd.DataFrame) -> list[frozenset[str]]:
    """Per row of `source`, the rules it breaks."""
    source = source.reset_index(drop=True)
    n = len(source)
    rules: dict[str, np.ndarray] = {}

    def add(rule: str, mask: np.ndarray) -> None:
        rules[rule] = rules[rule] | mask if rule in rules else mask

    required = required_fields(spec)
    present_fields: dict[str, np.ndarray] = {}
    for name, mapping in spec.fields.items():
        column = source[mapping.column]
        blank = _blank(column)
        present = ~blank
        present_fields[name] = present
        add("nul_character", present & column.str.contains("\x00", regex=False)
            .eq(True).to_numpy())
        if mapping.type in _FORMAT_CHECKS:
            rule, pattern = _FORMAT_CHECKS[mapping.type]
            add(rule, _fails(column, present, pattern))
        if name in required:
            add("required", blank)
        refused = PROFILES[spec.crm].matching_value_refused  # Salesforce: no record ids
        if refused and name == spec.matching_key:
            add(refused.rule, _fails(column, present, refused.bound))
    key = source[spec.source_key]
    key_blank = _blank(key)
    add("required", key_blank)
    profile = PROFILES[spec.crm]
    if profile.matching_column_is_record_id and spec.matching_column:  # Superleap's own ids
        crm_id = source[spec.matching_column]
        add("superleap_id_format", _fails(crm_id, ~_blank(crm_id), SUPERLEAP_ID_PATTERN))
    if profile.measures_attributes:
        _brevo_limits(spec, source, present_fields, add)

    _duplicate_rules(spec, source, key, key_blank, present_fields, n, add)

    names = list(rules)
    matrix = np.vstack([rules[r] for r in names]) if names else np.zeros((0, n), dtype=bool)
    failing = matrix.any(axis=0)
    result = [frozenset()] * n
    for row in np.flatnonzero(failing):
        result[row] = frozenset(names[i] for i in np.flatnonzero(matrix[:, row]))
    return result


def _duplicate_rules(spec: SyncSpec, source: pd.DataFrame, key, key_blank,
                     present_fields: dict[str, np.ndarray], n: int, add) -> None:
    """Two rows for one record: all but the newest by updated_at (stable) are duplicates."""
    profile = PROFILES[spec.crm]
    updated = source["updated_at"].where(~_blank(source["updated_at"]), None)
    match_field = spec.matching_key if spec.matching_key in spec.fields else None
    groups = [("_key", key, key_blank)]
    if match_field:
        groups.append((match_field, source[spec.fields[match_field].column],
                       ~present_fields[match_field]))
    elif profile.matching_column_is_record_id and spec.matching_column:
        # the CRM's own record id names the record (Superleap), malformed or not
        record_ids = source[spec.matching_column]
        groups.append((spec.matching_column, record_ids, _blank(record_ids)))
    for name, column, blank in groups:
        values = column.where(~blank, None)
        shared = ~blank & values.duplicated(keep=False).to_numpy()
        if shared.any():
            rows = pd.DataFrame({"v": values[shared], "u": updated[shared]})
            rows = rows.sort_values("u", kind="stable")
            older = rows.index[rows.duplicated(subset=["v"], keep="last")]
            mask = np.zeros(n, dtype=bool)
            mask[older] = True
            add("duplicate_key", mask)


def _brevo_limits(spec: SyncSpec, source: pd.DataFrame, present: dict[str, np.ndarray],
                  add) -> None:
    """Brevo: at most 500 attributes (mapped + the JSON column's) and 1,000,000 bytes."""
    count = np.sum([present[name] for name in spec.fields], axis=0)
    size = np.sum([source[m.column].where(present[name], "").str.len().to_numpy()
                   for name, m in spec.fields.items()], axis=0)
    extra_count = np.zeros(len(source), dtype=np.int64)
    if spec.attributes_json_column:
        extra = source[spec.attributes_json_column]
        has = ~_blank(extra)
        if has.any():
            extra_count[has] = [_attribute_count(text) for text in extra[has]]
            size = size + extra.where(has, "").str.len().to_numpy()
    total = np.where(extra_count >= 0, count + extra_count, -1)
    add("attributes_json", total < 0)
    add("max_attributes", total > BREVO_MAX_ATTRIBUTES)
    add("max_record_bytes", size > BREVO_MAX_BODY_BYTES)


def _attribute_count(text: str) -> int:
    def refuse(constant):
        raise ValueError(constant)

    def finite(number: str) -> float:
        value = float(number)
        if value in (float("inf"), float("-inf")):
            raise ValueError(number)
        return value

    try:
        value = json.loads(text, parse_constant=refuse, parse_float=finite)
    except ValueError:
        return -1
    return len(value) if isinstance(value, dict) else -1


def pipeline_verdicts(result, rows: int) -> list[frozenset[str]]:
    """The same per-row verdicts from a `ValidationResult` (its valid frame keeps the rows'
    positions; its failures are in row order)."""
    valid = set(result.valid.index)
    failing = [i for i in range(rows) if i not in valid]
    if len(failing) != len(result.failures):
        raise AssertionError(f"{len(failing)} failing rows but {len(result.failures)} failures")
    verdict = [frozenset()] * rows
    for row, failure in zip(failing, result.failures):
        verdict[row] = frozenset((failure.rules or failure.error_code).split(","))
    return verdict
