"""Training progress of runs, as the run tracker learns it and the dashboard shows it.

The tracker writes what a run reported per epoch (from the local child's log, or from the MLflow run of a
pipeline executing elsewhere); the HTTP threads read it. Kept in memory: progress is live information, and
a restarted daemon reads it again from the same places. The board keeps the latest ``keep`` runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace


@dataclass(frozen=True, kw_only=True)
class EpochPoint:
    """The validation metrics of one epoch of a run's training."""

    epoch: int
    map50_95: float
    map50: float | None = None


@dataclass(frozen=True, kw_only=True)
class RunProgress:
    """What is known of one run's training so far."""

    epochs: int | None = None
    """Epochs the training was asked for (None: not reported yet)."""
    points: tuple[EpochPoint, ...] = ()
    """One point per epoch reported, in epoch order."""
    final: bool = False
    """The training loop ended (the best weights were validated once more)."""
    mlflow_run_id: str | None = None
    """The MLflow run the training logs into, once known."""
    source: str = ""
    """Where the points came from: ``log`` (the local child's output) or ``mlflow``."""

    @property
    def epoch(self) -> int:
        return self.points[-1].epoch if self.points else 0


@dataclass
class ProgressBoard:
    """Thread-safe progress of the latest ``keep`` runs, by run key."""

    keep: int = 50
    _runs: OrderedDict[str, RunProgress] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_point(self, run_key: str, point: EpochPoint, *, epochs: int | None, source: str) -> None:
        """Record an epoch (a repeated epoch replaces the earlier value: a resumed training reports again)."""
        with self._lock:
            found = self._runs.get(run_key, RunProgress())
            self._update(run_key, found, [*found.points, point], epochs=epochs, mlflow_run_id=None, source=source)

    def replace_points(
        self, run_key: str, points: list[EpochPoint], *, epochs: int | None, mlflow_run_id: str | None, source: str
    ) -> None:
        """Set every point at once (what an MLflow metric history holds)."""
        with self._lock:
            found = self._runs.get(run_key, RunProgress())
            self._update(run_key, found, points, epochs=epochs, mlflow_run_id=mlflow_run_id, source=source)

    def _update(
        self,
        run_key: str,
        found: RunProgress,
        points: list[EpochPoint],
        *,
        epochs: int | None,
        mlflow_run_id: str | None,
        source: str,
    ) -> None:
        by_epoch = {p.epoch: p for p in points}  # the last report of an epoch wins
        changed = replace(
            found,
            points=tuple(by_epoch[e] for e in sorted(by_epoch)),
            epochs=epochs if epochs is not None else found.epochs,
            mlflow_run_id=mlflow_run_id or found.mlflow_run_id,
            source=source,
        )
        self._store(run_key, changed)

    def mark_final(self, run_key: str) -> None:
        with self._lock:
            self._store(run_key, replace(self._runs.get(run_key, RunProgress()), final=True))

    def get(self, run_key: str) -> RunProgress | None:
        with self._lock:
            return self._runs.get(run_key)

    def _store(self, run_key: str, progress: RunProgress) -> None:
        self._runs[run_key] = progress
        self._runs.move_to_end(run_key)
        while len(self._runs) > self.keep:
            self._runs.popitem(last=False)
