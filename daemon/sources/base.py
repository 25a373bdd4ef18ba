"""What every event source shares: where events go (the sink) and how a source reports its health.

Sources never act on an event themselves: they hand it to the :class:`EventSink`, which journals it (a
whole batch in one transaction) and only then lets the source acknowledge it upstream. Each source keeps a
:class:`SourceStatus` (connected, last event, counts, gaps, last reconcile and its lag) for ``retrain
status``, ``/readyz`` and the metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from daemon import failpoints, logs
from daemon.journal import base as journal_base
from daemon.model import events

log = logs.get_logger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True, kw_only=True)
class SourceStatus:
    """A snapshot of one source's health."""

    name: str
    connected: bool = False
    last_event_at: datetime | None = None
    events: int = 0
    """Events handed to the journal (new and duplicates)."""
    new_events: int = 0
    """Events the journal did not have yet."""
    gaps: int = 0
    """Times the source lost its stream (events in between may be lost; a reconcile follows)."""
    rejected: int = 0
    """Malformed inputs refused."""
    last_reconcile_at: datetime | None = None
    reconcile_lag_s: float | None = None
    """How long the last reconcile pass took, in seconds."""
    last_error: str | None = None


class StatusBoard:
    """Thread-safe statuses of all sources, updated by the sources, read by status/readiness/metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._statuses: dict[str, SourceStatus] = {}
        self._kinds: dict[tuple[str, str], int] = {}

    def count_kinds(self, name: str, kinds: Iterable[str]) -> None:
        """Count events of ``name`` by kind (created, deleted, tick...) for the metrics."""
        with self._lock:
            for kind in kinds:
                self._kinds[name, kind] = self._kinds.get((name, kind), 0) + 1

    def kinds(self) -> dict[tuple[str, str], int]:
        """Events counted so far by (source, kind)."""
        with self._lock:
            return dict(self._kinds)

    def update(self, name: str, **changes: object) -> SourceStatus:
        with self._lock:
            current = self._statuses.get(name, SourceStatus(name=name))
            updated = replace(current, **changes)  # type: ignore[arg-type]
            self._statuses[name] = updated
            return updated

    def add(self, name: str, **increments: int) -> SourceStatus:
        with self._lock:
            current = self._statuses.get(name, SourceStatus(name=name))
            changes = {k: getattr(current, k) + v for k, v in increments.items()}
            updated = replace(current, **changes)
            self._statuses[name] = updated
            return updated

    def get(self, name: str) -> SourceStatus:
        with self._lock:
            return self._statuses.get(name, SourceStatus(name=name))

    def all(self) -> list[SourceStatus]:
        with self._lock:
            return sorted(self._statuses.values(), key=lambda s: s.name)


#: How many refused names a sink remembers (so a file seen at every rescan is counted and logged once).
MAX_REMEMBERED_REFUSALS = 100_000


@dataclass
class EventSink:
    """Journals batches of events for the sources and keeps their counters.

    Args:
        journal: where events are written.
        board: the statuses to count into.
        clock: the time events are received at (a fake clock in tests).
    """

    journal: journal_base.Journal
    board: StatusBoard
    clock: Clock
    on_new: Callable[[], None] | None = None
    """Called after a batch brought events the journal did not have (the daemon wakes its loop)."""
    _refused: set[tuple[str, str]] = field(default_factory=set)

    def _acceptable(self, source: str, batch: Sequence[events.SourceEvent]) -> Sequence[events.SourceEvent]:
        problems = [(event, events.key_problem(event.key)) for event in batch]
        if all(problem is None for _, problem in problems):
            return batch
        for event, problem in problems:
            if problem is None or (event.dataset, event.key) in self._refused:
                continue
            if len(self._refused) < MAX_REMEMBERED_REFUSALS:
                self._refused.add((event.dataset, event.key))
            self.board.add(source, rejected=1)
            log.warning(
                "event_refused",
                source=source,
                dataset=event.dataset,
                key=events.escaped(event.key),
                reason=problem,
                action="the file is not journaled; rename it",
            )
        return [event for event, problem in problems if problem is None]

    def deliver(self, source: str, batch: Sequence[events.SourceEvent]) -> journal_base.AppendResult:
        """Journal ``batch`` (one transaction) and count it for ``source``. Raises what the journal raises.

        Events whose key cannot be journaled (a file name that is not UTF-8) are refused one by one, counted
        once per name as rejected and logged with their escaped name; the rest of the batch goes on.
        """
        batch = self._acceptable(source, batch)
        if not batch:
            return journal_base.AppendResult(new=0, duplicates=0)
        now = self.clock()
        failpoints.hit("event_received")
        result = self.journal.append_events(batch, received_at=now)
        failpoints.hit("event_journaled")
        self.board.add(source, events=len(batch), new_events=result.new)
        self.board.count_kinds(source, (event.kind.value for event in batch))
        self.board.update(source, last_event_at=now)
        if result.new and self.on_new is not None:
            self.on_new()
        return result
