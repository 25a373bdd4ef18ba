-- Version 5: running totals kept in the transactions that change them, so that a metrics scrape reads one
-- row instead of counting a table (the events table grows to millions of rows before retention prunes it).
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO counters (name, value) SELECT 'events', COUNT(*) FROM events;
