"""crm_sync/state/ownership.py in small: the version stamps of source `_updated_at` values."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crm_sync.state.ownership import version_stamps


def _strftime_stamps(values: pd.Series) -> list[str | None]:
    # the reference: pandas' own formatting, what version_stamps wrote before (round 2)
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    text = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return [v if isinstance(v, str) else None for v in text.tolist()]


def test_stamps_are_utc_text_of_one_width_and_none_where_no_timestamp():
    values = pd.Series(["2026-11-01T10:00:00Z", "2026-11-01 10:00:00.123456789",
                        "2026-11-01T10:00:00+02:00", "2026-11-01", "not a time", None,
                        "1969-12-31T23:59:59.9999999Z"])
    assert version_stamps(values) == [
        "2026-11-01T10:00:00.000000Z", "2026-11-01T10:00:00.123456Z",
        "2026-11-01T08:00:00.000000Z", "2026-11-01T00:00:00.000000Z", None, None,
        "1969-12-31T23:59:59.999999Z"]
    assert version_stamps(pd.Series([], dtype=object)) == []


def test_stamps_are_the_same_text_as_pandas_strftime_on_random_values():
    rng = np.random.default_rng(7)
    nanos = pd.Timestamp("1960-01-01", tz="UTC").value + rng.integers(0, 3 * 10**18, 5_000)
    values = pd.Series(pd.to_datetime(nanos, utc=True).tz_convert("Asia/Kolkata")
                       .strftime("%Y-%m-%dT%H:%M:%S.%f%z"))
    values[::37] = "garbage"
    values[5::41] = None
    stamps = version_stamps(values)
    assert stamps == _strftime_stamps(values)
    assert {len(s) for s in stamps if s} == {27}
