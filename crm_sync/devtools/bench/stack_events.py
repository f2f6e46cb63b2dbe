"""The production stack's overlap checker (stack.py): from the runs' event logs, when each
step in a CRM's pool ran, whether two of one CRM's overlapped, and how many ran at once."""

from __future__ import annotations

from crm_sync.pipeline.sync_steps import replay_name


def max_overlap(spans: list[tuple[float, float]]) -> float:
    """Seconds by which the spans (start, end) overlap at most, pairwise (0: one at a time)."""
    worst, end = 0.0, None
    for start, stop in sorted(spans):
        if end is not None:
            worst = max(worst, min(end, stop) - start)
        end = stop if end is None else max(end, stop)
    return worst


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment (a span's end before another's start at a tie)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    most = now = 0
    for _, change in events:
        now += change
        most = max(most, now)
    return most


def pool_spans(instance, run_ids: list[str], steps: dict[str, str]) -> dict[str, list]:
    """{crm: [(STEP_START, end)]} of the runs' steps named in `steps` (step key -> CRM), from
    the runs' event logs; end: STEP_SUCCESS or STEP_FAILURE."""
    import dagster as dg

    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS,
             dg.DagsterEventType.STEP_FAILURE}
    found: dict[str, list] = {}
    for run_id in run_ids:
        times: dict[str, dict[str, float]] = {}
        for entry in instance.all_logs(run_id, of_type=kinds):
            if entry.step_key in steps:
                kind = entry.dagster_event.event_type_value
                times.setdefault(entry.step_key, {})["start" if kind == "STEP_START"
                                                     else "end"] = entry.timestamp
        for step, t in times.items():
            found.setdefault(steps[step], []).append((t["start"], t.get("end", t["start"])))
    return found


def pool_steps(spec) -> dict[str, str]:
    """Step key -> CRM of every step in a CRM's pool (crm_sync/pipeline/assets.py,
    sync_steps.py: the upsert and the replay)."""
    return {name: sync.crm for sync in spec.syncs for name in (sync.name, replay_name(sync))}
