-- Version 7: the leader's epoch on every acting write (runs, decisions, promotions), as on PostgreSQL where
-- replicas share the journal. A SQLite journal has one writer: its rows carry NULL.
ALTER TABLE runs ADD COLUMN epoch INTEGER;
ALTER TABLE decisions ADD COLUMN epoch INTEGER;
ALTER TABLE promotions ADD COLUMN epoch INTEGER;
