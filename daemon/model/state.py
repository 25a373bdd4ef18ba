"""What one rule sees at one moment: the journal's state, reduced to the values the engine decides on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from daemon.model import ids, runs


@dataclass(frozen=True, kw_only=True)
class PendingData:
    """Label and image files that are new or changed since the rule last launched on them."""

    labels: int = 0
    images: int = 0
    deleted: int = 0
    class_counts: Mapping[str, int] = field(default_factory=dict)
    """New boxes per class id (as a string), for the label files whose contents were read."""
    first_at: datetime | None = None
    """When the oldest pending change was journaled (max_wait runs from here)."""
    last_at: datetime | None = None
    """When the newest pending change was journaled (the quiet period runs from here)."""


@dataclass(frozen=True, kw_only=True)
class Tick:
    """A schedule slot that fired and was journaled, not yet answered."""

    id: str
    trigger_index: int
    slot: datetime


@dataclass(frozen=True, kw_only=True)
class Observation:
    """A drift measurement (class_drift: the divergence; metric_drift: the drop from the champion)."""

    id: str
    kind: str
    trigger_index: int
    value: float
    at: datetime
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class Pause:
    """``retrain pause RULE``: the rule decides nothing until it is resumed."""

    actor: str
    reason: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class ManualRequest:
    """``retrain trigger RULE``: a launch asked for by a person."""

    id: str
    reason: str
    actor: str
    at: datetime


@dataclass(frozen=True, kw_only=True)
class RuleState:
    """Everything :func:`daemon.engine.deciding.decide` needs about one rule."""

    pending: PendingData = PendingData()
    snapshot: str | None = None
    """Fingerprint of the dataset as it is now (every present file and its version); None when empty."""
    snapshot_items: int = 0
    dataset_problem: str | None = None
    """Why the dataset cannot be trusted now (not watched, its source just changed); None when it can."""
    active_runs: tuple[ids.RunKey, ...] = ()
    last_launch_at: datetime | None = None
    launches_last_day: tuple[datetime, ...] = ()
    """Launch times within the 24 hours before now, oldest first."""
    snapshot_run: tuple[ids.RunKey, runs.RunState] | None = None
    """A data-triggered run of this rule (new labels, class drift, manual) that already trained on exactly this
    snapshot, whatever its key (a renamed rule keeps its runs)."""
    ticks: tuple[Tick, ...] = ()
    observations: tuple[Observation, ...] = ()
    manual: tuple[ManualRequest, ...] = ()
    paused: Pause | None = None
    """Set while an operator has paused the rule."""
