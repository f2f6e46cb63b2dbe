"""Who may write which CRM record, decided in the sync store before a row is sent.

Two rules, checked in one write transaction per chunk so that concurrent runs (a backfill's
partitions in parallel processes, a schedule firing during a backfill) see each other:

1. **One source key per CRM record.** A matching value (normalised as the CRM compares it,
   crm_sync/transform/matching.py) belongs to the first source key that sends it (`matching_owners`,
   which keeps a digest of the value: an email may be a sensitive field).
   Another source key with the same value is not sent: DUPLICATE_MATCHING_KEY, naming the
   owner. A source key whose matching value changes moves to its new value (and frees the old).
2. **An older row never overwrites a newer one.** `sync_state.updated_at` holds the version
   (the source row's updated_at) the CRM confirmed; `sending` the version a run is sending
   right now. A row older than either is `superseded` (not sent). A row whose key another run
   is sending at this moment waits until that run has recorded its outcome (its request may
   reach the CRM after this one's otherwise), or until the claim is older than
   SENDING_TIMEOUT_SECONDS or its process is gone (its run crashed). A waiting chunk claims nothing meanwhile, so
   runs never wait for each other in a circle.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crm_sync.state.backends import upsert

SCHEMA = """
CREATE TABLE IF NOT EXISTS matching_owners (
    sync TEXT NOT NULL,
    matching_digest TEXT NOT NULL, -- sha256 of the value as the CRM compares it (transform/matching.py)
    source_key TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (sync, matching_digest)
);
CREATE INDEX IF NOT EXISTS matching_owners_by_key ON matching_owners (sync, source_key);
CREATE TABLE IF NOT EXISTS sending (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    updated_at TEXT NOT NULL,     -- the version (source updated_at, UTC ISO 8601) being sent
    run TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (sync, source_key)
);
"""

# A claim to be sending a row older than this is taken to be abandoned (its run crashed).
SENDING_TIMEOUT_SECONDS = 300

SEND, SUPERSEDED, BUSY, OWNED = "send", "superseded", "busy", "owned"

_REPLACE_OWNER = upsert("matching_owners", ("sync", "matching_digest", "source_key",
                                            "claimed_at"), key=2)
_REPLACE_SENDING = upsert("sending", ("sync", "source_key", "updated_at", "run", "since"), key=2)


@dataclass(frozen=True)
class Verdict:
    kind: str  # SEND, SUPERSEDED (by `other`, a newer version), BUSY, OWNED (by `other`, a key)
    other: str | None = None


def new_run() -> str:
    """A run's name in `sending`: `<pid>:<random>`, so that the claims of a run whose process
    is gone (killed) are not waited for."""
    return f"{os.getpid()}:{uuid.uuid4().hex}"


def _alive(run: str) -> bool:
    pid, _, _ = run.partition(":")
    if not pid.isdigit() or os.name == "nt":  # (on Windows signal 0 is CTRL_C_EVENT)
        return True
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists (another user's process)
    return True


def _json(values) -> str:
    return json.dumps([str(v) for v in values], ensure_ascii=False)


def claim(conn, sync: str, run: str, rows: list[tuple[str, str | None, str | None]],
          take: bool = True, now: float | None = None) -> list[Verdict]:
    """Inside a write transaction: one verdict per (source key, version, matching value).
    `take`: record the SEND rows' claims (False: a dry run only looks); nothing is claimed
    while any row is BUSY."""
    now = time.time() if now is None else now
    keys, values = [r[0] for r in rows], [r[2] for r in rows if r[2] is not None]
    owners = dict(conn.execute(
        "SELECT matching_digest, source_key FROM matching_owners WHERE sync = ? AND "
        "matching_digest IN (SELECT value FROM json_each(?))", (sync, _json(values))))
    confirmed = dict(conn.execute(
        "SELECT source_key, updated_at FROM sync_state WHERE sync = ? AND updated_at IS NOT NULL "
        "AND source_key IN (SELECT value FROM json_each(?))", (sync, _json(keys))))
    alive: dict[str, bool] = {}  # one look per other run
    flights = {}
    for key, version, other in conn.execute(
            "SELECT source_key, updated_at, run FROM sending WHERE sync = ? AND run != ? AND "
            "since > ? AND source_key IN (SELECT value FROM json_each(?))",
            (sync, run, now - SENDING_TIMEOUT_SECONDS, _json(keys))):
        if other not in alive:
            alive[other] = _alive(other)
        if alive[other]:
            flights[key] = version
    verdicts, taken, sent = [], [], []
    for key, version, value in rows:
        owner = owners.get(value) if value is not None else None
        newest = max((v for v in (confirmed.get(key), flights.get(key)) if v), default=None)
        if owner is not None and owner != key:
            verdicts.append(Verdict(OWNED, owner))
        elif version is not None and newest is not None and version < newest:
            verdicts.append(Verdict(SUPERSEDED, newest))
        elif key in flights:
            verdicts.append(Verdict(BUSY))  # the same or an older version on its way: wait
        else:
            verdicts.append(Verdict(SEND))
            if value is not None and owner is None:
                owners[value] = key
                taken.append((sync, value, key, now))
            if version is not None:
                sent.append((sync, key, version, run, now))
    # A chunk holding a row another run is sending claims nothing (it waits, holding nothing,
    # so two runs can never wait for each other).
    if take and all(v.kind != BUSY for v in verdicts):
        conn.executemany("DELETE FROM matching_owners WHERE sync = ? AND source_key = ? AND "
                         "matching_digest != ?", [(s, k, v) for s, v, k, _ in taken])
        conn.executemany(_REPLACE_OWNER, taken)
        conn.executemany(_REPLACE_SENDING, sent)
    return verdicts


def settle(conn, sync: str, run: str, keys) -> None:
    """Inside the transaction that records the outcomes: the run is no longer sending them."""
    conn.execute("DELETE FROM sending WHERE sync = ? AND run = ? AND source_key IN "
                 "(SELECT value FROM json_each(?))", (sync, run, _json(keys)))


def release(conn, sync: str, run: str) -> None:
    """The run ended (or failed): whatever it still claimed to be sending, it is not."""
    conn.execute("DELETE FROM sending WHERE sync = ? AND run = ?", (sync, run))


def forget(conn, sync: str, keys) -> None:
    """The source keys' CRM records are gone (mirror deletes): they own no matching value."""
    conn.execute("DELETE FROM matching_owners WHERE sync = ? AND source_key IN "
                 "(SELECT value FROM json_each(?))", (sync, _json(keys)))


def version_stamps(values: pd.Series) -> list[str | None]:
    """Source updated_at values as UTC ISO 8601 text of one width (text order = time order);
    None where a value is no timestamp. Naive timestamps are UTC."""
    stamps = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    # numpy's formatting, not pandas' strftime: the same text (microseconds, floored) in a
    # quarter of the time, on the upsert's event loop once per chunk (BENCHMARKS.md, round 2)
    text = np.datetime_as_string(stamps.dt.tz_convert(None).to_numpy(), unit="us")
    return [None if t == "NaT" else t + "Z" for t in text.tolist()]
