-- A sync store made by crm_sync at 3002afe (before schema versions): its schema and one row
-- per table, as sqlite3's iterdump wrote them. crm_sync_tests/test_store_backends.py opens it
-- with today's code, which must upgrade it in place.
BEGIN TRANSACTION;
CREATE TABLE matching_owners (
    sync TEXT NOT NULL,
    matching_digest TEXT NOT NULL, -- sha256 of the value as the CRM compares it (transform/matching.py)
    source_key TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (sync, matching_digest)
);
INSERT INTO "matching_owners" VALUES('leads_to_superleap','digest4','LD-4',1.79613862949185967444e+09);
CREATE TABLE partition_lease (
    sync TEXT NOT NULL,
    partition TEXT NOT NULL,
    owner TEXT NOT NULL,
    acquired_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (sync, partition)
);
INSERT INTO "partition_lease" VALUES('leads_to_superleap','2026-11-03','run old (pid 1 on here)',1.79613862948684215549e+09,1.79613922948684215548e+09);
CREATE TABLE quarantine (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    partition TEXT,
    stage TEXT NOT NULL,          -- 'validation' or 'crm'
    error_code TEXT NOT NULL,
    rules TEXT,                   -- every rule the row broke, comma separated
    column_name TEXT,
    value TEXT,
    message TEXT NOT NULL,
    http_status INTEGER,
    attempts INTEGER,
    transient INTEGER NOT NULL DEFAULT 0,
    payload TEXT,
    raw TEXT,                     -- the CRM's answer when it could not be understood (truncated)
    quarantined_at REAL NOT NULL,
    claimed_by TEXT,              -- the run retrying this row right now (transient failures)
    claimed_at REAL, payload_digest TEXT, runs INTEGER, path TEXT,
    PRIMARY KEY (sync, source_key)
);
INSERT INTO "quarantine" VALUES('leads_to_superleap','LD-2','2026-11-02','crm','HTTP_503','HTTP_503',NULL,NULL,'Superleap answered 503',503,5,1,NULL,NULL,1.79613862948439168931e+09,NULL,NULL,NULL,1,'sync');
CREATE TABLE sending (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    updated_at TEXT NOT NULL,     -- the version (source updated_at, UTC ISO 8601) being sent
    run TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (sync, source_key)
);
INSERT INTO "sending" VALUES('leads_to_superleap','LD-4','2026-11-01T10:00:00Z','1:r',1.79613862949185967444e+09);
CREATE TABLE sync_state (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    crm_id TEXT,
    payload_hash TEXT NOT NULL,
    synced_at REAL NOT NULL, updated_at TEXT,
    PRIMARY KEY (sync, source_key)
);
INSERT INTO "sync_state" VALUES('leads_to_superleap','LD-1','sl-1','hash1',1.79613862948439168931e+09,'2026-11-01T10:00:00Z');
CREATE TABLE write_ahead (
    sync TEXT NOT NULL,
    source_key TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    match_value TEXT,             -- JSON text of the record's external_id (NULL: none sent)
    sent_at REAL NOT NULL,        -- written before the request left
    answered_at REAL,             -- the CRM answered (an error, an unreadable body): no longer
                                  -- in progress; NULL: no answer (timeout, drop, crash)
    PRIMARY KEY (sync, source_key)
);
INSERT INTO "write_ahead" VALUES('leads_to_superleap','LD-3','af95a5c3bc43460fb17779e28b22b39b','"LD-3"',1.7961386294890375137e+09,NULL);
CREATE INDEX matching_owners_by_key ON matching_owners (sync, source_key);
COMMIT;
