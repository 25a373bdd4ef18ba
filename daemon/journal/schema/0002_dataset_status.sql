-- Version 2: where each dataset is watched from and why it may not be, a row readiness writes to, and the
-- indexes the clock-step check reads.
ALTER TABLE datasets ADD COLUMN source TEXT;
ALTER TABLE datasets ADD COLUMN problem TEXT;
ALTER TABLE datasets ADD COLUMN problem_at REAL;
-- One row, rewritten by every readiness probe: proves that a write transaction can land.
CREATE TABLE probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL
);
INSERT INTO probe (id, at) VALUES (1, 0);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX inventory_by_change ON inventory (changed_at);
