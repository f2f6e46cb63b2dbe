"""Section 7: a peer, side by side. The same rows synced to HubSpot contacts by crm_sync and by
drt-core (https://github.com/drt-hub/drt, an optional `bench` dependency), each on an empty
sandbox that enforces HubSpot's allowance (`--hubspot-rate-limit` / `--hubspot-window-seconds`):
rows per request, rows per second under the allowance, client CPU per 1,000 rows, and whether
both leave the same records in the CRM.

drt's HubSpot destination (drt/destinations/hubspot.py, drt-core 1.2.1) writes one record per
request: `POST /crm/v3/objects/{objectType}` with `{"properties", "idProperty"}`, and on a 409
`PATCH .../{id}?idProperty=`, paced by its own limiter capped at 9 requests per second. It has no
base-URL setting (the URL is the module constant `https://api.hubapi.com/crm/v3/objects`), so
drt runs in a child process of its own (peer_drt.py) whose network layer is fenced: httpx's
transport rewrites `api.hubapi.com` to the sandbox on 127.0.0.1 and refuses every other host,
and socket connections and name look-ups to anything but 127.0.0.1 / localhost raise. drt's own
code is not changed.
"""

from __future__ import annotations

import json
import os
import subprocess  # nosec B404  # our own child: this interpreter, this module
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from crm_sync.devtools.bench.throughput import RATE_LIMITED_CRM
from crm_sync.devtools.bench.util import Stopwatch, counters, read_table, reset
from crm_sync.connectors import RESOURCE_CLASSES
from crm_sync.sandbox.app import DEFAULT_TOKENS, TOKEN_ENV
from crm_sync.spec import Spec, SyncSpec
from crm_sync.state.store import SyncStore
from crm_sync.load.runner import run_upsert
from crm_sync.transform.validate import validate_partition

PEER = "drt-core"
CHILD = "crm_sync.devtools.bench.peer_drt"  # the child that runs drt's sync
ENABLE = "pip install 'crm_sync[bench]'"
# Set by the sandbox on every write, so not compared between the two tools' records.
_STAMPS = ("hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate")


def peer_version() -> str | None:
    """drt-core's version when it is installed, else None."""
    from importlib import metadata

    try:
        return metadata.version(PEER)
    except metadata.PackageNotFoundError:
        return None


def _per(amount: float, unit: float) -> float:
    return amount / unit if unit else 0.0


@dataclass
class Side:
    """One tool's sync of the rows."""

    tool: str
    rows: int = 0  # rows written (the tool's own count)
    requests: int = 0  # write requests the sandbox counted
    seconds: float = 0.0
    cpu: float = 0.0  # client CPU seconds (the tool's process, from source file to CRM)
    rate_limited: int = 0
    failed: int = 0
    records: dict = field(default_factory=dict, repr=False)

    @property
    def rows_per_request(self) -> float:
        return _per(self.rows, self.requests)

    @property
    def rows_per_second(self) -> float:
        return _per(self.rows, self.seconds)

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * _per(self.cpu, self.rows)

    def allowance_rows_per_second(self, allowance: int, window: float) -> float:
        """The rows per second HubSpot's allowance lets this tool carry at most."""
        return self.rows_per_request * allowance / window


@dataclass
class Peer:
    rows: int
    allowance: int
    window_seconds: float
    version: str | None = None  # drt-core's; None: not installed, section skipped
    ours: Side | None = None
    theirs: Side | None = None
    same_records: bool = False
    differing: list = field(default_factory=list)
    refused_hosts: list = field(default_factory=list)  # drt requests fenced off (must be [])


def side_by_side(spec: Spec, data: Path, rows: int, url: str, workdir: Path, allowance: int,
                 window: float, log=print) -> Peer:
    """`rows` contacts rows (the first ones crm_sync finds valid), written to one file both
    tools read; crm_sync's sync, then drt's, each on an emptied sandbox."""
    result = Peer(rows, allowance, window, version=peer_version())
    if result.version is None:
        log(f"  {PEER} is not installed: section skipped (enable it: {ENABLE})")
        return result
    sync = next(s for s in spec.syncs if s.crm == RATE_LIMITED_CRM)
    source = _rows_file(sync, data, rows, workdir / "peer")
    time.sleep(window)  # a rolling window spent by an earlier section frees up first
    result.rows = len(source)
    result.ours = _ours(sync, workdir / "peer", url, workdir, allowance, window)
    log(f"  crm_sync: {_line(result.ours)}")
    result.theirs = _theirs(sync, workdir / "peer", url, result)
    log(f"  {PEER} {result.version}: {_line(result.theirs)}")
    ours, theirs = result.ours.records, result.theirs.records
    result.differing = sorted(k for k in ours.keys() | theirs.keys()
                              if ours.get(k) != theirs.get(k))[:5]
    result.same_records = not result.differing and len(ours) == result.rows
    reset(url)
    return result


