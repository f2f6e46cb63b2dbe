"""The columnar copy of a source file (crm_sync/extract/columnar.py): a partition read from it
is exactly the read of the file (rows, columns, dtypes, flags, malformed lines), in one order
(the cursor, ties in the file's line order), made once per version of the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from crm_sync.extract import columnar
from crm_sync.extract.sources import SourceResource
from crm_sync.transform.validate import validate_partition
from crm_sync_tests.bundled_spec import bundled_unlinked

WORKTREE = Path(__file__).resolve().parent.parent
UTC = timezone.utc
FIRST = datetime(2026, 11, 1, tzinfo=UTC)
BOUNDS = (FIRST, datetime(2026, 11, 6, tzinfo=UTC))
HEADER = "lead_id,superleap_id,name,email,phone,status,source,updated_at"


def _line(i: int, updated_at: str, name: str | None = None) -> str:
    return (f"LD-{i:07d},,{name or f'Ada {i}'},ada{i}@example.com,+1-555-123-4567,new,web,"
            f"{updated_at}")


# Every kind of row a partition read treats apart: mixed timestamp formats and offsets, ties,
# no timestamp, not a timestamp, +-infinity, before the first partition, after today's end,
# lines with a field too many or too few, quoted fields; an empty window (`_windows`).
VARIED = "\n".join([
    HEADER,
    _line(1, "2026-11-02T10:00:00Z"),
    _line(2, "2026-11-02 09:00:00"),
    _line(3, "2026-11-02T10:00:00Z", name='"Lovelace, Ada"'),
    _line(4, "2026-11-02T23:30:00-02:00"),  # 11-03 01:30 UTC: in 11-03
    _line(5, ""),
    _line(6, "not a date"),
    _line(7, "infinity"),
    _line(8, "-infinity"),
    _line(9, "2026-10-01T00:00:00Z"),
    _line(10, "2027-01-01T00:00:00Z"),
    _line(11, "2026-11-04T00:00:00+09:00"),
    "LD-0000012,,too,many,fields,here,x,y,2026-11-02T10:00:00Z",
    "LD-0000013,,too few",
    _line(14, "2026-11-05T12:00:00Z"),
    _line(15, "2026-11-02T10:00:00Z"),
]) + "\n"


def _windows():
    for day in (1, 2, 3):  # 11-02 (ties, formats), 11-03 (an offset), 11-04 (+09:00: 11-03)
        start = FIRST + timedelta(days=day)
        yield start, start + timedelta(days=1)
    yield datetime(2026, 11, 3, 12, tzinfo=UTC), datetime(2026, 11, 3, 13, tzinfo=UTC)  # empty


def _reads(source: SourceResource, table: str, **kw):
    for window in _windows():
        for include, bounds in ((False, None), (True, None), (True, BOUNDS)):
            frame = source.read_partition(table, *window, include_unpartitioned=include,
                                          bounds=bounds, **kw)
            arrow = source.read_partition(table, *window, include_unpartitioned=include,
                                          bounds=bounds, arrow=True, **kw)
            yield (window, include, bounds), frame, arrow


def _assert_same(folder: Path, cache: Path, table: str, **kw) -> int:
    uncached = SourceResource(data_dir=str(folder), use_cache=False)
    cached = SourceResource(data_dir=str(folder), cache_dir=str(cache))
    rows = 0
    for (case, before, before_arrow), (_, after, after_arrow) in zip(
            _reads(uncached, table, **kw), _reads(cached, table, **kw)):
        pd.testing.assert_frame_equal(after, before, check_exact=True, obj=str(case))
        assert list(after.dtypes) == list(before.dtypes)
        assert after_arrow.equals(before_arrow), case
        # The Arrow table is the frame (its nulls None, its text string-typed).
        assert after_arrow.to_pandas().astype(object).where(
            after_arrow.to_pandas().notna(), None).equals(
            after.astype(object).where(after.notna(), None)), case
        rows += len(after)
    return rows


def test_a_partition_read_from_the_copy_is_the_read_of_the_file(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "leads.csv").write_text(VARIED, encoding="utf-8")
    builds = columnar.builds
    assert _assert_same(folder, tmp_path / "cache", "leads") > 0
    assert columnar.builds == builds + 1  # one copy, for every window and flag
    frame = SourceResource(data_dir=str(folder), cache_dir=str(tmp_path / "cache")) \
        .read_partition("leads", *BOUNDS, include_unpartitioned=True, bounds=BOUNDS)
    assert frame["_malformed_key"].notna().sum() == 2  # the two malformed lines, reported
    assert frame["_out_of_range"].notna().sum() == 2  # 10-01 and 2027
    assert frame["_no_partition"].dtype == bool and frame["lead_id"].dtype == object


def test_a_bom_a_parquet_source_and_a_cursor_column_read_the_same(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "leads.csv").write_text("\ufeff" + VARIED, encoding="utf-8")
    assert _assert_same(folder, tmp_path / "cache", "leads") > 0
    with duckdb.connect() as conn:  # a typed Parquet table: timestamps, integers, nulls
        conn.execute(f"COPY (SELECT i AS id, CASE WHEN i % 7 = 0 THEN NULL ELSE "
                     f"TIMESTAMPTZ '2026-10-31 22:00:00+00' + INTERVAL (i * 37) MINUTE END "
                     f"AS changed_at, 'x' || (i % 3) AS name, TIMESTAMP '2026-11-02 10:00:00' "
                     f"AS updated_at FROM range(400) t(i)) TO '{folder / 'items.parquet'}'")
    assert _assert_same(folder, tmp_path / "cache", "items") > 0
    assert _assert_same(folder, tmp_path / "cache", "items", cursor="changed_at") > 0


def _varied(tmp_path):
    """A data folder holding VARIED as leads.csv, a cache folder and a source reading both."""
    folder, cache = tmp_path / "data", tmp_path / "cache"
    folder.mkdir()
    path = folder / "leads.csv"
    path.write_text(VARIED, encoding="utf-8")
    return folder, cache, path, SourceResource(data_dir=str(folder), cache_dir=str(cache))


def test_the_file_changed_in_place_rebuilds_the_copy_and_drops_the_old_one(tmp_path):
    folder, cache, path, source = _varied(tmp_path)
    day = (datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    assert "Ada 1" in set(source.read_partition("leads", *day)["name"])
    builds = columnar.builds
    inode, size = path.stat().st_ino, path.stat().st_size
    with open(path, "r+b") as file:  # the same size, the same inode, a new mtime
        file.write(VARIED.replace("Ada 1,", "Bob 1,").encode())
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert (path.stat().st_ino, path.stat().st_size) == (inode, size)
    names = set(source.read_partition("leads", *day)["name"])
    assert "Bob 1" in names and "Ada 1" not in names
    assert columnar.builds == builds + 1
    assert len(list(cache.glob("*.parquet"))) == len(list(cache.glob("*.json"))) == 1


def test_a_second_read_does_not_read_the_csv_again(tmp_path):
    """Proof: the file's bytes are changed behind the cache's back (same size, inode, mtime and
    header: the same identity), and the second read still returns the first version's rows:
    it did not read the CSV's rows. No second copy is built."""
    folder, cache, path, source = _varied(tmp_path)
    day = (datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    first = source.read_partition("leads", *day)
    builds, stat = columnar.builds, path.stat()
    with open(path, "r+b") as file:
        file.write(VARIED.replace("Ada 1,", "Bob 1,").encode())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = source.read_partition("leads", *day)
    pd.testing.assert_frame_equal(second, first)
    assert columnar.builds == builds
    fresh = SourceResource(data_dir=str(folder), use_cache=False).read_partition("leads", *day)
    assert "Bob 1" in set(fresh["name"])  # what a read of the file now gives


_CHILD = """
import hashlib, sys
from datetime import datetime, timezone
from crm_sync.extract import columnar
from crm_sync.extract.sources import SourceResource
frame = SourceResource(data_dir=sys.argv[1], cache_dir=sys.argv[2]).read_partition(
    "leads", datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 11, 8, tzinfo=timezone.utc))
print(columnar.builds, hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest())
"""


def test_two_processes_building_the_copy_at_once_build_it_once(tmp_path):
    folder, cache = tmp_path / "data", tmp_path / "cache"
    folder.mkdir()
    lines = [HEADER] + [_line(i, f"2026-11-0{1 + i % 7}T{i % 24:02d}:00:00Z")
                        for i in range(20_000)]
    (folder / "leads.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(folder), str(cache)],
                                 stdout=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [child.communicate(timeout=300)[0].split() for child in children]
    assert all(child.returncode == 0 for child in children)
    assert sorted(int(builds) for builds, _ in outputs) == [0, 1]  # one built, one waited
    expected = SourceResource(data_dir=str(folder), use_cache=False).read_partition(
        "leads", datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, tzinfo=UTC))
    digest = hashlib.sha256(expected.to_csv(index=False).encode()).hexdigest()
    assert [d for _, d in outputs] == [digest, digest]
    assert sorted(p.suffix for p in cache.iterdir() if p.suffix != ".lock") == \
        [".json", ".parquet"]  # no temporary file left, one version


@pytest.mark.parametrize("use_cache", [True, False])
def test_ties_are_in_file_order_so_the_last_line_wins_validation(tmp_path, use_cache):
    """Two lines with the same key and updated_at: validation keeps the last of them after a
    stable sort by updated_at (the documented rule), so the read must keep the file's order
    of ties. (DuckDB's ORDER BY alone does not: at 5,000 rows it already reorders them.)"""
    folder = tmp_path / "data"
    folder.mkdir()
    lines = [HEADER]
    for i in range(2_500):
        at = f"2026-11-02T{i % 24:02d}:00:00Z"
        lines += [_line(i, at, name=f"first {i}"), _line(i, at, name=f"last {i}")]
    (folder / "leads.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = SourceResource(data_dir=str(folder), cache_dir=str(tmp_path / "cache"),
                            use_cache=use_cache)
    day = (datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC))
    frame = source.read_partition("leads", *day, include_unpartitioned=True, bounds=BOUNDS)
    assert list(frame["updated_at"]) == sorted(frame["updated_at"])
    for _, group in frame.groupby("lead_id", sort=False):
        assert [n.split()[0] for n in group["name"]] == ["first", "last"]
    result = validate_partition(bundled_unlinked().sync("leads_to_superleap"), frame)
    assert len(result.valid) == 2_500
    assert all(name.startswith("last ") for name in result.valid["name"])
    assert {f.error_code for f in result.failures} == {"DUPLICATE_MATCHING_KEY"}


