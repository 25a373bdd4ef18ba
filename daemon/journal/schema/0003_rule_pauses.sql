-- Version 3: rules an operator paused (retrain pause RULE): one row while paused, deleted on resume.
CREATE TABLE rule_pauses (
    rule TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
