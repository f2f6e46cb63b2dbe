"""The production stack: one Dagster backfill of 7 partitions of the benchmark's four syncs on
deploy/dagster.yaml (PostgreSQL storage, the QueuedRunCoordinator, one slot per CRM pool), its
runs in parallel, against the same backfill with its runs one after another.

    python -m crm_sync.devtools.bench.stack [--scale S] [--workdir DIR]

One stack for both passes: a throwaway PostgreSQL server (Dagster's storage and crm_sync's sync
store), a DAGSTER_HOME holding deploy/dagster.yaml, the CRM sandbox, the real
`dagster-daemon run` and `dagster-webserver` on deploy/workspace.yaml. Each pass is ONE asset
backfill launched through the webserver's GraphQL API (`launchPartitionBackfill`, as the UI
launches one); the daemon turns it into one run per partition. The parallel pass runs under
deploy/dagster.yaml as it is (max_concurrent_runs 8); the sequential pass carries a tag whose
tag_concurrency_limit (the only line added to the copy) is 1, so its runs go one at a time on
the same daemon, code servers, database and CRMs. Between the passes the sandbox and the sync
store are emptied, so both do the same work: every row created.

What the runs wait on is what a deployment waits on: the CRMs' allowances. The sandbox enforces
HubSpot's rolling window (100 requests per 10 s) and Brevo at 10 requests/s, and the client
limiters are crm_sync's defaults (the same 100 per 10 s and 10/s; Superleap 10/s, Salesforce
20/s). From the runs' STEP_START / STEP_SUCCESS events: the steps in one CRM's pool (upsert,
replay) never overlapped (asserted), and how many pool steps of different CRMs ran at once.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess  # nosec B404: our own Dagster processes, fixed argument lists, no shell
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

import crm_sync
from crm_sync.devtools.bench.stack_events import (max_overlap, most_at_once, pool_spans,
                                                  pool_steps)
from crm_sync.devtools.bench.util import (bench_spec, busy_share, machine_cpu, reset, sandbox,
                                          sandbox_tokens)
from crm_sync.devtools.generate import generate
from crm_sync.pipeline.sync_steps import sync_asset_names
from crm_sync.sandbox.app import TOKEN_ENV
from crm_sync.sandbox.server import free_port
from crm_sync.spec import DEFAULT_SPEC_PATH, PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
BIN = Path(sys.executable).parent  # the environment's dagster-webserver and dagster-daemon
PARTITIONS = [f"2026-11-0{day}" for day in range(1, 8)]  # the generator's 7 days
MODE_TAG = "crm_sync/bench_mode"  # the sequential pass's runs: one at a time
SCALE = 16.0  # generator scale: ~3,400 leads and contacts per partition (seconds per upsert)
# The allowances the sandbox enforces (crm-sync sandbox flags); the client limiters are the
# connectors' defaults, the same rates (crm_sync/connectors/hubspot.py, brevo.py).
SANDBOX_LIMITS = ("--hubspot-rate-limit", "100", "--hubspot-window-seconds", "10",
                  "--brevo-rate-limit", "10")
START_SECONDS, PASS_SECONDS = 240, 1800  # generous: a shared 2-core machine
# The runs' executor (run config, both passes alike): Dagster's default for asset jobs is
# `multiprocess`, one new Python process per step (16 per run here, each loading the code
# location); `in_process` runs a run's steps in its run worker, one after another, so the
# parallelism is the runs', which the CRM pools govern (BENCHMARKS.md "Round 2").
EXECUTOR = "in_process"


@dataclass
class Pass:
    label: str
    seconds: float = 0.0  # backfill launched -> its last run ended
    runs: int = 0
    succeeded: int = 0
    spans: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # by CRM
    rows_in: int = 0  # source rows of the partitions
    accounted: int = 0  # rows in the sync state (confirmed) or quarantined
    run_spans: list[tuple[float, float]] = field(default_factory=list)  # from the launch
    cpu_busy: float = 0.0  # share of the machine's cores busy during the pass (/proc/stat)

    @property
    def timeline(self) -> str:
        """When the runs started (from the backfill's launch) and how long each took."""
        if not self.run_spans:
            return "no runs"
        starts = sorted(start for start, _ in self.run_spans)
        took = [end - start for start, end in self.run_spans]
        return (f"runs started at +{', +'.join(f'{s:.0f}' for s in starts)} s, each took "
                f"{min(took):.0f}-{max(took):.0f} s")

    @property
    def max_overlap_seconds(self) -> float:
        """The longest time two steps of one CRM's pool ran at once (0: never)."""
        return max((max_overlap(s) for s in self.spans.values()), default=0.0)

    @property
    def busy_seconds(self) -> dict[str, float]:
        """Per CRM, the seconds its pool steps ran (one at a time: the CRM's own chain)."""
        return {crm: sum(end - start for start, end in spans)
                for crm, spans in sorted(self.spans.items())}

    @property
    def most_at_once(self) -> int:
        """The most pool steps (of different CRMs) running at one moment."""
        return most_at_once([s for spans in self.spans.values() for s in spans])


@dataclass
class Stack:
    parallel: Pass
    sequential: Pass
    partitions: list[str]
    executor: str = EXECUTOR
    enforced: str = ("sandbox: HubSpot 100 requests/10 s, Brevo 10/s; client limiters: "
                     "crm_sync's defaults (HubSpot 100/10 s, Brevo, Superleap 10/s, "
                     "Salesforce 20/s)")

    @property
    def ratio(self) -> float:
        return self.sequential.seconds / self.parallel.seconds if self.parallel.seconds else 0.0


def set_pools(instance, spec) -> None:
    """Each CRM's pool set to deploy/dagster.yaml's default limit (1) before any run, as
    `dagster instance concurrency set crm_<crm> 1` does. Left to the default, the first runs
    that claim a new pool at the same moment can fail on PostgreSQL: Dagster 1.13 inserts the
    pool's row, and on a duplicate key its fallback UPDATE runs in the aborted transaction
    (InFailedSqlTransaction; dagster-io/dagster#33552, seen in this bench's first runs)."""
    limit = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["concurrency"]["pools"][
        "default_limit"]
    for crm in sorted({s.crm for s in spec.syncs}):
        instance.event_log_storage.set_concurrency_slots(f"crm_{crm}", limit)


def write_spec(path: Path, spec) -> Path:
    """The bundled syncs.yaml with only the benchmark's syncs, without relationships or
    schedules (bench_spec): what the code location loads ($CRM_SYNC_SPEC)."""
    raw = yaml.safe_load(DEFAULT_SPEC_PATH.read_text())
    names = {s.name for s in spec.syncs}
    raw["syncs"] = [s for s in raw["syncs"] if s["name"] in names]
    for sync in raw["syncs"]:
        sync.pop("associations", None)
        sync.pop("schedule", None)
    path.write_text(yaml.safe_dump(raw))
    return path


def write_home(home: Path) -> Path:
    """DAGSTER_HOME with deploy/dagster.yaml, plus one limit: runs tagged MODE_TAG=sequential
    one at a time, and a longer code-server start timeout (every other setting as deployed)."""
    home.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["concurrency"]["runs"]["tag_concurrency_limits"] = [
        {"key": MODE_TAG, "value": "sequential", "limit": 1}]
    # On a loaded 2-core machine a code server can take minutes to start (default 180 s).
    config["code_servers"] = {"local_startup_timeout": 600}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return home


def _postgres_server():
    """The tests' throwaway PostgreSQL server (initdb + pg_ctl on a temporary directory)."""
    try:
        from crm_sync.devtools.pg_server import postgres_server
    except ImportError:
        from crm_sync_tests.pg_server import postgres_server
    return postgres_server()


def _recreate_database(server, name: str) -> str:
    import psycopg

    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


@contextmanager
def _process(cmd: list[str], env: dict, log: Path):
    """A Dagster process in its own process group; stopped with what it started (code
    servers, run workers) when the block ends."""
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env,  # nosec B603: fixed arguments
                            stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(timeout=wait)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


def _graphql(url: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                          timeout=60)
    response.raise_for_status()
    body = response.json()
    if "errors" in body:
        raise RuntimeError(f"GraphQL errors: {body['errors']}")
    return body["data"]


LOCATIONS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
LAUNCH = """mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename ... on LaunchBackfillSuccess { backfillId } ... on Error { message } } }"""


def wait_for_location(url: str, procs, logs: list[Path]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"a Dagster process exited\n{_tails(logs)}")
        try:
            entries = _graphql(url, LOCATIONS)["workspaceOrError"]["locationEntries"]
        except httpx.HTTPError:
            entries = []  # not listening yet
        entry = next((e for e in entries if e["name"] == "crm_sync"), None)
        if entry and entry["loadStatus"] == "LOADED":
            if entry["locationOrLoadError"]["__typename"] != "RepositoryLocation":
                raise RuntimeError(f"crm_sync did not load: {entry}")
            return
        time.sleep(1)
    raise RuntimeError(f"crm_sync's code location did not load\n{_tails(logs)}")


def launch(url: str, spec, partitions: list[str], label: str, executor: str = EXECUTOR) -> str:
    """ONE asset backfill of every asset of the syncs, for the partitions (as the UI's
    "Materialize..." on a selection launches it), its runs on Dagster's `executor`."""
    keys = [{"path": [name]} for sync in spec.syncs for name in sync_asset_names(sync)]
    result = _graphql(url, LAUNCH, {"params": {
        "assetSelection": keys, "partitionNames": partitions, "title": f"bench {label}",
        "tags": [{"key": MODE_TAG, "value": label}],
        "runConfigData": {"execution": {"config": {executor: {}}}},
    }})["launchPartitionBackfill"]
    if result["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError(f"the backfill was refused: {result}")
    return result["backfillId"]


def wait_for_runs(instance, backfill_id: str, count: int, logs: list[Path]) -> list:
    """The backfill's run records, once `count` runs exist and all have finished."""
    import dagster as dg

    deadline = time.monotonic() + PASS_SECONDS
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter.for_backfill(backfill_id))
        if len(records) >= count and all(r.dagster_run.is_finished for r in records):
            return records
        time.sleep(0.5)
    raise RuntimeError(f"backfill {backfill_id} did not finish\n{_tails(logs)}")


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}"
                     for log in logs if log.exists())


