"""Real source data through the real pipeline (Dagster, the sandbox over HTTP): timestamps as
SQLite and pandas write them, naive timestamps under another time zone, rows outside the
partitions, rows without a source key, malformed CSV lines and duplicate headers. Every row
ends in the CRM or the quarantine, never nowhere (issue 13, items 1, 2, 3, 6, 11)."""

from __future__ import annotations

import os
import subprocess  # nosec B404  # the CLI under another TZ, as a user runs it
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from crm_sync.pipeline.assets import build_assets
from crm_sync.pipeline.in_process import sync_partitions
from crm_sync.definitions import build_resources
from crm_sync.pipeline.automation import replay_job
from crm_sync.extract.sources import SourceError, SourceResource
from crm_sync.spec import PROJECT_ROOT, load_spec
from crm_sync_tests.conftest import stored, validation_checks
from crm_sync_tests.bundled_spec import bundled_raw

SYNC = "leads_to_superleap"
COLUMNS = ["lead_id", "superleap_id", "name", "email", "phone", "status", "source", "updated_at"]


def _spec(tmp_path: Path):
    """The bundled spec with only the Superleap lead sync (start_date 2026-11-01)."""
    base = bundled_raw()
    syncs = [{**s, "schedule": None} for s in base["syncs"] if s["name"] == SYNC]
    path = tmp_path / "syncs.yaml"
    path.write_text(yaml.safe_dump({"start_date": base["start_date"], "syncs": syncs}))
    return load_spec(path), path


def _lead(key: str | None, updated_at, **values) -> dict:
    return {"lead_id": key, "superleap_id": None, "name": f"Name {key}",
            "email": f"{(key or 'nokey').lower()}@example.com", "phone": None, "status": "new",
            "source": "web", "updated_at": updated_at, **values}


def _csv(tmp_path: Path, rows: list[dict]) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    pd.DataFrame(rows, columns=COLUMNS).to_csv(data / "leads.csv", index=False)
    return data


def _materialize(spec, source: SourceResource, day: str, raise_on_error: bool = True):
    assets = [a for a in build_assets(spec)
              if a.key.path[-1] in {"source_leads", f"validated_{SYNC}", SYNC}]
    return dg.materialize(assets, partition_key=day, raise_on_error=raise_on_error,
                          resources={**build_resources(), "source": source})


def _meta(result, node: str) -> dict:
    values = {}
    for mat in result.asset_materializations_for_node(node):
        values.update({k: getattr(v, "value", v) for k, v in mat.metadata.items()})
    return values


def _in_crm(sandbox) -> set[str]:
    return {r["external_id"] for r in stored(sandbox, "superleap", "lead")}


def _window(day: str) -> tuple[datetime, datetime]:
    start = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
    return start, start + pd.Timedelta(days=1)


# -- 1. text timestamps with a space (SQLite, pandas to_sql) ---------------------------------
def test_sqlite_text_timestamps_with_a_space_are_read_by_their_day(sandbox, store, tmp_path):
    rows = [_lead("D1-A", "2026-11-01 10:00:00"), _lead("D1-B", "2026-11-01 23:59:59.500"),
            _lead("D3-A", "2026-11-03 00:00:00"), _lead("D3-B", "2026-11-03 18:30:00"),
            _lead("D3-TZ", "2026-11-04 01:00:00+09:00"),  # 2026-11-03 16:00 UTC
            _lead("D4-A", "2026-11-04 10:00:00"), _lead("D4-Z", "2026-11-04T00:00:00Z")]
    db = tmp_path / "crm.sqlite"
    engine = sa.create_engine(f"sqlite:///{db}")
    pd.DataFrame(rows, columns=COLUMNS).to_sql("leads", engine, index=False)
    # and a typed column, as pandas writes a datetime64 column (text with a space, microseconds)
    typed = pd.DataFrame([_lead("D3-TYPED", None)], columns=COLUMNS)
    typed["updated_at"] = pd.to_datetime(["2026-11-03 07:00:00"])
    typed.to_sql("leads", engine, index=False, if_exists="append")
    engine.dispose()
    source = SourceResource(url=f"sqlite:///{db}")

    frame = source.read_partition("leads", *_window("2026-11-03"))
    assert sorted(frame["lead_id"]) == ["D3-A", "D3-B", "D3-TYPED", "D3-TZ"]
    fingerprints = source.day_fingerprints("leads")
    assert sorted(fingerprints) == ["2026-11-01", "2026-11-03", "2026-11-04"]
    assert fingerprints["2026-11-03"].startswith("4:")

    spec, _ = _spec(tmp_path)
    result = _materialize(spec, source, "2026-11-01")
    assert _meta(result, "source_leads")["rows"] == 2
    assert _in_crm(sandbox) == {"D1-A", "D1-B"}  # the first day's rows sync
    assert store.quarantine_frame().empty


