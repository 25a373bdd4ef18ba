"""The journal's contract: a durable, idempotent record of everything that happened.

Invariants every backend keeps:

- ``append_events`` is idempotent on the deterministic event id and atomic per batch: after a crash, a
  batch is either all there or not at all.
- A run's intent (its run key) is committed before anything is submitted (``record_intent``), together
  with the snapshot it trains on, the pending data it consumes and the ticks or requests it answers. A
  second intent with the same run key is refused, so the same data never launches twice.
- Run states only move forward (:data:`daemon.model.runs.TRANSITIONS`).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from daemon.model import decisions, events, ids, notices, outcomes, rules, runs, state


@dataclass(frozen=True, kw_only=True)
class AppendResult:
    """How many events of a batch were new, and how many the journal already had."""

    new: int
    duplicates: int


@dataclass(frozen=True, kw_only=True)
class PruneStep:
    """What one step of pruning removed, and where the next step of the same sweep starts."""

    events: int = 0
    decisions: int = 0
    signals: int = 0
    notices: int = 0
    next_seq: int | None = None
    """The event sequence number the sweep continues from; None: no event older than the cut-off is left
    after this step's window (the sweep is over)."""

    @property
    def removed(self) -> int:
        return self.events + self.decisions + self.signals + self.notices

    def __add__(self, other: PruneStep) -> PruneStep:
        """The rows of both steps together (a sweep's total; ``next_seq`` is the later step's)."""
        return PruneStep(
            events=self.events + other.events,
            decisions=self.decisions + other.decisions,
            signals=self.signals + other.signals,
            notices=self.notices + other.notices,
            next_seq=other.next_seq,
        )


@dataclass(frozen=True, kw_only=True)
class InventoryItem:
    """One object of a dataset as the journal last saw it."""

    dataset: str
    key: str
    item: events.ItemKind
    version: str
    size: int | None
    first_seen: datetime
    changed_at: datetime
    deleted: bool


@dataclass(frozen=True, kw_only=True)
class PendingNotice:
    """A notice in the outbox and how its delivery stands."""

    notice: notices.Notice
    attempts: int = 0
    delivered_to: tuple[str, ...] = ()
    """The targets (by name) that have it."""
    done: bool = False
    """Delivered to every target, or given up after the last attempt (``last_error`` says which)."""
    last_error: str | None = None


@dataclass(frozen=True, kw_only=True)
class DatasetStatus:
    """Where a dataset is watched from, and why it may not be usable now."""

    dataset: str
    source: str | None = None
    """The location the daemon last watched it at (``s3://...`` or ``file://...``)."""
    problem: str | None = None
    """Why it cannot be used now (not watched, its source just changed); None when it can."""
    problem_since: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """A decision as it was recorded: when, what, why and the numbers behind it."""

    rule: str
    at: datetime
    outcome: decisions.Outcome
    code: str
    reason: str
    numbers: dict[str, Any]
    run_key: str | None


@dataclass(frozen=True, kw_only=True)
class PromotionRecord:
    """A move (or a refused move) of a model's champion alias."""

    model: str
    version: str | None
    previous_version: str | None
    run_key: str | None
    kind: outcomes.PromotionKind
    actor: str
    reason: str
    metrics: dict[str, Any]
    at: datetime


@dataclass(frozen=True, kw_only=True)
class LeaseState:
    """Who leads the replicas that share a journal, as the database has it."""

    holder: str | None
    """The replica holding the lease (None: nobody since the last one gave it up)."""
    epoch: int
    """How many times the lease has been taken: every acting write carries its leader's."""
    expires_at: datetime | None
    renewed_at: datetime | None
    renewals: int
    expired: bool
    """The lease's time is up by the database's clock (a standby may take it)."""
    expires_in_s: float = 0.0
    """Seconds until it expires unrenewed, by the database's clock (0 once expired)."""


class Leadership(abc.ABC):
    """The leader's lease of a journal shared by replicas (PostgreSQL). Times are the database's clock.

    Taking the lease raises its epoch by one and fences this journal to it: from then on, its acting
    writes (:mod:`daemon.journal.sql.connection`) are refused once a newer epoch exists, or once
    ``ttl_s`` has passed on this process's monotonic clock since the last renewal began (a process paused
    past its lease refuses its own writes before it asks the database).
    """

    @abc.abstractmethod
    def acquire(self, holder: str, *, ttl_s: float) -> int | None:
        """Take the lease if it is free or expired: the new epoch, or None while another replica holds it."""

    @abc.abstractmethod
    def renew(self, holder: str, *, epoch: int, ttl_s: float) -> bool:
        """Extend the lease; False when it is no longer this holder's at this epoch (taken over)."""

    @abc.abstractmethod
    def release(self, holder: str, *, epoch: int) -> None:
        """Give the lease up at once (a clean stop), so a standby takes it without waiting for the TTL."""

    @abc.abstractmethod
    def current(self) -> LeaseState:
        """The lease as the database has it now."""

    @abc.abstractmethod
    def fenced(self) -> bool:
        """True once this process held the lease and learnt it no longer does (a write refused for a newer
        epoch, a renewal refused, or its TTL passed on this process's clock without a renewal)."""


