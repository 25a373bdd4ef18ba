"""Retention: the journal's history older than ``journal.retention_days`` is pruned in small steps.

Each pass sweeps the journal once (events in windows of their sequence numbers, then decisions, answered
signals and finished notices), one short transaction per step, so that a burst of events waits for one
step at most. What rules see (pending data, snapshots, runs, the inventory) is not made of history and
never changes; each present file's current event is kept, so its replays stay duplicates; each rule keeps
its newest decisions and every launch. See :meth:`daemon.journal.base.Journal.prune`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter

from daemon import logs
from daemon.journal import base as journal_base

log = logs.get_logger(__name__)

#: Events examined, and at most as many rows of each other table removed, per step (one transaction).
WINDOW = 5000
#: Decisions each rule keeps however old (the dashboard and ``retrain explain`` show the latest ones).
KEEP_DECISIONS = 200
#: A sequence number past any event: the sweep of events is over.
_PAST_EVENTS = 2**62


class Pruner:
    """Prunes the journal's history once per pass.

    Args:
        journal: the journal.
        clock: the current time.
        retention: history younger than this is always kept.
        pruned: counts removed rows by table (``retrain_journal_pruned_total``).
        stopping: True once the daemon stops (a long sweep ends between steps).
    """

    def __init__(
        self,
        *,
        journal: journal_base.Journal,
        clock: Callable[[], datetime],
        retention: timedelta,
        pruned: Counter,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.journal = journal
        self.clock = clock
        self.retention = retention
        self.pruned = pruned
        self.stopping = stopping

    def work(self) -> journal_base.PruneStep:
        """One sweep. Returns what it removed."""
        started = time.monotonic()
        cutoff = self.clock() - self.retention
        seq = 0
        total = journal_base.PruneStep()
        steps = 0
        while not self.stopping():
            step = self.journal.prune(before=cutoff, from_seq=seq, window=WINDOW, keep_decisions=KEEP_DECISIONS)
            steps += 1
            total += step
            for table in ("events", "decisions", "signals", "notices"):
                if getattr(step, table):
                    self.pruned.labels(table).inc(getattr(step, table))
            if step.next_seq is None and step.removed == 0:
                break
            seq = step.next_seq if step.next_seq is not None else _PAST_EVENTS
        if total.removed:
            log.info(
                "journal_pruned",
                before=cutoff.isoformat(),
                events=total.events,
                decisions=total.decisions,
                signals=total.signals,
                notices=total.notices,
                steps=steps,
                seconds=round(time.monotonic() - started, 3),
            )
        return total