def test_space_separated_timestamps_in_csv_and_duckdb_files(tmp_path):
    import duckdb

    rows = [_lead("A", "2026-11-03 10:00:00"), _lead("B", "2026-11-04 10:00:00")]
    data = _csv(tmp_path, rows)
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute(f"CREATE TABLE leads AS SELECT * REPLACE (CAST(updated_at AS TIMESTAMP) "
                     f"AS updated_at) FROM read_csv('{data / 'leads.csv'}', all_varchar=true)")
    for source in (SourceResource(data_dir=str(data)), SourceResource(duckdb_path=str(db))):
        assert list(source.read_partition("leads", *_window("2026-11-03"))["lead_id"]) == ["A"]


# -- 2. naive timestamps are UTC whatever the machine's zone ---------------------------------
def test_naive_timestamps_are_utc_under_another_time_zone(sandbox_url, sandbox, tmp_path):
    import duckdb

    _, spec_path = _spec(tmp_path)
    rows = [_lead("TOKYO-EARLY", "2026-11-01T05:00:00"), _lead("TOKYO-LATE", "2026-11-01 23:30:00"),
            _lead("NEXT-DAY", "2026-11-02T01:00:00")]
    data = _csv(tmp_path, rows)
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:  # a typed, naive TIMESTAMP column
        conn.execute(f"CREATE TABLE leads AS SELECT * REPLACE (CAST(updated_at AS TIMESTAMP) "
                     f"AS updated_at) FROM read_csv('{data / 'leads.csv'}', all_varchar=true)")
    env = {**os.environ, "TZ": "Asia/Tokyo", "CRM_SYNC_SPEC": str(spec_path),
           "CRM_SYNC_DATA_DIR": str(data), "CRM_SYNC_STORE": str(tmp_path / "store.sqlite"),
           "PYTHONPATH": str(PROJECT_ROOT)}
    probe = ("import time; from datetime import datetime, timezone as z; "
             "from crm_sync.extract.sources import SourceResource as S; "
             "w = (datetime(2026, 11, 1, tzinfo=z.utc), datetime(2026, 11, 2, tzinfo=z.utc)); "
             f"f = S(duckdb_path={str(tmp_path / 'w.duckdb')!r}).read_partition('leads', *w); "
             "print(time.strftime('%Z'), sorted(f['lead_id']))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,  # nosec
                         text=True, timeout=120, check=True).stdout
    assert out.split()[0] == "JST"  # the probe really ran in Tokyo time
    assert "['TOKYO-EARLY', 'TOKYO-LATE']" in out

    done = subprocess.run(  # nosec B603  # the CLI, as a user in Tokyo runs it
        [sys.executable, "-m", "crm_sync.cli", "backfill", SYNC, "--start", "2026-11-01",
         "--end", "2026-11-01"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _in_crm(sandbox) == {"TOKYO-EARLY", "TOKYO-LATE"}


# -- 3. rows outside every partition --------------------------------------------------------
@pytest.mark.parametrize("backend", ["csv", "sqlite"])
def test_rows_outside_the_partitions_are_quarantined_and_counted(sandbox, store, tmp_path,
                                                                 backend):
    rows = [_lead("IN-RANGE", "2026-11-01T08:00:00Z"),
            _lead("BEFORE-START", "2026-10-31T23:59:59Z"),
            _lead("YEAR-2031", "2031-01-01T00:00:00Z"),
            _lead("END-OF-TIME", "9999-12-31T23:59:59Z"),
            _lead("NOT-A-DATE", "yesterday")]  # (SQLite compared it as text, after every day)
    if backend == "csv":
        source = SourceResource(data_dir=str(_csv(tmp_path, rows)))
    else:
        engine = sa.create_engine(f"sqlite:///{tmp_path / 'crm.sqlite'}")
        pd.DataFrame(rows, columns=COLUMNS).to_sql("leads", engine, index=False)
        engine.dispose()
        source = SourceResource(url=f"sqlite:///{tmp_path / 'crm.sqlite'}")
    spec, _ = _spec(tmp_path)
    for day in ("2026-11-01", "2026-11-02"):  # reported with every partition, entered once
        result = _materialize(spec, source, day)
        assert _meta(result, "source_leads")["rows_out_of_range"] == 3
        assert _meta(result, "source_leads")["rows_without_valid_updated_at"] == 1
        [check] = validation_checks(result)
        assert check.passed  # rows of no partition count against none
    assert _in_crm(sandbox) == {"IN-RANGE"}
    q = store.quarantine_frame(SYNC).set_index("source_key")
    assert set(q.index) == {"BEFORE-START", "YEAR-2031", "END-OF-TIME", "NOT-A-DATE"}
    assert set(q.drop(index="NOT-A-DATE")["error_code"]) == {"UPDATED_AT_OUT_OF_RANGE"}
    assert q.loc["NOT-A-DATE", "error_code"] == "INVALID_UPDATED_AT"
    assert q["partition"].isna().all()
    assert "9999-12-31T23:59:59Z" in q.loc["END-OF-TIME", "message"]
    assert "2026-11-01" in q.loc["BEFORE-START", "message"]  # names the spec's start_date

    # The replay job (it knows no partitions) leaves them to the partition runs.
    defs = dg.Definitions(jobs=[replay_job(spec, {"superleap"})],
                          resources={**build_resources(), "source": source})
    assert defs.get_job_def("replay_quarantine").execute_in_process().success
    assert _in_crm(sandbox) == {"IN-RANGE"}
    assert len(store.quarantine_frame(SYNC)) == 4


# -- 6. rows without a source key ------------------------------------------------------------
def test_keyless_rows_get_one_stable_entry_each(sandbox, store, tmp_path):
    days = ["2026-11-01", "2026-11-02", "2026-11-03"]
    rows = []
    for i, day in enumerate(days):
        rows.append(_lead(f"K-{i}", f"{day}T08:00:00Z"))
        rows.append(_lead(None, f"{day}T09:00:00Z", name=f"Keyless {i}"))
    source = SourceResource(data_dir=str(_csv(tmp_path, rows)))
    spec, _ = _spec(tmp_path)
    resources = {**build_resources(), "source": source}

    sync_partitions(days, spec=spec, resources=resources, log=lambda *_: None)
    q = store.quarantine_frame(SYNC)
    assert len(q) == 3, list(q["source_key"])
    assert all(k.startswith("<no lead_id: ") for k in q["source_key"])
    assert set(q["error_code"]) == {"REQUIRED_FIELD_MISSING"}
    assert sorted(q["partition"]) == days
    first = sorted(q["source_key"])

    sync_partitions(days, spec=spec, resources=resources, log=lambda *_: None)  # a rerun
    assert sorted(store.quarantine_frame(SYNC)["source_key"]) == first
    result = _materialize(spec, source, "2026-11-02")
    assert _meta(result, f"validated_{SYNC}")["rows_without_source_key"] == 1
    assert _in_crm(sandbox) == {"K-0", "K-1", "K-2"}


# -- 11. malformed CSV lines, duplicate headers ----------------------------------------------
def _malformed_csv(tmp_path: Path) -> Path:
    data = _csv(tmp_path, [_lead("GOOD-1", "2026-11-03T08:00:00Z"),
                           _lead("GOOD-2", "2026-11-04T08:00:00Z")])
    path = data / "leads.csv"
    lines = path.read_text().splitlines()
    lines.insert(2, "TOO-MANY,,Many,many@example.com,,new,web,2026-11-03T09:00:00Z,surplus")
    lines.insert(3, "TOO-FEW,,Few,few@example.com,,new,2026-11-03T09:00:00Z")
    lines.insert(4, "HUGE,," + "x" * (2 * 1024 * 1024 + 10) + ",h@example.com,,new,web,"
                    "2026-11-03T09:00:00Z")
    lines.append("GOOD-3,,Name GOOD-3,good-3@example.com,,new,web,2026-11-03T10:00:00Z")
    path.write_text("\n".join(lines) + "\n")
    return data


def test_malformed_csv_lines_are_quarantined_and_the_rest_syncs(sandbox, store, tmp_path):
    data = _malformed_csv(tmp_path)
    source = SourceResource(data_dir=str(data))
    spec, _ = _spec(tmp_path)

    result = _materialize(spec, source, "2026-11-03")
    assert _meta(result, "source_leads")["rows_malformed"] == 3
    assert validation_checks(result)[0].passed
    assert _in_crm(sandbox) == {"GOOD-1", "GOOD-3"}
    q = store.quarantine_frame(SYNC).set_index("source_key")
    assert set(q["error_code"]) == {"MALFORMED_SOURCE_ROW"}
    assert sorted(k.split(":")[0] for k in q.index) == ["<line 3", "<line 4", "<line 5"]
    assert q["partition"].isna().all()
    messages = " | ".join(q["message"])
    assert "line 3" in messages and "line 5" in messages and "leads.csv" in messages
    assert len(q.loc[[k for k in q.index if k.startswith("<line 5")][0], "value"]) <= 1000

    _materialize(spec, source, "2026-11-04")  # the next day: same entries, its rows sync
    assert sorted(store.quarantine_frame(SYNC)["source_key"]) == sorted(q.index)
    assert _in_crm(sandbox) == {"GOOD-1", "GOOD-2", "GOOD-3"}

    # Once the file is fixed, the entries of lines that no longer fail leave the quarantine.
    path = data / "leads.csv"
    path.write_text("\n".join(line for i, line in enumerate(path.read_text().splitlines(), 1)
                              if i not in (3, 4, 5)) + "\n")
    _materialize(spec, source, "2026-11-03")
    assert store.quarantine_frame(SYNC).empty


def test_a_duplicate_header_is_refused_naming_the_column(sandbox, store, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "leads.csv").write_text(",".join(COLUMNS + ["name"]) + "\n"
                                    "A,,Ann,a@example.com,,new,web,2026-11-03T08:00:00Z,Bob\n")
    with pytest.raises(SourceError, match="'name'"):
        SourceResource(data_dir=str(data)).read_partition("leads", *_window("2026-11-03"))
    spec, _ = _spec(tmp_path)
    result = _materialize(spec, SourceResource(data_dir=str(data)), "2026-11-03",
                          raise_on_error=False)
    assert not result.success
    assert _in_crm(sandbox) == set()


def test_a_file_no_line_of_which_fits_its_header_fails_the_sync(sandbox, store, tmp_path):
    """Malformed lines count in no partition's threshold, so a file that is wrong as a whole (a
    column missing from the header) must not pass as 'every row malformed': it fails, readably."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "leads.csv").write_text(",".join(COLUMNS) + "\n" + "".join(
        f"L{i},,Name,l{i}@example.com,,new,web,2026-11-03T08:00:00Z,score {i}\n"
        for i in range(3)))
    spec, _ = _spec(tmp_path)
    result = _materialize(spec, SourceResource(data_dir=str(data)), "2026-11-03",
                          raise_on_error=False)
    assert not result.success
    [failure] = result.get_step_failure_events()
    error, texts = failure.step_failure_data.error, []
    while error is not None:  # the SourceError is the step error's cause
        texts.append(error.message)
        error = error.cause
    text = "\n".join(texts)
    assert "none of its 3 line(s) can be read" in text and "line 2: too many columns" in text
    assert store.quarantine_frame().empty and _in_crm(sandbox) == set()


def test_a_line_missing_several_columns_is_described_once(tmp_path):
    """DuckDB reports a short line once per missing column; the quarantine names it once."""
    import duckdb

    from crm_sync.extract import csvsource

    path = tmp_path / "leads.csv"
    path.write_text("a,b,c,d,e\n1,2,3,4,5\n1,2\n")
    with duckdb.connect() as conn:
        conn.execute(f"SELECT * FROM {csvsource.reader(path)}").fetchall()  # nosec B608
        lines = csvsource.rejected_lines(conn, path)
    assert [line["line"] for line in lines] == [3]
    assert lines[0]["description"].count("missing columns") == 1, lines[0]["description"]
