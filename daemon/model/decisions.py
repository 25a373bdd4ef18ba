"""Decisions are values: a rule either launches a run or skips, never both, always with a reason.

Reasons are specific sentences users read in ``retrain explain`` and the logs ("waiting for quiet period:
last label 42s ago, need 10m"); ``code`` is the stable category behind them for metrics and history, and
``numbers`` the figures the reason was computed from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.model import ids


class Outcome(enum.StrEnum):
    """What a decision did."""

    LAUNCH = "launch"
    SKIP = "skip"


class TriggerKind(enum.StrEnum):
    """What made a rule launch: one of its triggers, or a person."""

    NEW_LABELS = "new_labels"
    SCHEDULE = "schedule"
    CLASS_DRIFT = "class_drift"
    METRIC_DRIFT = "metric_drift"
    MANUAL = "manual"


class SkipCode(enum.StrEnum):
    DISABLED = "disabled"
    PAUSED = "paused"
    DATASET_UNAVAILABLE = "dataset_unavailable"
    NO_NEW_DATA = "no_new_data"
    BELOW_THRESHOLD = "below_threshold"
    QUIET_PERIOD = "quiet_period"
    COOLDOWN = "cooldown"
    CONCURRENCY = "concurrency"
    DAILY_LIMIT = "daily_limit"
    ALREADY_RAN = "already_ran"
    EMPTY_DATASET = "empty_dataset"
    NOT_DUE = "not_due"
    DRIFT_BELOW_THRESHOLD = "drift_below_threshold"
    SLOT_SKIPPED = "slot_skipped"
    DRY_RUN = "dry_run"
    """``retrain up --dry-run``: the rule would launch; nothing was started and nothing consumed."""


@dataclass(frozen=True, kw_only=True)
class Launch:
    """Start a run with this key. Written to the journal as an intent before anything is submitted."""

    rule: str
    run_key: ids.RunKey
    trigger: TriggerKind
    """The trigger that fired."""
    reason: str
    snapshot: str | None
    """Fingerprint of the dataset snapshot the run trains on."""
    params: dict[str, Any] = field(default_factory=dict)
    numbers: dict[str, Any] = field(default_factory=dict)
    acknowledges: tuple[str, ...] = ()
    """Ticks, observations and manual requests this launch answers; they are consumed with the intent."""

    @property
    def outcome(self) -> Outcome:
        return Outcome.LAUNCH


@dataclass(frozen=True, kw_only=True)
class Skip:
    """Do nothing now, and say why."""

    rule: str
    code: SkipCode
    reason: str
    numbers: dict[str, Any] = field(default_factory=dict)
    next_check_at: datetime | None = None
    """The earliest time the answer could change on its own (end of quiet period, cooldown, ...)."""
    acknowledges: tuple[str, ...] = ()
    """Ticks and observations answered without a launch (a slot with no new data, a missed slot)."""

    @property
    def outcome(self) -> Outcome:
        return Outcome.SKIP


Decision = Launch | Skip
