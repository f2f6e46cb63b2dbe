"""Crashes: the process running a sync is killed (SIGKILL, nothing runs after it) at random
points of a large partition, between requests, with requests in flight, and inside the writes
of the sync store; then the partition runs again.

After every kill: the sync store passes `PRAGMA integrity_check` (on PostgreSQL: reads), no CRM record exists twice,
every row the state calls synced is in the CRM with its values, and every Superleap record whose
answer the dead run never read still has its write-ahead entry. After the reruns: the promise
holds in full (crm_sync_tests/invariant.py), with no record created twice, Superleap included.

The run is a forked child (`sync_once`: validation, run_upsert, the retry of transient rows)
so that the kill is real; the sandbox delays some answers after committing (0.3 s) to widen
the window in which a request has been applied but not answered.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
import signal
import threading
import time
from contextlib import contextmanager

import pytest

from crm_sync.extract.sources import SourceResource
from crm_sync.state.bulkjobs import BulkJobLog
from crm_sync.state.store import SyncStore
from crm_sync.state.writeahead import WriteAheadLog
from crm_sync_tests import invariant as inv
from crm_sync_tests.conftest import BACKENDS

pytestmark = pytest.mark.reliability

ROWS = 1200
CHUNK_ROWS = 250  # several state transactions per run
BATCH = {"superleap": 100, "hubspot": 100, "salesforce": 200, "brevo": 250}
RECONCILE_AFTER = inv.RECONCILE_AFTER  # the reruns wait that long for unanswered creates
FORK = multiprocessing.get_context("fork")


def _child(crm: str, url: str, store_path: str, data_dir: str, kill_inside: tuple | None):
    """The sync run that gets killed (runs in the forked process)."""
    if kill_inside is not None:
        _arm(*kill_inside)
    spec = inv.spec_for(crm)
    crm_resource = inv.resource(crm, url, batch_size=BATCH[crm], reconcile_after_seconds=
                                RECONCILE_AFTER) if crm == "superleap" else \
        inv.resource(crm, url, batch_size=BATCH[crm])
    inv.sync_once(spec, SourceResource(data_dir=data_dir), crm_resource, SyncStore(store_path),
                  chunk_rows=CHUNK_ROWS)


def _arm(target: str, nth: int) -> None:
    """Kill this process inside its `nth` write of `target` ("state": record_results with
    confirmed rows; "write_ahead": the log of creates), after every statement of the
    transaction ran and before its COMMIT."""
    calls = itertools.count(1)
    armed = threading.local()  # writes run in worker threads, several at once
    transaction = SyncStore.transaction

    @contextmanager
    def dying_transaction(self, *args, **kwargs):
        with transaction(self, *args, **kwargs) as conn:
            yield conn
            if getattr(armed, "now", False):
                os.kill(os.getpid(), signal.SIGKILL)

    SyncStore.transaction = dying_transaction
    owner, name = (SyncStore, "record_results") if target == "state" else (WriteAheadLog, "log")
    method = getattr(owner, name)

    def counting(self, *args, **kwargs):
        state_rows = args[3] if len(args) > 3 else kwargs.get("state_rows", ())
        armed.now = (target == "write_ahead" or bool(state_rows)) and next(calls) == nth
        try:
            return method(self, *args, **kwargs)
        finally:
            armed.now = False

    setattr(owner, name, counting)


def _run_and_kill(crm, url, store, data_dir, *, when=None, after: float | None = None,
                  kill_inside: tuple | None = None) -> bool:
    """Start the run; SIGKILL it once `when()` is true, `after` seconds later (or let it kill
    itself: `kill_inside`). True if it died by the signal, False if it finished first."""
    proc = FORK.Process(target=_child, args=(crm, url, store.connect_string(), data_dir,
                                                      kill_inside))
    proc.start()
    if when is not None:
        deadline = time.monotonic() + 60
        while proc.is_alive() and not when() and time.monotonic() < deadline:
            time.sleep(0.01)
    proc.join(after or 0 if when is not None else 60)
    if proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    assert proc.exitcode is not None, "the child did not end"
    assert proc.exitcode in (0, -signal.SIGKILL), f"the run failed: exit code {proc.exitcode}"
    return proc.exitcode == -signal.SIGKILL


def _rerun_resource(crm, url):
    if crm == "superleap":
        return inv.resource(crm, url, batch_size=BATCH[crm],
                            reconcile_after_seconds=RECONCILE_AFTER)
    return inv.resource(crm, url, batch_size=BATCH[crm])


def _setup(crm, seed, sandbox, tmp_path):
    spec = inv.spec_for(crm)
    source = inv.write_source(tmp_path / "data", crm, ROWS, seed)
    sandbox.post("/_sandbox/faults", json={"seed": seed, "rate_delay_after_commit": 0.3,
                                           "delay_seconds": 0.3}).raise_for_status()
    return spec, source, inv.read_source(spec, source)


def _after_kill(sandbox, store, spec, frame) -> inv.Tally:
    assert inv.integrity(store) == "ok"
    return inv.check(sandbox, store, spec, frame, settled=False, crashed=True)


def _settle(crm, url, sandbox, store, spec, source, frame) -> tuple[inv.Tally, int]:
    sandbox.post("/_sandbox/faults", json={}).raise_for_status()
    runs = inv.converge(spec, source, _rerun_resource(crm, url), store, sandbox, rounds=5,
                        pause=RECONCILE_AFTER)
    assert inv.integrity(store) == "ok"
    return inv.check(sandbox, store, spec, frame, settled=True), runs


def _requests(sandbox) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get("requests total", 0)


# Requests a full run of ROWS rows makes, roughly (Brevo: upserts, polls and read-backs).
REQUESTS = {"superleap": 12, "hubspot": 12, "salesforce": 6, "brevo": 24}


# On PostgreSQL too: a killed client's transaction is rolled back by the server (a subset:
# one Superleap and one HubSpot run; every kill inside a store transaction; the lost answer).
@pytest.mark.parametrize("crm,seed,store_backend", [
    ("superleap", 41, "sqlite"), ("superleap", 42, "sqlite"), ("hubspot", 43, "sqlite"),
    ("salesforce", 44, "sqlite"), ("brevo", 45, "sqlite"),
    ("superleap", 41, "postgresql"), ("hubspot", 43, "postgresql")], indirect=["store_backend"])
def test_sigkill_at_random_points_then_rerun(crm, seed, sandbox, sandbox_url, store, tmp_path):
    spec, source, frame = _setup(crm, seed, sandbox, tmp_path)
    rng = random.Random(seed)
    kills, points, unknown = 0, [], 0
    for attempt in range(3):  # killed, run again and killed again, ...
        # A random point of the run: after its n-th request reached the CRM, plus a random
        # delay (between requests, requests in flight, chunks being recorded). Each rerun has
        # less left to send, so its point is drawn from a shorter range.
        n = rng.randint(1, max(REQUESTS[crm] // (attempt + 1), 1))
        delay = round(rng.uniform(0.0, 0.3), 2)
        points.append((n, delay))
        start = _requests(sandbox)
        kills += _run_and_kill(crm, sandbox_url, store, source.data_dir, after=delay,
                               when=lambda: _requests(sandbox) >= start + n)
        unknown += _after_kill(sandbox, store, spec, frame).unknown
    faults = inv.injected(sandbox)
    after, runs = _settle(crm, sandbox_url, sandbox, store, spec, source, frame)
    inv.record("crash_random", crm, seed, after, faults, kills=kills,
               kill_points=points, unanswered_at_kill=unknown, reruns=runs)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("target,nth", [("state", 2), ("write_ahead", 4)])
def test_sigkill_inside_a_sync_store_transaction(target, nth, sandbox, sandbox_url, store,
                                                 tmp_path):
    crm, seed = "superleap", 46
    spec, source, frame = _setup(crm, seed, sandbox, tmp_path)
    assert _run_and_kill(crm, sandbox_url, store, source.data_dir, kill_inside=(target, nth))
    tally = _after_kill(sandbox, store, spec, frame)
    confirmed = len(store.state_frame(spec.name))
    assert confirmed < tally.valid and (confirmed > 0 or target != "state")
    faults = inv.injected(sandbox)
    after, runs = _settle(crm, sandbox_url, sandbox, store, spec, source, frame)
    inv.record(f"crash_in_{target}", crm, seed, after, faults, kills=1, confirmed=confirmed,
               unanswered_at_kill=tally.unknown, reruns=runs)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_sigkill_after_superleap_committed_and_before_it_answered(sandbox, sandbox_url, store,
                                                                  tmp_path):
    crm, seed = "superleap", 47
    spec, source, frame = _setup(crm, seed, sandbox, tmp_path)
    # Every answer comes 3 s after Superleap committed: kill the run inside that window.
    sandbox.post("/_sandbox/faults", json={"seed": seed, "rate_delay_after_commit": 1.0,
                                           "delay_seconds": 3}).raise_for_status()
    assert _run_and_kill(crm, sandbox_url, store, source.data_dir,
                         when=lambda: len(inv.stored_records(sandbox, crm)) >= BATCH[crm])
    tally = _after_kill(sandbox, store, spec, frame)
    assert tally.unknown >= BATCH[crm]  # created in Superleap, unknown to the dead run
    assert store.state_frame(spec.name).empty
    faults = inv.injected(sandbox)
    after, runs = _settle(crm, sandbox_url, sandbox, store, spec, source, frame)
    assert after.duplicates == 0 and after.in_crm == after.valid  # adopted, not created twice
    inv.record("crash_after_commit", crm, seed, after, faults, kills=1,
               unanswered_at_kill=tally.unknown, reruns=runs)


def _jobs(sandbox, method: str) -> int:
    return sandbox.get("/_sandbox/stats").json()["counters"].get(
        f"requests {method} salesforce jobs", 0)


@pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)
def test_sigkill_between_the_bulk_upload_and_its_results(sandbox, sandbox_url, store, tmp_path):
    """A partition above bulk_threshold goes through one Bulk API 2.0 job; the run is killed
    once the job is closed (its first poll: UploadComplete was answered) and before its results
    are read. The rerun collects that job's results and uploads nothing again."""
    crm, seed, rows = "salesforce", 48, 2500
    spec = inv.spec_for(crm)
    source = inv.write_source(tmp_path / "data", crm, rows, seed)
    frame = inv.read_source(spec, source)
    sandbox.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 3.0}).raise_for_status()
    try:
        assert _run_and_kill(crm, sandbox_url, store, source.data_dir,
                             when=lambda: _jobs(sandbox, "GET") >= 1)
        tally = _after_kill(sandbox, store, spec, frame)
        assert store.state_frame(spec.name).empty  # the dead run recorded nothing
        held = BulkJobLog(store, spec.name).pending(frame[spec.source_key].astype(str))
        assert len(held) == tally.valid > spec.bulk_threshold  # every valid row, one job
        assert len({job for job, _ in held.values()}) == 1
        assert (_jobs(sandbox, "POST"), _jobs(sandbox, "PUT"), _jobs(sandbox, "PATCH")) == \
            (1, 1, 1)
        after, runs = _settle(crm, sandbox_url, sandbox, store, spec, source, frame)
    finally:
        sandbox.post("/_sandbox/salesforce/bulk", json={"processing_seconds": 0.5})
    assert (_jobs(sandbox, "POST"), _jobs(sandbox, "PUT")) == (1, 1)  # collected, not resent
    assert after.duplicates == 0 and after.in_crm == after.valid
    assert BulkJobLog(store, spec.name).pending(frame[spec.source_key].astype(str)) == {}
    inv.record("crash_bulk_job", crm, seed, after, kills=1, reruns=runs)