def _line(side: Side) -> str:
    return (f"{side.rows:,} rows in {side.requests:,} requests, {side.rows_per_second:,.1f} "
            f"rows/s, {side.cpu_per_1000:.3f} CPU s per 1,000 rows")


def _rows_file(sync: SyncSpec, data: Path, rows: int, folder: Path):
    """The first `rows` source rows crm_sync's validation passes, as `<source>.csv` in
    `folder` (the rows crm_sync would quarantine are not the comparison's subject)."""
    source = read_table(data, sync.source, int(rows * 1.2) + 20)
    valid = validate_partition(sync, source).valid
    keep = source.loc[valid.index[:rows]]
    folder.mkdir(parents=True, exist_ok=True)
    keep.to_csv(folder / f"{sync.source}.csv", index=False)
    return keep


def _records(url: str, sync: SyncSpec) -> dict:
    """The CRM's records by their matching key, without the values the CRM stamps."""
    answer = httpx.get(f"{url}/_sandbox/records/{sync.crm}/{sync.object}", timeout=120)
    answer.raise_for_status()
    out = {}
    for record in answer.json()["records"]:
        props = {k: v for k, v in record["properties"].items() if k not in _STAMPS}
        out[props.get(sync.matching_key)] = props
    return out


def _ours(sync: SyncSpec, folder: Path, url: str, workdir: Path, allowance: int,
          window: float) -> Side:
    """crm_sync: read the file, validate, upsert (plan, send, record), with the connector at
    its defaults for the allowance (as section 3), in this process."""
    reset(url)
    store_path = workdir / "peer-store.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_path}{suffix}").unlink(missing_ok=True)
    store = SyncStore(store_path)
    resource = RESOURCE_CLASSES[sync.crm](base_url=url, token=DEFAULT_TOKENS[sync.crm],
                                          requests_per_window=allowance, window_seconds=window)
    before = counters(url)
    with Stopwatch() as watch:
        valid = validate_partition(sync, read_table(folder, sync.source)).valid
        report = run_upsert(sync, valid, resource, store, partition="bench")
    report.check()
    side = Side("crm_sync", rows=report.created + report.updated, seconds=watch.wall,
                cpu=watch.cpu, failed=report.failed)
    _count(side, url, before)
    side.records = _records(url, sync)
    return side


def _count(side: Side, url: str, before: dict) -> None:
    after = counters(url)

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    side.requests = sum(delta(k) for k in after if k.startswith(("requests POST",
                                                                 "requests PATCH")))
    side.rate_limited = delta("rate_limited total")


def _theirs(sync: SyncSpec, folder: Path, url: str, peer: Peer) -> Side:
    """drt: its own engine (`drt.engine.sync.run_sync`) with its DuckDB source reading the
    same file and its HubSpot destination, in a child process fenced to the sandbox."""
    reset(url)
    config = {"url": url, "file": str(folder / f"{sync.source}.csv"), "object": sync.object,
              "token_env": TOKEN_ENV[sync.crm],
              "id_property": sync.matching_key,
              "columns": {name: m.column for name, m in sync.fields.items()},
              "requests_per_second": peer.allowance / peer.window_seconds}
    env = {**os.environ, "DO_NOT_TRACK": "1",
           TOKEN_ENV[sync.crm]: DEFAULT_TOKENS[sync.crm]}
    before = counters(url)
    # B603: this interpreter running this module, with a JSON config we built.
    done = subprocess.run([sys.executable, "-m", CHILD, json.dumps(config)],  # nosec
                          env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{PEER} child failed: {done.stderr[-2000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    peer.refused_hosts = out["refused"]
    side = Side(PEER, rows=out["success"], seconds=out["seconds"], cpu=out["cpu"],
                failed=out["failed"])
    _count(side, url, before)
    side.records = _records(url, sync)
    return side


def alone(rows: int, workdir: Path, allowance: int = 100, window: float = 10.0) -> Peer:
    """This section by itself (to develop it): generated tables, a sandbox enforcing the
    allowance, both syncs."""
    from crm_sync.devtools.bench.util import bench_spec, sandbox, sandbox_tokens
    from crm_sync.devtools.generate import BASE_SIZES, generate

    sandbox_tokens()
    generate(workdir / "data", scale=max(rows * 1.5 / min(BASE_SIZES.values()), 0.01))
    with sandbox(workdir / "sandbox-peer.sqlite", "--hubspot-rate-limit", str(allowance),
                 "--hubspot-window-seconds", f"{window:g}") as (url, _):
        return side_by_side(bench_spec(), workdir / "data", rows, url, workdir, allowance,
                            window)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "alone":
        result = alone(int(argv[1]) if len(argv) > 1 else 200, Path(".crm_sync/bench-peer"))
        print({k: v for k, v in vars(result).items() if k not in ("ours", "theirs")})
        return 0
    print("usage: python -m crm_sync.devtools.bench.peer alone [rows]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
