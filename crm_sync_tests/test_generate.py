from __future__ import annotations

import filecmp

import pandas as pd

from crm_sync.devtools.generate import generate
from crm_sync.spec import PROJECT_ROOT


def test_generator_is_deterministic_and_matches_the_committed_data(tmp_path):
    sizes = generate(tmp_path)
    assert sizes == {"leads": 1500, "contacts": 1500, "companies": 600, "projects": 400}
    for table in sizes:
        assert filecmp.cmp(tmp_path / f"{table}.csv", PROJECT_ROOT / "data" / f"{table}.csv",
                           shallow=False), f"data/{table}.csv is not what the generator writes"


def test_generated_data_has_a_few_percent_of_documented_bad_rows(tmp_path):
    generate(tmp_path)
    leads = pd.read_csv(tmp_path / "leads.csv", dtype=str, keep_default_na=False)
    spaced = leads["email"].str.contains(" ")
    nameless = leads["name"] == ""
    bad_ids = leads["superleap_id"] != ""
    share = (spaced | nameless | bad_ids).mean()
    assert 0.01 < share < 0.06
    assert spaced.any() and nameless.any() and bad_ids.any()
    assert leads["email"].str.contains(r"\+").any()  # plus-addressed, valid
    days = leads["updated_at"].str[:10].nunique()
    assert days == 7
    projects = pd.read_csv(tmp_path / "projects.csv", dtype=str, keep_default_na=False)
    assert projects["custom_fields"].str.count('"cf_').max() > 500


def test_scale_writes_larger_tables(tmp_path):
    sizes = generate(tmp_path, scale=3)
    assert sizes["leads"] == 4500
    assert len(pd.read_csv(tmp_path / "leads.csv")) == 4500


def test_days_spreads_the_same_rows_over_fewer_or_more_days(tmp_path):
    """The benchmark's partition-size control (bench/growth.py): the same tables, other days;
    other columns as with the default."""
    generate(tmp_path / "seven")
    generate(tmp_path / "one", days=1)
    generate(tmp_path / "three", days=3)
    seven, one, three = (pd.read_csv(tmp_path / d / "leads.csv", dtype=str,
                                     keep_default_na=False) for d in ("seven", "one", "three"))
    assert one["updated_at"].str[:10].unique().tolist() == ["2026-11-01"]
    assert three["updated_at"].str[:10].nunique() == 3 and len(three) == len(seven)
    same = [c for c in seven.columns if c != "updated_at"]
    assert one[same].equals(seven[same]) and three[same].equals(seven[same])
    assert (one["updated_at"].str[10:] == seven["updated_at"].str[10:]).all()  # same seconds
