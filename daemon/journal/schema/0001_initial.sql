-- Version 1: the journal of retrain-daemon 0.1 (events, inventory, consumed data, snapshots, runs,
-- decisions, signals, promotions). Applied to an empty file; never edited once released.
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER,
    event_time REAL NOT NULL,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inventory (
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    item TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER,
    class_counts TEXT,
    first_seen REAL NOT NULL,
    changed_at REAL NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    deletions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (dataset, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS datasets (
    dataset TEXT PRIMARY KEY,
    change_seq INTEGER NOT NULL
);
-- What each rule's runs have consumed: an inventory item is pending for a rule while its version differs.
CREATE TABLE IF NOT EXISTS consumed (
    rule TEXT NOT NULL,
    dataset TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    run_key TEXT NOT NULL,
    PRIMARY KEY (rule, dataset, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    fingerprint TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    items INTEGER NOT NULL,
    manifest BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_key TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    state TEXT NOT NULL,
    trigger TEXT NOT NULL,
    reason TEXT NOT NULL,
    snapshot TEXT,
    params TEXT NOT NULL,
    backend TEXT,
    backend_run_id TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    metrics TEXT NOT NULL DEFAULT '{}',
    promotion TEXT NOT NULL DEFAULT '{}',
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_rule ON runs (rule, created_at);
CREATE INDEX IF NOT EXISTS runs_by_snapshot ON runs (rule, snapshot);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    at REAL NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    numbers TEXT NOT NULL,
    run_key TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_rule ON decisions (rule, id);
-- Schedule ticks, drift observations and manual requests: things a decision answers (consumes).
CREATE TABLE IF NOT EXISTS signals (
    id TEXT PRIMARY KEY,
    rule TEXT NOT NULL,
    kind TEXT NOT NULL,
    trigger_index INTEGER NOT NULL,
    slot REAL,
    value REAL,
    detail TEXT NOT NULL DEFAULT '',
    actor TEXT,
    at REAL NOT NULL,
    answered_by TEXT
);
CREATE INDEX IF NOT EXISTS open_signals ON signals (rule, answered_by);
CREATE TABLE IF NOT EXISTS promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    model TEXT NOT NULL,
    version TEXT,
    previous_version TEXT,
    run_key TEXT,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    metrics TEXT NOT NULL,
    at REAL NOT NULL
);
