"""What every part of the benchmark shares: the sandbox as a child process, its counters and CPU
time, the source tables, and fast CRM resources (client-side rate limits out of the way)."""

from __future__ import annotations

import os
import resource as _resource
import time
from contextlib import contextmanager
from pathlib import Path

import duckdb
import httpx
import pandas as pd

from crm_sync.connectors import RESOURCE_CLASSES
from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.sandbox.server import sandbox_process
from crm_sync.spec import Spec, SyncSpec, load_spec
from crm_sync.spec_links import without_associations

# "No limit" for the client-side limiter: the benchmark measures crm_sync, not the limiter.
UNLIMITED = {"requests_per_window": 1_000_000, "window_seconds": 1.0}


@contextmanager
def sandbox(db: Path, *args: str):
    """`crm_sync.sandbox.server.sandbox_process` on 127.0.0.1; yields (base URL, its pid)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with sandbox_process(db, extra_args=list(args)) as url:
        yield url, _child_pid(url)


def _child_pid(url: str) -> int | None:
    """The pid of our sandbox child (the one whose command line names its port)."""
    port = url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"sandbox" in cmdline and port.encode() in cmdline:
            return int(entry.name)
    return None


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (0 when unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counters(url: str) -> dict[str, int]:
    response = httpx.get(f"{url}/_sandbox/stats", timeout=30)
    response.raise_for_status()
    return response.json()["counters"]


def reset(url: str) -> None:
    httpx.post(f"{url}/_sandbox/reset", timeout=60).raise_for_status()


def read_table(data_dir: Path, table: str, limit: int | None = None) -> pd.DataFrame:
    """A generated table as text, as the source resource reads it (first `limit` rows)."""
    path = str(data_dir / f"{table}.csv").replace("'", "''")
    # B608: the path is our own generated file, quoted above.
    query = f"SELECT * FROM read_csv('{path}', all_varchar=true, header=true)"  # nosec B608
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    with duckdb.connect() as conn:
        return conn.execute(query).df()


def fast_resource(spec: SyncSpec, url: str, **overrides):
    """The sync's CRM resource against the sandbox, its client-side rate limit lifted."""
    cls = RESOURCE_CLASSES[spec.crm]
    return cls(base_url=url, token=DEFAULT_TOKENS[spec.crm], **{**UNLIMITED, **overrides})


def sandbox_tokens() -> None:
    """The sandbox's tokens in the environment (the connectors read the same variables)."""
    for crm, env in TOKEN_ENV.items():
        os.environ.setdefault(env, DEFAULT_TOKENS[crm])


def peak_rss_mb() -> float:
    """This process's peak resident set size, in MiB: VmHWM, the high-water mark of its own
    address space. (getrusage's ru_maxrss is not used: Linux carries the parent's peak into a
    child started with vfork + exec, as subprocess does, so it would report the benchmark's.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024


class Stopwatch:
    """Wall and CPU time of this process over a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        return False


def bench_spec() -> Spec:
    """What the benchmark measures: the bundled spec's first sync of each CRM (the four whose
    figures BENCHMARKS.md follows), without relationships: the figures are those of the
    upsert itself, comparable from run to run. (Links cost HubSpot one association call per
    100 rows and nothing extra elsewhere; README "Relationships".)"""
    spec = without_associations(load_spec())
    first: dict[str, SyncSpec] = {}
    for sync in spec.syncs:
        first.setdefault(sync.crm, sync)
    return spec.model_copy(update={"syncs": list(first.values())})


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot, from /proc/stat (Linux; (0, 0)
    elsewhere): what every process on the machine used, the stack's and anything else's."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else 0.0
