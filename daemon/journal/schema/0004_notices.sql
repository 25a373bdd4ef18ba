-- Version 4: the outbox of notices (a run's gate decision or failure, a source down, a refused rule file),
-- written in the transaction of the fact they tell and delivered from here, with retries, by the notifier.
CREATE TABLE notices (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    rule TEXT,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    delivered_to TEXT NOT NULL DEFAULT '[]',
    done_at REAL,
    last_error TEXT
);
CREATE INDEX notices_due ON notices (next_at) WHERE done_at IS NULL;