def _accounted(spec, store_url: str) -> int:
    from crm_sync.state.store import SyncStore

    store = SyncStore(store_url)
    return sum(len(store.state_frame(s.name)) + len(store.quarantine_frame(s.name))
               for s in spec.syncs)


def _source_rows(spec, data: Path, partitions: list[str]) -> int:
    import duckdb

    total = 0
    with duckdb.connect() as conn:
        for table in {s.source for s in spec.syncs}:
            total += conn.execute(
                "SELECT count(*) FROM read_csv(?, all_varchar=true, header=true) WHERE "
                "strftime(TRY_CAST(updated_at AS TIMESTAMPTZ) AT TIME ZONE 'UTC', '%Y-%m-%d') "
                "IN (SELECT unnest(?))", [str(data / f"{table}.csv"), partitions]).fetchone()[0]
    return total


def run_pass(label: str, ctx: dict, log=print) -> Pass:
    """Empty the CRMs and the sync store, launch the backfill, wait for its runs."""
    import dagster as dg

    spec, partitions = ctx["spec"], ctx["partitions"]
    reset(ctx["sandbox"])
    _recreate_database(ctx["server"], ctx["store_db"])
    started, cpu = time.time(), machine_cpu()
    backfill_id = launch(ctx["url"], spec, partitions, label, ctx["executor"])
    records = wait_for_runs(ctx["instance"], backfill_id, len(partitions), ctx["logs"])
    result = Pass(label, max(r.end_time for r in records) - started, len(records))
    result.cpu_busy = busy_share(cpu, machine_cpu())
    result.succeeded = sum(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in records)
    result.spans = pool_spans(ctx["instance"], [r.dagster_run.run_id for r in records],
                              pool_steps(spec))
    result.rows_in = ctx["rows_in"]
    result.run_spans = [(r.start_time - started, r.end_time - started) for r in records]
    # a URL of its own per pass: this process's pooled connections to the store of the pass
    # before were ended when its database was dropped (crm_sync/state/backends.py `_pool`)
    result.accounted = _accounted(spec, f"{ctx['store_url']}?application_name=bench_{label}")
    log(f"  {label}: {result.runs} runs ({result.succeeded} succeeded) in "
        f"{result.seconds:.1f} s; one CRM's pool steps overlapped at most "
        f"{result.max_overlap_seconds:.2f} s; {result.most_at_once} pool steps at once; "
        f"CRMs busy {', '.join(f'{c} {b:.0f} s' for c, b in result.busy_seconds.items())}; "
        f"{result.timeline}; the machine's {os.cpu_count()} cores {result.cpu_busy:.0%} busy")
    if result.succeeded != result.runs:
        raise RuntimeError(f"{label}: runs failed\n{_tails(ctx['logs'])}")
    return result


