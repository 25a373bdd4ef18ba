"""Runs: the life of one launch, keyed by its deterministic run key.

``intended`` is committed to the journal before anything is submitted; a restarted daemon resolves every
``intended`` run against the launcher by run key, so a crash between "submitted" and "recorded" never
submits twice.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.model import ids


class RunState(enum.StrEnum):
    INTENDED = "intended"
    SUBMITTED = "submitted"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ABANDONED = "abandoned"

    @property
    def active(self) -> bool:
        return self in ACTIVE

    @property
    def final(self) -> bool:
        return not self.active


ACTIVE = frozenset({RunState.INTENDED, RunState.SUBMITTED, RunState.RUNNING})

#: Allowed moves. A final state is final.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    RunState.INTENDED: frozenset({RunState.SUBMITTED, RunState.RUNNING, RunState.FAILED, RunState.ABANDONED}),
    RunState.SUBMITTED: frozenset({RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED, RunState.ABANDONED}),
    RunState.RUNNING: frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.ABANDONED}),
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.ABANDONED: frozenset(),
}


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A run as the journal knows it."""

    run_key: ids.RunKey
    rule: str
    state: RunState
    trigger: str
    reason: str
    snapshot: str | None
    params: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    backend_run_id: str | None = None
    created_at: datetime
    updated_at: datetime
    metrics: dict[str, Any] = field(default_factory=dict)
    promotion: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    """Why the run failed; while it is active, what it is waiting on (a pod Pending too long), or empty."""

    @property
    def waiting(self) -> str | None:
        """What an active run is waiting on (reported by the run tracker), or None."""
        return self.error if self.state.active and self.error else None
