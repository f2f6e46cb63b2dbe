"""Section 5, how cost grows: full syncs of a small table, of the large one and (opt-in) of a
larger one, each in a child process (fullsync.py): rows per second at each size, and peak
memory against the size of the largest partition. A partition is a day of rows, and at the same
number of days a 10x table has 10x partitions: that alone cannot tell memory that follows the
partition from memory that follows the table. So one more sync holds the large sync's partition
in a table 1/DAYS its size (the same rows per day, all on one day): memory bounded by the
partition is the same in both; memory that follows the table is DAYS times bigger.

The large table's syncs also serve section 6 (fullsync.py), and so may the small one's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from crm_sync.devtools.bench.fullsync import (FullSync, Incremental, fresh_store, full_sync,
                                              incremental_after, synced_and_incremental)
from crm_sync.devtools.bench.util import reset
from crm_sync.devtools.generate import ALL_ROWS, DAYS, generate
from crm_sync.spec import Spec


@dataclass
class Point:
    """One full sync: its table's days and its largest partition (rows of one sync's day)."""
    sync: FullSync
    days: int
    largest_partition: int


@dataclass
class Growth:
    points: list[Point] = field(default_factory=list)  # by table size
    control: Point | None = None  # the large sync's partition, in a table 1/DAYS its size

    @property
    def large(self) -> Point:
        """The point whose partition the control holds: the largest default size."""
        return self.points[1] if len(self.points) > 1 else self.points[0]

    @property
    def same_partition_ratio(self) -> float:
        """Memory the sync added, large table / control (same largest partition)."""
        if self.control is None or self.control.sync.sync_rss_mb <= 0:
            return 0.0
        return self.large.sync.sync_rss_mb / self.control.sync.sync_rss_mb

    @property
    def rows_per_second_holds(self) -> bool:
        rates = [p.sync.rows_per_second for p in self.points]
        return all(b >= a for a, b in zip(rates, rates[1:]))


def largest_partition(spec: Spec, data: Path, partitions: list[str] | None) -> int:
    """Rows of the biggest (sync, day) among the days synced: what one run holds."""
    largest = 0
    with duckdb.connect() as conn:
        for table in {s.source for s in spec.syncs}:
            days = conn.execute(
                "SELECT strftime(TRY_CAST(updated_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC', "
                "'%Y-%m-%d') AS day, count(*) FROM read_csv(?, all_varchar=true, header=true) "
                "GROUP BY day", [str(data / f"{table}.csv")]).fetchall()
            largest = max([largest] + [n for day, n in days
                                       if day and (not partitions or day in partitions)])
    return largest


def point(label: str, spec: Spec, data: Path, url: str, workdir: Path, days: int,
          partitions: list[str] | None, crm_pid: int | None, log=print) -> Point:
    """A full sync of `data` on an empty CRM and store."""
    reset(url)
    sync = full_sync(label, spec, data, fresh_store(workdir / f"full-{label}.sqlite"), url,
                     partitions, crm_pid)
    p = Point(sync, days, largest_partition(spec, data, partitions))
    log(f"  full sync of {sync.rows:,} rows over {days} day(s) (largest partition "
        f"{p.largest_partition:,}): {sync.seconds:.1f} s, peak RSS {sync.peak_rss_mb:.0f} MB "
        f"({sync.rss_before_mb:.0f} MB before)")
    return p


def growth_and_incremental(spec: Spec, large: Path, large_scale: float, url: str,
                           crm_pid: int | None, workdir: Path, options, log=print
                           ) -> tuple[Growth, list[Incremental]]:
    """Sections 5 and 6. `large`: the large tables (generated at `large_scale`); `options`:
    run.Options (small_rows, incremental_rows, largest_rows, partitions)."""
    growth, incrementals, parts = Growth(), [], options.partitions

    def data(name: str, rows: int, days: int = DAYS) -> Path:
        generate(workdir / name, scale=rows / ALL_ROWS, days=days)
        return workdir / name

    small = data("data-small", options.small_rows)
    growth.points.append(point("small", spec, small, url, workdir, DAYS, parts, crm_pid, log))
    if options.incremental_rows == options.small_rows:  # the small sync is the first one
        incrementals.append(incremental_after(growth.points[0].sync, spec, small,
                                              workdir / "full-small.sqlite", url, parts,
                                              crm_pid, log))
    elif options.incremental_rows and options.incremental_rows < large_scale * ALL_ROWS:
        # (None, or the large table's size or more: the large table's incremental only)
        incrementals.append(synced_and_incremental(
            "incremental-small", spec, data("data-incremental", options.incremental_rows),
            url, workdir, parts, crm_pid, log))
    growth.points.append(point("large", spec, large, url, workdir, DAYS, parts, crm_pid, log))
    incrementals.append(incremental_after(growth.points[1].sync, spec, large,
                                          workdir / "full-large.sqlite", url, parts, crm_pid,
                                          log))
    # The large sync's rows per day, all on the first day: its partition, 1/DAYS of its table
    control = data("data-one-day", round(large_scale * ALL_ROWS / DAYS), days=1)
    growth.control = point("one-day", spec, control, url, workdir, 1, None, crm_pid, log)
    if options.largest_rows:
        growth.points.append(point("largest", spec, data("data-largest", options.largest_rows),
                                   url, workdir, DAYS, parts, crm_pid, log))
    return growth, incrementals


def main(argv: list[str] | None = None) -> int:
    """Sections 5-6 alone: `python -m crm_sync.devtools.bench.growth --small-rows 20000
    --incremental-rows 20000 --full-rows 50000` (run.py's flags of the same names)."""
    import argparse
    import shutil

    from crm_sync.devtools.bench.report import COLUMNS, rows
    from crm_sync.devtools.bench.run import Options, Results
    from crm_sync.devtools.bench.util import bench_spec, sandbox, sandbox_tokens
    from crm_sync.pipeline.reporting import text_table

    parser = argparse.ArgumentParser(prog="python -m crm_sync.devtools.bench.growth")
    for flag in ("workdir", "small-rows", "incremental-rows", "full-rows", "largest-rows"):
        name = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", type=Path if name == "workdir" else int,
                            default=getattr(Options, name))
    args = parser.parse_args(argv)
    options = Options(**vars(args))
    shutil.rmtree(options.workdir, ignore_errors=True)
    options.workdir.mkdir(parents=True)
    sandbox_tokens()
    scale, results = options.full_rows / ALL_ROWS, Results(options)
    generate(options.workdir / "data-large", scale=scale)
    with sandbox(options.workdir / "sandbox-open.sqlite", "--hubspot-rate-limit", "0") as (
            url, pid):
        results.growth, results.incremental = growth_and_incremental(
            bench_spec(), options.workdir / "data-large", scale, url, pid, options.workdir,
            options)
    print(text_table(rows(results), COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
