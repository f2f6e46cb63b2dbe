"""The benchmark's one table: every figure, its target, and whether it was met."""

from __future__ import annotations

from crm_sync.devtools.bench.throughput import ALLOWANCES
from crm_sync.connectors import PROFILES
from crm_sync.pipeline.reporting import text_table

COLUMNS = ["#", "figure", "measured", "target", "met"]


def rows(results) -> list[dict]:
    out = []

    def add(section, figure, measured, target, met):
        out.append({"#": section, "figure": figure, "measured": measured, "target": target,
                    "met": "yes" if met else "NO"})

    for t in results.throughput:
        add(1, f"{t.crm}: upsert rows/s, pipeline vs ceiling",
            f"{t.pipeline_rps:,.0f} vs {t.ceiling_rps:,.0f} = {t.share_of_ceiling:.1%} "
            f"(CRM busy {t.crm_cpu / t.pipeline_seconds:.0%}; {t.replayed} requests)", ">= 85%",
            t.share_of_ceiling >= 0.85)
    for t in results.throughput:
        allowance, _ = ALLOWANCES[t.crm]
        if allowance is None:
            add(2, f"{t.crm}: rows per client CPU second", f"{t.rows_per_core_second:,.0f} "
                f"(no documented allowance)", "-", True)
            continue
        tier = PROFILES[t.crm].scale_tier  # for scale: a tier the CRM's objects are not under
        scale = f" ({tier[1]}: {t.rows_per_core_second / tier[0]:.1f}x)" if tier else ""
        add(2, f"{t.crm}: rows/s per core / allowance",
            f"{t.rows_per_core_second:,.0f} / {allowance:,.0f} = {t.headroom:,.1f}x{scale}",
            ">= 10x", t.headroom >= 10)
    s = results.saturation
    if s is not None:
        add(3, f"HubSpot {s.allowance}/{s.window_seconds:g} s: requests per window / allowance",
            f"{s.per_window:.1f} / {s.allowance} = {s.saturation:.1%} ({s.upserts} requests in "
            f"{s.syncing_seconds:.1f} s; {s.per_window_overall:.1f} counting the run's "
            f"{s.seconds:.1f} s)", ">= 95%", s.saturation >= 0.95)
        add(3, "429 answers per minute", f"{s.limited_per_minute:.2f} ({s.rate_limited} in "
            f"{s.seconds:.0f} s)", "<= 1", s.limited_per_minute <= 1)
        add(3, "rows lost", f"{s.lost} of {s.rows_in:,} ({s.confirmed:,} in the CRM, "
            f"{s.quarantined} quarantined)", "0", s.lost == 0)
    v = results.validation
    if v is not None:
        add(4, "validation: pandera / hand-written pandas",
            f"{v.pandera_seconds:.2f} s / {v.handwritten_seconds:.2f} s = {v.ratio:.2f}x "
            f"({v.rows:,} rows)", "<= 2x", v.ratio <= 2)
        add(4, "verdicts identical row for row", f"yes ({v.failing:,} rows failing)", "yes",
            v.identical)
    _growth_rows(results, add)
    _incremental_rows(results, add)
    return out


def _growth_rows(results, add) -> None:
    """Section 5: rows/s at each size; the memory a sync adds against its largest partition."""
    g = results.growth
    if g is None:
        return
    add(5, "full sync rows/s as the table grows", "; ".join(
        f"{p.sync.rows:,} rows: {p.sync.rows_per_second:,.0f} ({p.sync.seconds:.0f} s)"
        for p in g.points), "never falls", g.rows_per_second_holds)
    add(5, "peak RSS (+ what the sync added to the process's own) by largest partition",
        "; ".join(f"{p.sync.rows:,} rows: {p.sync.peak_rss_mb:,.0f} MB "
                  f"({p.sync.sync_rss_mb:+,.0f}), partition {p.largest_partition:,} rows"
                  for p in g.points), "-", True)
    c, large = g.control, g.large
    if c is not None:
        add(5, f"memory a sync adds, same partition, table {large.days}x / over 1 day",
            f"{large.sync.sync_rss_mb:,.0f} / {c.sync.sync_rss_mb:,.0f} MB = "
            f"{g.same_partition_ratio:.2f}x ({large.sync.rows:,} rows over {large.days} days"
            f" / {c.sync.rows:,} over {c.days}; largest partition {large.largest_partition:,}"
            f" / {c.largest_partition:,})", "<= 1.5x", 0 < g.same_partition_ratio <= 1.5)


def breakdown_text(sync) -> str:
    """Where a child's wall time went (FullSync.breakdown), one string."""
    parts = sync.breakdown()
    runs = sync.steps.get("runs", 0)
    text = ", ".join(f"{name} {seconds:.1f}" for name, seconds in parts.items()
                     if seconds >= 0.05 or name == "Dagster per run")
    per_run = parts["Dagster per run"] / runs * 1000 if runs else 0.0
    return (f"{sync.wall:.1f} s: {text} s ({runs} runs, {per_run:.0f} ms each); "
            f"the CRM's CPU {sync.crm_cpu:.1f} s")


def _incremental_rows(results, add) -> None:
    """Section 6, per table size: rows sent against rows changed, the time of the run after
    1% changed and after nothing changed against the full sync's, and where it went."""
    for c in results.incremental:
        size = f"{c.first.rows:,} rows"
        changed, sent = sum(c.changed.values()), sum(c.sent.values())
        add(6, f"{size}, 1% changed: rows sent / rows changed",
            f"{sent:,} / {changed:,} = {c.sent_per_changed:.2f}", "1.00", sent == changed)
        add(6, f"{size}, 1% changed: time / full sync time",
            f"{c.second.seconds:.1f} s / {c.first.seconds:.1f} s = {c.time_ratio:.1%}",
            "<= 10%", c.time_ratio <= 0.10)
        idle = sum(c.sent_idle.values())
        add(6, f"{size}, nothing changed: rows sent", f"{idle:,}", "0", idle == 0)
        add(6, f"{size}, nothing changed: time / full sync time",
            f"{c.idle.seconds:.1f} s / {c.first.seconds:.1f} s = {c.idle_ratio:.1%}",
            "<= 5%", c.idle_ratio <= 0.05)
        for label, run in (("1% changed", c.second), ("nothing changed", c.idle)):
            add(6, f"{size}, {label}: where the time goes", breakdown_text(run), "-", True)


def table(results) -> str:
    return text_table(rows(results), COLUMNS)
