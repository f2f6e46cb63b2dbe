"""One full sync in its own process, so that its peak RSS is its own:

    python -m crm_sync.devtools.bench.child '<json config>'

The config names the data folder, the sync store, the sandbox URL and the partitions. The sync is
the real pipeline (`crm_sync.pipeline.in_process.sync_partitions`: Dagster materializations of every
partition's source, validated and upsert assets) with the client-side rate limits lifted, on a
throwaway Dagster instance of this process (as `sync_partitions` makes by default) whose event
log is read as it is written: each step's wall time from its STEP_START and STEP_SUCCESS (or
STEP_FAILURE) events' timestamps, this process's CPU time at the same moments, and each run's
span from its first event to its last; and the garbage collections between runs (the
backfill's own `gc.collect()` before each run, Python's automatic ones). The last line printed
is a JSON object: seconds, RSS before the sync and at its peak, the per-sync summary and
`steps` (EventClock.totals).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections import defaultdict

_STEP_END = ("STEP_SUCCESS", "STEP_FAILURE")
# (DagsterEventType names: their values are the old PIPELINE_* ones)
_RUN_END = ("RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED")


class EventClock:
    """Wraps an instance's `handle_new_event` (every event of its runs goes through it, as the
    instance stores it) to note, per run, its first and last event and, per step, its start and
    end: (Dagster's timestamp, this process's CPU time)."""

    def __init__(self, instance):
        self.runs: dict[str, list[float]] = {}
        self.steps: list[tuple[str, str, float, float]] = []  # (run id, step, wall, cpu)
        self._open: dict[tuple[str, str], tuple[float, float]] = {}
        self.gc_between_runs = 0.0  # seconds of garbage collection while no run was on
        self._live: set[str] = set()  # runs that have begun and not ended
        self._gc_started: float | None = None
        gc.callbacks.append(self._gc)
        handle = instance.handle_new_event

        def noted(event, **kwargs):
            self.note(event)
            return handle(event, **kwargs)

        instance.handle_new_event = noted

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = None if self._live else time.perf_counter()
        elif self._gc_started is not None:
            self.gc_between_runs += time.perf_counter() - self._gc_started
            self._gc_started = None

    def note(self, event) -> None:
        cpu, kind = time.process_time(), event.dagster_event_type
        span = self.runs.setdefault(event.run_id, [event.timestamp, event.timestamp])
        span[1] = event.timestamp
        self._live.add(event.run_id)
        if kind is not None and kind.name in _RUN_END:
            self._live.discard(event.run_id)
        step = event.step_key
        if kind is None or step is None:
            return
        if kind.name == "STEP_START":
            self._open[(event.run_id, step)] = (event.timestamp, cpu)
        elif kind.name in _STEP_END and (event.run_id, step) in self._open:
            wall0, cpu0 = self._open.pop((event.run_id, step))
            self.steps.append((event.run_id, step, event.timestamp - wall0, cpu - cpu0))

    def totals(self, kinds: dict[str, str]) -> dict:
        """Per kind of step (`kinds`: step name -> kind; others: "quarantine refresh"): wall
        and CPU seconds and how many; plus the runs, and the seconds of their spans."""
        steps: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "cpu": 0.0, "count": 0})
        for _, step, wall, cpu in self.steps:
            total = steps[kinds.get(step, "quarantine refresh")]
            total["seconds"] += wall
            total["cpu"] += cpu
            total["count"] += 1
        return {"runs": len(self.runs),
                "run_seconds": sum(end - start for start, end in self.runs.values()),
                "gc_between_runs": self.gc_between_runs, "steps": dict(steps)}


def step_kinds(spec) -> dict[str, str]:
    """Each sync step's name -> its kind: source read, validation, upsert, replay, mirror."""
    from crm_sync.pipeline.sync_steps import mirror_name, replay_name

    kinds = {}
    for sync in spec.syncs:
        kinds.update({sync.source_asset: "source read", f"validated_{sync.name}": "validation",
                      sync.name: "upsert", replay_name(sync): "replay",
                      mirror_name(sync): "mirror"})
    return kinds


def rss_mb() -> float:
    """This process's resident set size now, in MiB (VmRSS)."""
    for line in open("/proc/self/status", encoding="ascii"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    os.environ["CRM_SYNC_DATA_DIR"] = config["data_dir"]
    os.environ["CRM_SYNC_STORE"] = config["store"]
    import dagster as dg

    from crm_sync.devtools.bench.util import (bench_spec, fast_resource, peak_rss_mb,
                                              sandbox_tokens)
    from crm_sync.pipeline.in_process import sync_partitions
    from crm_sync.connectors import RESOURCE_CLASSES
    from crm_sync.pipeline.resources import StoreResource
    from crm_sync.extract.sources import SourceResource

    sandbox_tokens()
    spec = bench_spec()  # the four syncs it measures (util.py)
    by_crm = {s.crm: s for s in spec.syncs}
    resources = {"source": SourceResource(data_dir=config["data_dir"]),
                 "store": StoreResource(path=config["store"]),
                 **{crm: fast_resource(by_crm[crm], config["url"]) for crm in RESOURCE_CLASSES
                    if crm in by_crm}}
    instance = dg.DagsterInstance.ephemeral()  # what sync_partitions makes when given none
    clock = EventClock(instance)
    before = rss_mb()
    started = time.time()
    summary = sync_partitions(config["partitions"], spec, instance=instance,
                              log=lambda *_: None, resources=resources)
    seconds = time.time() - started
    print(json.dumps({"seconds": seconds, "rss_before_mb": before,
                      "peak_rss_mb": peak_rss_mb(), "summary": summary,
                      "steps": clock.totals(step_kinds(spec))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
