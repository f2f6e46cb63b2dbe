"""One run at a time per sync partition, across processes: a lease in the sync store.

Two runs of the same sync and partition at once (two backfills of the same days, a schedule
firing during a backfill) would both read "not synced yet" and both send the partition's rows;
Superleap creates have no idempotency key, so every new row would be created twice. So a run
owns the partition while it upserts it:

- each step of the sync that writes to the CRM (the upsert, `<sync>_replay`, `<sync>_mirror`:
  crm_sync/pipeline/sync_steps.py) takes the lease (`SyncStore.take_lease`: read and write in one
  write transaction, SQLite's BEGIN IMMEDIATE or PostgreSQL's advisory lock of the sync, so
  two runs never both take it) before its work, so no two of these
  steps of one sync partition ever run at once, whichever runs they belong to;
- a thread renews it every `LEASE_SECONDS / 4` while the run works;
- it is released at the end, whether the run succeeded or failed;
- a run killed with SIGKILL cannot release it: its lease expires `LEASE_SECONDS` after its last
  renewal and the next run takes it over.

A run that finds the partition held waits up to its `lease_wait_seconds` (run config; the CLI's
`--lease-wait`), then gives up with "skipped: partition P of sync S is being synced by another
run (owner O, since T)". Dry runs send nothing and take no lease.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import dagster as dg

from crm_sync.errors import PartitionBusy  # re-exported: its old home
from crm_sync.state.store import SyncStore

LEASE_SECONDS = 60.0  # a lease not renewed for this long belongs to a dead run
DEFAULT_WAIT_SECONDS = 120.0  # longer than LEASE_SECONDS: a crashed run's lease is taken over
POLL_SECONDS = 1.0
SKIPPED = "partition_busy"  # the `skipped` metadata of a run that gave up (crm_sync/pipeline/in_process.py)


def run_owner(run_id: str) -> str:
    """Who holds a lease, as the waiting run's message names it."""
    return f"run {run_id[:8]} (pid {os.getpid()} on {socket.gethostname()})"


def acquire(store: SyncStore, sync: str, partition: str, owner: str, wait_seconds: float,
            log: Callable[[str], None] | None = None, lease_seconds: float = LEASE_SECONDS,
            poll_seconds: float = POLL_SECONDS) -> None:
    """Take the lease, waiting up to `wait_seconds` for another run's to end or expire;
    raise PartitionBusy when it does not."""
    deadline = time.monotonic() + wait_seconds
    announced = None
    while True:
        holder = store.take_lease(sync, partition, owner, lease_seconds)
        if holder is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise PartitionBusy(sync, partition, holder)
        if log is not None and holder["owner"] != announced:
            held_by = PartitionBusy.held_by(sync, partition, holder)
            log(f"waiting up to {wait_seconds:.0f} s: {held_by}")
            announced = holder["owner"]
        time.sleep(min(poll_seconds, left))


@contextmanager
def held(store: SyncStore, sync: str, partition: str, owner: str,
         log: Callable[[str], None] | None = None, lease_seconds: float = LEASE_SECONDS):
    """Keep a taken lease renewed while the block runs; release it after."""
    stop = threading.Event()
    keeper = threading.Thread(target=_keep, daemon=True, name=f"lease {sync} {partition}",
                              args=(stop, store, sync, partition, owner, lease_seconds, log))
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()
        store.release_lease(sync, partition, owner)


def _keep(stop: threading.Event, store: SyncStore, sync: str, partition: str, owner: str,
          lease_seconds: float, log) -> None:
    while not stop.wait(lease_seconds / 4):
        try:
            if not store.renew_lease(sync, partition, owner, lease_seconds):
                # This process stalled past the expiry and another run took over; the
                # write-ahead log still keeps the two from creating the same record twice.
                if log is not None:
                    log(f"the lease of partition {partition} of sync {sync} expired "
                        f"and was taken by another run")
                return
        except store.errors as exc:  # a busy store: try again at the next tick
            if log is not None:
                log(f"could not renew the lease of partition {partition} of sync "
                    f"{sync}: {exc}")


@contextmanager
def partition_lease(store: SyncStore, sync: str, partition: str, owner: str,
                    wait_seconds: float = DEFAULT_WAIT_SECONDS, log=None,
                    lease_seconds: float = LEASE_SECONDS):
    """Own a sync partition for the block (acquire, then held)."""
    acquire(store, sync, partition, owner, wait_seconds, log, lease_seconds)
    with held(store, sync, partition, owner, log, lease_seconds):
        yield


def one_run_per_partition(sync_name: str):
    """Decorate the compute function of a sync step (upsert, replay, mirror): its work runs
    under the partition's lease (Dagster UI runs, schedules and the CLI alike). A run that cannot get it fails with
    one readable `dagster.Failure` marked `skipped` (the CLI counts it as skipped)."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(context, *args, **kwargs):
            config = kwargs.get("config")
            if config is None or config.dry_run:
                return fn(context, *args, **kwargs)
            store = context.resources.store.get()
            partition, owner = context.partition_key, run_owner(context.run_id)
            try:
                # (a warning: shown by the CLI, whose log level is WARNING)
                acquire(store, sync_name, partition, owner, config.lease_wait_seconds,
                        log=context.log.warning)
            except PartitionBusy as busy:
                raise dg.Failure(description=str(busy), allow_retries=False, metadata={
                    "skipped": SKIPPED, "owner": busy.holder["owner"]}) from None
            with held(store, sync_name, partition, owner, log=context.log.warning):
                return fn(context, *args, **kwargs)

        return wrapper

    return decorate