def _environment(server, home: Path, workdir: Path, data: Path, url: str, ctx: dict) -> dict:
    dagster_db = server.create_database("dagster")
    ctx["store_db"] = "crm_sync_store"
    ctx["store_url"] = server.url(_recreate_database(server, ctx["store_db"]))
    env = {
        "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": server.host,
        "DAGSTER_PG_PORT": str(server.port), "DAGSTER_PG_USERNAME": server.user,
        "DAGSTER_PG_PASSWORD": "",  # nosec B105: trust auth on 127.0.0.1, no password
        "DAGSTER_PG_DB": dagster_db,
        "CRM_SYNC_SPEC": str(write_spec(workdir / "syncs.yaml", ctx["spec"])),
        "CRM_SYNC_DATA_DIR": str(data), "CRM_SYNC_STORE": ctx["store_url"],
        "CRM_SYNC_IO_PATH": str(workdir / "io"),
        **{f"{crm.upper()}_BASE_URL": url for crm in TOKEN_ENV},
        # gRPC calls to a busy code server (launching a run) wait longer than Dagster's 60 s
        "DAGSTER_GRPC_TIMEOUT_SECONDS": "300",
    }
    os.environ.update(env)  # this process reads the same instance
    package_root = str(Path(crm_sync.__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path}


def production_stack(workdir: Path, scale: float | None = None,
                     partitions: list[str] | None = None, log=print,
                     executor: str = EXECUTOR) -> Stack:
    """Both passes (parallel first) on one stack; see the module's docstring."""
    import dagster as dg

    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    generate(data, scale=scale or SCALE)
    sandbox_tokens()
    ctx = {"spec": bench_spec(), "partitions": partitions or PARTITIONS, "executor": executor}
    ctx["rows_in"] = _source_rows(ctx["spec"], data, ctx["partitions"])
    home = write_home(workdir / "dagster_home")
    port = free_port()
    ctx["url"], workspace = f"http://127.0.0.1:{port}", str(DEPLOY / "workspace.yaml")
    ctx["logs"] = [workdir / "webserver.log", workdir / "daemon.log"]
    with ExitStack() as stack:
        ctx["server"] = stack.enter_context(_postgres_server())
        ctx["sandbox"], _ = stack.enter_context(sandbox(workdir / "sandbox.sqlite",
                                                        *SANDBOX_LIMITS))
        env = _environment(ctx["server"], home, workdir, data, ctx["sandbox"], ctx)
        procs = [stack.enter_context(_process(
            [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p",
             str(port)], env, ctx["logs"][0])),
                 stack.enter_context(_process([str(BIN / "dagster-daemon"), "run", "-w",
                                               workspace], env, ctx["logs"][1]))]
        log(f"  stack: {ctx['rows_in']:,} source rows in {len(ctx['partitions'])} partitions; "
            f"starting PostgreSQL, dagster-webserver, dagster-daemon")
        wait_for_location(ctx["url"], procs, ctx["logs"])
        ctx["instance"] = stack.enter_context(dg.DagsterInstance.get())
        set_pools(ctx["instance"], ctx["spec"])
        parallel = run_pass("parallel", ctx, log)
        sequential = run_pass("sequential", ctx, log)
    result = Stack(parallel, sequential, ctx["partitions"], executor)
    for p in (parallel, sequential):
        if p.max_overlap_seconds > 0:
            raise AssertionError(f"{p.label}: two upserts into one CRM overlapped by "
                                 f"{p.max_overlap_seconds:.2f} s: {p.spans}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm_sync.devtools.bench.stack")
    parser.add_argument("--workdir", type=Path, default=PROJECT_ROOT / ".crm_sync" / "stack")
    parser.add_argument("--scale", type=float, default=SCALE)
    parser.add_argument("--executor", choices=["in_process", "multiprocess"], default=EXECUTOR)
    args = parser.parse_args(argv)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    result = production_stack(args.workdir, args.scale, executor=args.executor)
    print(f"sequential / parallel: {result.sequential.seconds:.1f} s / "
          f"{result.parallel.seconds:.1f} s = {result.ratio:.2f}x")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
