"""A small run of `crm-sync bench` (crm_sync/devtools/bench/): it runs end to end and its accounting
holds. Times are never asserted (the machine is shared; BENCHMARKS.md has the real figures)."""

from __future__ import annotations

import pytest

from crm_sync.devtools.bench import Options, run
from crm_sync.devtools.bench.report import COLUMNS, rows, table

# The module's fixture runs the whole small bench inside the first test: 5 child syncs for
# sections 5-6 (two full ones, the 1% and the nothing-changed runs, the one-day control), each
# a Python process that imports Dagster; on a loaded 2-core machine that can pass 300 s.
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    options = Options(workdir=tmp_path_factory.mktemp("bench"), rows=1000, full_rows=3000,
                      small_rows=1000, rate_seconds=2, rate_allowance=10, rate_window=1.0,
                      partitions=["2026-11-01"], repeat=1, incremental_rows=None)
    return run(options, log=lambda *_: None)


def test_the_upsert_stage_and_its_ceiling_account_for_every_row(results):
    assert [t.crm for t in results.throughput] == ["superleap", "hubspot", "salesforce",
                                                   "brevo"]
    for t in results.throughput:
        a = t.accounting
        assert a["rows_in"] == t.rows > 900  # ~3% of the generated rows are invalid
        assert a["created"] + a["updated"] + a["unchanged"] + a["skipped"] + a["failed"] == \
            a["rows_in"]
        assert t.sent == a["rows_in"] and a["unchanged"] == 0  # a fresh store sends every row
        assert a["created"] + a["failed"] == t.sent
        assert t.requests > 0 and t.replayed >= t.requests  # Brevo's polls come on top
        if t.crm != "brevo":
            assert t.replayed == t.requests and t.reads == 0
        else:  # the read-backs that confirm Brevo's records are replayed by the ceiling too
            assert t.reads > 0 and t.replayed >= t.requests + t.reads
        assert t.pipeline_seconds > 0 and t.ceiling_seconds > 0 and t.client_cpu > 0


def test_the_rate_limited_run_loses_no_row(results):
    s = results.saturation
    assert s.rows_in == 2 * 10 * 100  # two windows of 10 requests of 100 inputs
    assert s.requests > 0 and s.lost == 0
    assert s.confirmed + s.quarantined == s.rows_in


def test_validation_verdicts_are_identical(results):
    v = results.validation
    assert v.identical and v.rows >= 2900 and 0 < v.failing < v.rows


def test_full_syncs_account_for_every_row(results):
    g, c = results.growth, results.incremental[0]
    for sync in [p.sync for p in g.points] + [g.control.sync, c.second, c.idle]:
        assert sync.summary and all(n == 0 for n in sync.unaccounted().values())
        assert sync.peak_rss_mb > sync.rss_before_mb > 0 and sync.wall > sync.seconds > 0
    assert g.points[1].sync.rows > g.points[0].sync.rows
    assert g.points[1].largest_partition > g.points[0].largest_partition


def test_the_memory_control_holds_the_large_partition_in_a_seventh_of_the_table(results):
    g = results.growth
    large, control = g.large, g.control
    assert (large.days, control.days) == (7, 1)
    # the test syncs one day of the large table: the control's table is that day's rows
    assert abs(control.largest_partition - large.largest_partition) <= 0.01 * \
        large.largest_partition
    assert abs(control.sync.rows - large.sync.rows) <= 0.01 * large.sync.rows
    assert g.same_partition_ratio > 0


def test_the_incremental_sync_sends_exactly_the_changed_rows(results):
    [c] = results.incremental  # incremental_rows=None: the large table's only
    assert c.first is results.growth.large.sync  # the growth point's sync, reused
    assert sum(c.changed.values()) > 0
    assert c.sent == c.changed
    second = {row["sync"]: row for row in c.second.summary}
    first = {row["sync"]: row for row in c.first.summary}
    for name, changed in c.changed.items():
        assert second[name]["updated"] == changed and second[name]["created"] == 0
        assert second[name]["unchanged"] == first[name]["created"] + first[name]["updated"] \
            - changed


def test_nothing_changed_sends_nothing(results):
    c = results.incremental[0]
    assert set(c.sent_idle) == set(c.changed) and sum(c.sent_idle.values()) == 0
    first = {row["sync"]: row for row in c.first.summary}
    for row in c.idle.summary:
        assert row["created"] == row["updated"] == 0
        assert row["unchanged"] == first[row["sync"]]["created"] + first[row["sync"]]["updated"]


def test_where_the_time_goes_adds_up_to_the_run(results):
    for sync in (results.incremental[0].second, results.incremental[0].idle):
        parts = sync.breakdown()
        assert all(seconds >= 0 for seconds in parts.values()), parts
        assert sum(parts.values()) == pytest.approx(sync.wall, abs=1e-6)
        steps = sync.steps["steps"]
        # one run per sync and partition (one partition here), then the quarantine refresh
        syncs = len(sync.summary)
        assert sync.steps["runs"] == syncs + 1
        for kind in ("source read", "validation", "upsert", "replay"):
            assert steps[kind]["count"] == syncs and steps[kind]["seconds"] > 0
        assert steps["quarantine refresh"]["count"] == 1
        assert 0 < steps["upsert"]["cpu"] and parts["upsert: crm_sync CPU"] <= \
            steps["upsert"]["seconds"]
        assert sum(s["seconds"] for s in steps.values()) < sync.steps["run_seconds"] < \
            sync.seconds < sync.wall


def test_one_table_holds_every_figure(results):
    figures = rows(results)
    assert {r["#"] for r in figures} == {1, 2, 3, 4, 5, 6}
    # section 6: per table size, sent/changed and time after 1% changed, sent and time after
    # nothing changed, and where the time of each went
    assert len(figures) == 4 + 4 + 3 + 2 + 3 + 6
    text = table(results)
    assert all(column in text.splitlines()[0] for column in COLUMNS)
