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
    a, b = results.small, results.large
    if a is not None and b is not None:
        add(5, "peak RSS, large / small full sync",
            f"{b.peak_rss_mb:,.0f} / {a.peak_rss_mb:,.0f} MB = {b.peak_rss_mb / a.peak_rss_mb:.2f}x"
            f" ({b.rows:,} / {a.rows:,} rows)", "<= 2x", b.peak_rss_mb <= 2 * a.peak_rss_mb)
        add(5, "full sync rows/s, large vs small",
            f"{b.rows_per_second:,.0f} vs {a.rows_per_second:,.0f} ({b.seconds:.0f} s / "
            f"{a.seconds:.0f} s)", "large >= small", b.rows_per_second >= a.rows_per_second)
    c = results.incremental
    if c is not None:
        changed, sent = sum(c.changed.values()), sum(c.sent.values())
        add(6, "incremental: rows sent / rows changed",
            f"{sent:,} / {changed:,} = {c.sent_per_changed:.2f}", "1.00",
            sent == changed)
        add(6, "incremental: time / full sync time",
            f"{c.second.seconds:.1f} s / {c.first.seconds:.1f} s = {c.time_ratio:.1%}",
            "<= 10%", c.time_ratio <= 0.10)
    _stack_rows(results, add)
    return out


def _stack_rows(results, add) -> None:
    s = results.stack
    if s is None:
        return
    p, q = s.parallel, s.sequential
    add("stack", f"backfill of {len(s.partitions)} partitions x 4 syncs on deploy/: "
        f"one run at a time / parallel", f"{q.seconds:.0f} s / {p.seconds:.0f} s = "
        f"{s.ratio:.2f}x ({p.runs} runs; CRM pools busy at most "
        f"{max(p.busy_seconds.values(), default=0):.0f} s)", ">= 2.5x", s.ratio >= 2.5)
    overlap = max(p.max_overlap_seconds, q.max_overlap_seconds)
    add("stack", "upserts into one CRM overlapping (parallel pass)",
        f"{overlap:.2f} s; {p.most_at_once} CRMs' pool steps at once at most", "0 s",
        overlap == 0)


def table(results) -> str:
    return text_table(rows(results), COLUMNS)
