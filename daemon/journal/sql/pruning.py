"""Retention in SQL: history older than the cut-off that no rule, run or snapshot needs is deleted in
small transactions, so writers (a burst of events) wait for one short step at most.

Events are walked in windows of their sequence numbers (the primary key: a range scan, no index on time
to maintain on every insert); a sweep ends at the first window holding an event newer than the cut-off,
since sequence follows reception. Freed pages are reused by later writes: the file stops growing instead
of shrinking (``VACUUM`` would rewrite it whole).
"""

from __future__ import annotations

from datetime import datetime

from daemon.journal import base
from daemon.journal.sql import connection, inventory, times


class PruneStore:
    database: connection.Database

    def prune(self, *, before: datetime, from_seq: int, window: int, keep_decisions: int) -> base.PruneStep:
        cutoff = times.ts(before)
        with self.database.transaction("pruning the journal's history") as db:
            first = db.execute("SELECT MIN(seq) FROM events WHERE seq >= ?", (from_seq,)).fetchone()[0]
            events = 0
            next_seq: int | None = None
            if first is not None:
                end = first + window
                events = db.execute(
                    "DELETE FROM events WHERE seq >= ? AND seq < ? AND received_at < ? AND NOT EXISTS ("
                    "SELECT 1 FROM inventory i WHERE i.dataset = events.dataset AND i.key = events.key "
                    "AND i.version = events.version AND i.deleted = 0)",
                    (first, end, cutoff),
                ).rowcount
                newer = db.execute(
                    "SELECT 1 FROM events WHERE seq >= ? AND seq < ? AND received_at >= ? LIMIT 1", (first, end, cutoff)
                ).fetchone()
                if events:
                    inventory.add_to_counter(db, "events", -events)
                more = db.execute("SELECT 1 FROM events WHERE seq >= ? LIMIT 1", (end,)).fetchone()
                next_seq = end if newer is None and more is not None else None
            decisions = db.execute(
                "DELETE FROM decisions WHERE id IN (SELECT d.id FROM decisions d WHERE d.at < ? "
                "AND d.outcome != 'launch' AND d.id < COALESCE(("
                "SELECT k.id FROM decisions k WHERE k.rule = d.rule ORDER BY k.id DESC LIMIT 1 OFFSET ?), -1) "
                "ORDER BY d.id LIMIT ?)",
                (cutoff, max(0, keep_decisions - 1), window),
            ).rowcount
            signals = db.execute(
                "DELETE FROM signals WHERE id IN (SELECT id FROM signals "
                "WHERE answered_by IS NOT NULL AND at < ? LIMIT ?)",
                (cutoff, window),
            ).rowcount
            notices = db.execute(
                "DELETE FROM notices WHERE id IN (SELECT id FROM notices "
                "WHERE done_at IS NOT NULL AND done_at < ? LIMIT ?)",
                (cutoff, window),
            ).rowcount
        return base.PruneStep(events=events, decisions=decisions, signals=signals, notices=notices, next_seq=next_seq)
