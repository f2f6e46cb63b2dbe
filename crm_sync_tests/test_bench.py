"""A small run of `crm-sync bench` (crm_sync/devtools/bench/): it runs end to end and its accounting
holds. Times are never asserted (the machine is shared; BENCHMARKS.md has the real figures)."""

from __future__ import annotations

import pytest

from crm_sync.devtools.bench import Options, run
from crm_sync.devtools.bench.report import COLUMNS, rows, table


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    options = Options(workdir=tmp_path_factory.mktemp("bench"), rows=1000, full_rows=3000,
                      small_rows=1000, rate_seconds=2, rate_allowance=10, rate_window=1.0,
                      partitions=["2026-11-01"], repeat=1)
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
    for sync in (results.small, results.large, results.incremental.second):
        assert sync.summary and all(n == 0 for n in sync.unaccounted().values())
        assert sync.peak_rss_mb > 0 and sync.seconds > 0
    assert results.large.rows > results.small.rows


def test_the_incremental_sync_sends_exactly_the_changed_rows(results):
    c = results.incremental
    assert sum(c.changed.values()) > 0
    assert c.sent == c.changed
    second = {row["sync"]: row for row in c.second.summary}
    first = {row["sync"]: row for row in c.first.summary}
    for name, changed in c.changed.items():
        assert second[name]["updated"] == changed and second[name]["created"] == 0
        assert second[name]["unchanged"] == first[name]["created"] + first[name]["updated"] \
            - changed


def test_one_table_holds_every_figure(results):
    figures = rows(results)
    assert {r["#"] for r in figures} == {1, 2, 3, 4, 5, 6}
    assert len(figures) == 4 + 4 + 3 + 2 + 2 + 2
    text = table(results)
    assert all(column in text.splitlines()[0] for column in COLUMNS)