def test_day_fingerprints_from_the_copy_are_those_of_the_file(tmp_path):
    """The sensor's fingerprints read the copy (which the partition runs it starts then read)
    and are the ones a read of the file gives, so nothing is started again by the change."""
    folder, cache = tmp_path / "data", tmp_path / "cache"
    folder.mkdir()
    (folder / "leads.csv").write_text(VARIED, encoding="utf-8")
    cached = SourceResource(data_dir=str(folder), cache_dir=str(cache))
    builds = columnar.builds
    prints = cached.day_fingerprints("leads")
    assert prints == SourceResource(data_dir=str(folder), use_cache=False).day_fingerprints(
        "leads")
    assert "2026-11-02" in prints and columnar.builds == builds + 1
    cached.read_partition("leads", *BOUNDS)
    assert columnar.builds == builds + 1  # the runs read the copy the sensor made


def test_the_lines_one_file_could_not_parse_are_not_another_files(tmp_path):
    """Reads of data_dir's files share this thread's DuckDB connection (frames.kept_connection):
    the malformed lines of one read (DuckDB's reject_errors grows with every scan) must not be
    reported by the next read of another file, nor by the next read of the same one."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "leads.csv").write_text(VARIED, encoding="utf-8")
    (folder / "clean.csv").write_text("\n".join([HEADER, _line(1, "2026-11-02T10:00:00Z"),
                                                 _line(2, "2026-11-03T10:00:00Z")]) + "\n",
                                      encoding="utf-8")
    for use_cache in (False, True):
        source = SourceResource(data_dir=str(folder), cache_dir=str(tmp_path / "cache"),
                                use_cache=use_cache)
        bad = source.read_partition("leads", *BOUNDS, include_unpartitioned=True, bounds=BOUNDS)
        assert bad["_malformed_key"].notna().sum() == 2, use_cache
        clean = source.read_partition("clean", *BOUNDS, include_unpartitioned=True,
                                      bounds=BOUNDS)
        assert len(clean) == 2, use_cache
        assert "_malformed_key" not in clean or clean["_malformed_key"].isna().all(), use_cache
        assert source.all_keys("clean", "lead_id") == {"LD-0000001", "LD-0000002"}
        again = source.read_partition("leads", *BOUNDS, include_unpartitioned=True,
                                      bounds=BOUNDS)
        assert again["_malformed_key"].notna().sum() == 2, use_cache  # not 4


def test_the_connection_that_made_a_copy_is_not_kept(tmp_path):
    """Partition reads keep this thread's DuckDB connection, but not the one that made a
    columnar copy: sorting a whole table leaves its memory with the connection (~50 MB of
    200,000 rows, measured), which must not stay for the rest of the process."""
    from crm_sync.extract import frames

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "leads.csv").write_text(VARIED, encoding="utf-8")
    source = SourceResource(data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    builds = columnar.builds
    source.read_partition("leads", *BOUNDS)  # makes the copy
    assert columnar.builds == builds + 1
    assert getattr(frames._KEPT, "conn", None) is None
    source.read_partition("leads", *BOUNDS)  # reads it: the connection stays
    kept = frames._KEPT.conn
    assert kept is not None
    source.read_partition("leads", *BOUNDS)
    assert frames._KEPT.conn is kept
