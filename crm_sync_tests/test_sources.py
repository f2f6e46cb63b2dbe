"""The source resource reads one day of a table from CSV, a DuckDB file or a SQL database."""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb
import pandas as pd
import pytest
import sqlalchemy as sa

from crm_sync.extract.sources import SourceError, SourceResource
from crm_sync.spec import PROJECT_ROOT

DAY = (datetime(2026, 11, 2, tzinfo=timezone.utc), datetime(2026, 11, 3, tzinfo=timezone.utc))


def _expected() -> pd.DataFrame:
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    return leads[leads["updated_at"].str.startswith("2026-11-02")]


def test_csv_default_reads_exactly_the_partition_day():
    frame = SourceResource().read_partition("leads", *DAY)
    expected = _expected()
    assert sorted(frame["lead_id"]) == sorted(expected["lead_id"])
    assert frame["updated_at"].str.startswith("2026-11-02").all()


def test_duckdb_file_and_sql_url_give_the_same_rows(tmp_path):
    leads = pd.read_csv(PROJECT_ROOT / "data" / "leads.csv", dtype=str, keep_default_na=False)
    db = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute("CREATE TABLE leads AS SELECT * FROM leads")
    from_duckdb = SourceResource(duckdb_path=str(db)).read_partition("leads", *DAY)

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
    leads.to_sql("leads", engine, index=False)
    engine.dispose()
    from_sql = SourceResource(url=f"sqlite:///{tmp_path / 'crm.sqlite'}").read_partition(
        "leads", *DAY)

    expected = sorted(_expected()["lead_id"])
    assert sorted(from_duckdb["lead_id"]) == expected
    assert sorted(from_sql["lead_id"]) == expected


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="'invoices' not found"):
        SourceResource(data_dir=str(tmp_path)).read_partition("invoices", *DAY)
    with pytest.raises(SourceError, match="invalid table name"):
        SourceResource().read_partition("leads; drop table x", *DAY)