class Journal(abc.ABC):
    """Where the daemon writes what happened before it acts on it."""

    path: str
    """Where it lives, as messages name it: the SQLite file, or the PostgreSQL URL without its password."""

    def leadership(self) -> Leadership | None:
        """The leader's lease where replicas share this journal; None where one process writes it (SQLite)."""
        return None

    def assert_leader(self) -> None:  # noqa: B027 - no election by default: nothing to check
        """Raise :class:`~daemon.errors.NotLeader` unless this journal's process may act now (it holds the
        lease of the newest epoch, or there is no election). Asked before a side effect outside the journal
        (a submission to KFP)."""

    # --- events and inventory ---------------------------------------------------------------------
    @abc.abstractmethod
    def append_events(self, batch: Sequence[events.SourceEvent], *, received_at: datetime) -> AppendResult:
        """Append a batch of source events in one transaction, skipping ones already journaled.

        A delete without a version takes the version on record; a delete of a key the journal does not
        hold (or holds as deleted already) is a duplicate.
        """

    @abc.abstractmethod
    def inventory(self, dataset: str, *, include_deleted: bool = False, after: str = "") -> Iterator[InventoryItem]:
        """The dataset's objects in key order, from the first key after ``after``, streamed (memory stays
        bounded by the page, not the bucket)."""

    @abc.abstractmethod
    def labels_without_counts(self, dataset: str, *, limit: int) -> list[tuple[str, str]]:
        """Present label files whose class counts are unknown, as ``(key, version)``."""

    @abc.abstractmethod
    def set_class_counts(self, dataset: str, found: Sequence[tuple[str, str, dict[str, int]]]) -> int:
        """Store the class counts of label files read, ``(key, version, counts)`` each, in one transaction;
        a file whose version changed meanwhile keeps none. Returns how many were stored."""

    @abc.abstractmethod
    def snapshot_histogram(self, dataset: str, fingerprint: str) -> dict[str, int] | None:
        """Boxes per class over the label files of a recorded snapshot (None: snapshot unknown)."""

    @abc.abstractmethod
    def health(self) -> str | None:
        """None when a write can land now, else why not (a full or read-only volume): the readiness probe."""

    def writable(self) -> bool:
        """True when a write can land now."""
        return self.health() is None

    @abc.abstractmethod
    def snapshot_of(self, fingerprint: str) -> list[tuple[str, str]] | None:
        """The manifest a run trained on, as recorded with its intent (None: unknown fingerprint)."""

    # --- datasets ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def dataset_status(self, dataset: str) -> DatasetStatus:
        """Where the dataset is watched from and why it may not be usable."""

    @abc.abstractmethod
    def set_dataset_status(self, dataset: str, *, source: str, problem: str | None, at: datetime) -> None:
        """Record the dataset's location and its problem (None: usable). Rules skip while it has one."""

    # --- the clock --------------------------------------------------------------------------------
    @abc.abstractmethod
    def latest_time(self) -> datetime | None:
        """The newest time the journal recorded (to notice a wall clock that stepped back)."""

    @abc.abstractmethod
    def clamp_future(self, now: datetime) -> int:
        """Re-stamp recorded times later than ``now`` to ``now``; returns how many rows moved."""

    @abc.abstractmethod
    def event_count(self) -> int:
        """How many distinct events the journal holds (a running total: no rows are counted)."""

    @abc.abstractmethod
    def run_counts(self) -> dict[str, int]:
        """How many runs the journal holds in each state (states without runs are left out)."""

    # --- what a rule sees -------------------------------------------------------------------------
    @abc.abstractmethod
    def rule_state(self, rule: rules.Rule, *, now: datetime) -> state.RuleState:
        """Everything the engine needs to decide for ``rule`` at ``now``."""

    @abc.abstractmethod
    def snapshot_manifest(self, dataset: str) -> list[tuple[str, str]]:
        """The present labels and images of ``dataset`` as sorted ``(key, version)`` pairs."""

    # --- decisions and runs -----------------------------------------------------------------------
    @abc.abstractmethod
    def record_intent(self, launch: decisions.Launch, *, at: datetime) -> bool:
        """Commit a run's intent before submission. Returns False (and changes nothing) if the run key exists."""

    @abc.abstractmethod
    def record_skip(self, skip: decisions.Skip, *, at: datetime) -> None:
        """Record a skip (only when it says something new) and consume what it answered."""

    @abc.abstractmethod
    def decisions(self, rule: str, *, limit: int = 20) -> list[DecisionRecord]:
        """The rule's recent decisions, newest first."""

    @abc.abstractmethod
    def update_run(
        self,
        run_key: ids.RunKey,
        new_state: runs.RunState,
        *,
        at: datetime,
        backend: str | None = None,
        backend_run_id: str | None = None,
        metrics: dict[str, Any] | None = None,
        promotion: dict[str, Any] | None = None,
        error: str | None = None,
        record: PromotionRecord | None = None,
    ) -> runs.RunRecord:
        """Move a run forward; ``record`` (the gate's outcome) is journaled in the same transaction, so a run
        is never final without its promotion record. Raises :class:`daemon.errors.PermanentError` on an
        illegal transition."""

    @abc.abstractmethod
    def get_run(self, run_key: ids.RunKey) -> runs.RunRecord | None:
        """The run with this key, if any."""

    @abc.abstractmethod
    def runs(
        self, *, rule: str | None = None, states: frozenset[runs.RunState] | None = None, limit: int = 100
    ) -> list[runs.RunRecord]:
        """Runs, newest first, optionally filtered."""

    # --- ticks, observations, manual requests -----------------------------------------------------
    @abc.abstractmethod
    def record_tick(self, rule: str, *, trigger_index: int, slot: datetime, at: datetime) -> bool:
        """Journal a schedule slot; False if that slot was already journaled (a restart never fires it twice)."""

    @abc.abstractmethod
    def record_observation(
        self, rule: str, *, kind: str, trigger_index: int, value: float, at: datetime, detail: str = ""
    ) -> str:
        """Journal a drift measurement; returns its id. A newer one replaces an unanswered older one."""

    @abc.abstractmethod
    def request_manual(self, rule: str, *, reason: str, actor: str, at: datetime) -> str:
        """Journal a manual trigger request; returns its id."""

    @abc.abstractmethod
    def set_pause(self, rule: str, pause: state.Pause | None) -> bool:
        """Pause ``rule`` (``pause``) or resume it (None); returns whether that changed anything."""

    @abc.abstractmethod
    def pause_of(self, rule: str) -> state.Pause | None:
        """How ``rule`` was paused, or None while it is not."""

    # --- notices ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def record_notice(self, notice: notices.Notice) -> bool:
        """Add a notice to the outbox; False when one of that id is there (a fact is told once)."""

    @abc.abstractmethod
    def due_notices(self, now: datetime, *, limit: int = 50) -> list[PendingNotice]:
        """Notices not yet delivered to every target whose next attempt is due, oldest first."""

    @abc.abstractmethod
    def notices(self, *, limit: int = 50) -> list[PendingNotice]:
        """Recent notices, newest first, delivered or not."""

    @abc.abstractmethod
    def notice_attempted(
        self,
        notice_id: str,
        *,
        delivered_to: tuple[str, ...],
        error: str | None,
        retry_at: datetime | None,
        at: datetime,
    ) -> None:
        """Record a delivery attempt: the targets that have it, and the next attempt (None: done)."""

    # --- rule identity ----------------------------------------------------------------------------
    @abc.abstractmethod
    def has_history(self, rule: str) -> bool:
        """True when the journal holds runs, decisions, signals or consumed data of ``rule``."""

    @abc.abstractmethod
    def rename_rule(self, old: str, new: str, *, datasets: tuple[str, str] | None = None) -> bool:
        """Move ``old``'s history to ``new`` while ``new`` has none (and, with ``datasets=(before, after)``,
        the dataset named after the old rule); returns whether anything moved."""

    # --- promotions -------------------------------------------------------------------------------
    @abc.abstractmethod
    def record_promotion(self, record: PromotionRecord) -> None:
        """Journal a champion move, a rejection, a refused compare-and-set or a rollback."""

    @abc.abstractmethod
    def promotions(self, model: str | None = None, *, limit: int = 20) -> list[PromotionRecord]:
        """Recent promotion records, newest first."""

    @abc.abstractmethod
    def prune(self, *, before: datetime, from_seq: int, window: int, keep_decisions: int) -> PruneStep:
        """Remove history older than ``before`` that nothing needs, one small transaction at a time:

        - events with ``from_seq <= seq < from_seq + window`` received before ``before``, except each present
          file's current version (it keeps deduplicating that file's replays); what rules see as pending,
          snapshots, runs and the inventory are not made of events and do not change;
        - up to ``window`` decisions made before ``before``, except launches and each rule's newest
          ``keep_decisions``;
        - up to ``window`` answered schedule ticks, observations and manual requests, and delivered or
          abandoned notices, from before ``before``.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the backend's resources."""
