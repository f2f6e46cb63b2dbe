"""The production-stack section of the benchmark (crm_sync/devtools/bench/stack.py), in small:
its overlap checker on hand-made spans and on a real run's event log, and the Dagster
configuration it runs (deploy/dagster.yaml plus the sequential pass's run limit). The stack
itself runs in test_deploy_stack.py; the timed comparison only in `crm-sync bench`."""

from __future__ import annotations

import time

import yaml

from crm_sync.devtools.bench.stack import DEPLOY, MODE_TAG, Pass, write_home, write_spec
from crm_sync.devtools.bench.stack_events import (max_overlap, most_at_once, pool_spans,
                                                  pool_steps)
from crm_sync.devtools.bench.util import bench_spec


def test_overlap_and_concurrency_of_spans():
    one_at_a_time = [(0.0, 1.0), (1.0, 2.5), (3.0, 4.0)]
    assert max_overlap(one_at_a_time) == 0 and most_at_once(one_at_a_time) == 1
    # the third overlaps the first (which outlasts the second) by 0.5 s
    nested = [(0.0, 3.0), (0.5, 1.0), (2.5, 4.0)]
    assert max_overlap(nested) == 0.5 and most_at_once(nested) == 2
    assert max_overlap([]) == 0 and most_at_once([]) == 0
    side_by_side = Pass("p", spans={"a": [(0.0, 2.0)], "b": [(1.0, 3.0)], "c": [(1.5, 1.8)]})
    assert side_by_side.max_overlap_seconds == 0 and side_by_side.most_at_once == 3
    assert side_by_side.busy_seconds == {"a": 2.0, "b": 2.0, "c": 0.30000000000000004}
    clash = Pass("p", spans={"a": [(0.0, 2.0), (1.0, 3.0)]})
    assert clash.max_overlap_seconds == 1.0


def test_pool_steps_are_read_from_a_real_event_log(sandbox_url, tmp_path):
    """One partition of one sync, run by Dagster: its upsert and replay steps (the CRM's pool)
    are found in the event log, one after the other."""
    import dagster as dg

    from crm_sync.project import build_defs, sandbox_resources
    from crm_sync.sandbox.app import DEFAULT_TOKENS

    spec = bench_spec()
    sync = next(s for s in spec.syncs if s.crm == "superleap")
    defs = build_defs(spec, resources=sandbox_resources(
        sandbox_url, tmp_path / "crm_sync.sqlite", tokens=DEFAULT_TOKENS))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(f"sync_{sync.name}").execute_in_process(
            partition_key="2026-11-02", instance=instance)
        assert result.success
        spans = pool_spans(instance, [result.run_id], pool_steps(spec))
    assert set(spans) == {"superleap"} and len(spans["superleap"]) == 2  # upsert, replay
    (upsert, replay) = sorted(spans["superleap"])
    assert upsert[0] < upsert[1] <= replay[0] < replay[1]
    assert max_overlap(spans["superleap"]) == 0


def test_the_stack_is_deploy_dagster_yaml_plus_the_sequential_limit(tmp_path):
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    written = yaml.safe_load((write_home(tmp_path / "home") / "dagster.yaml").read_text())
    limits = written["concurrency"]["runs"].pop("tag_concurrency_limits")
    assert limits == [{"key": MODE_TAG, "value": "sequential", "limit": 1}]
    assert written.pop("code_servers") == {"local_startup_timeout": 600}
    assert written == deployed  # storage, run queue, pools, monitoring: as deployed
    assert deployed["concurrency"]["runs"]["max_concurrent_runs"] == 8
    assert deployed["concurrency"]["pools"]["default_limit"] == 1

    from crm_sync.spec import load_spec

    loaded = load_spec(write_spec(tmp_path / "syncs.yaml", bench_spec()))
    assert [s.name for s in loaded.syncs] == [s.name for s in bench_spec().syncs]
    assert all(not s.associations for s in loaded.syncs)


def test_the_store_is_read_again_after_its_database_was_recreated(postgres, pg_database):
    """Between the passes the bench drops and recreates the store's database; its own count
    of the pass's rows then reads it with fresh connections (the first run of the whole bench
    failed here: AdminShutdown on a pooled connection of the dropped database)."""
    from crm_sync.devtools.bench.stack import _accounted, _recreate_database
    from crm_sync.state.store import SyncStore

    spec = bench_spec()
    name = pg_database("store")
    url = postgres.url(name)
    SyncStore(f"{url}?application_name=bench_parallel")  # pooled connections of pass 1
    assert _accounted(spec, f"{url}?application_name=bench_parallel") == 0
    _recreate_database(postgres, name)
    assert _accounted(spec, f"{url}?application_name=bench_sequential") == 0


def test_the_report_rows_of_the_section():
    from types import SimpleNamespace

    from crm_sync.devtools.bench.report import _stack_rows
    from crm_sync.devtools.bench.stack import Stack

    spans = {"hubspot": [(0.0, 5.0), (5.0, 9.0)], "brevo": [(1.0, 2.0)]}
    stack = Stack(Pass("parallel", seconds=40.0, runs=7, succeeded=7, spans=spans,
                       cpu_busy=0.96),
                  Pass("sequential", seconds=100.0, runs=7, succeeded=7, spans=spans,
                       cpu_busy=0.5),
                  partitions=["d"] * 7)
    found = []
    _stack_rows(SimpleNamespace(stack=stack), lambda *row: found.append(row))
    assert stack.ratio == 2.5 and [r[0] for r in found] == [10, 10, 10]
    assert found[0][2].startswith("100 s / 40 s = 2.50x") and found[0][4]
    assert found[1][2].startswith("96% / 50%")
    assert found[2][2].startswith("0.00 s; 2 CRMs") and found[2][4]
    found.clear()
    _stack_rows(SimpleNamespace(stack=None), lambda *row: found.append(row))
    assert found == []


def test_the_timeline_says_when_runs_started_and_how_long_each_took():
    runs = Pass("p", run_spans=[(41.2, 92.0), (3.0, 20.6), (17.6, 90.3)])
    assert runs.timeline == "runs started at +3, +18, +41 s, each took 18-73 s"
    assert Pass("p").timeline == "no runs"


def test_the_machine_cpu_share_is_read_from_proc_stat():
    from crm_sync.devtools.bench.util import busy_share, machine_cpu

    assert busy_share((100, 400), (250, 600)) == 0.75 and busy_share((5, 9), (5, 9)) == 0.0
    before = machine_cpu()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # keep one core busy
        pass
    after = machine_cpu()
    assert after[1] > before[1] and after[0] > before[0]
    assert 0.0 < busy_share(before, after) <= 1.0
