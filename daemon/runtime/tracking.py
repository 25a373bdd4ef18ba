"""Tracking: active runs are followed in a worker until their outcome is journaled.

Each pass asks the launcher about every run the journal holds as running, logs the training progress its
process printed and puts it on the progress board (a run with no local output -- a KFP run in other pods --
has its curve read from its MLflow run instead), reports runs past ``kfp.run_timeout_s`` (once; they are not
killed), and hands finished runs to the :class:`~daemon.runtime.recording.OutcomeRecorder`. A launcher that
cannot answer about a run is asked again after a backoff (doubling from ``kfp.poll_interval_s`` up to five
minutes), per run; a run the launcher does not know at all is abandoned. MLflow unable to give a finished
run's outcome leaves the run active: it is recorded once MLflow answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from daemon import constants, errors, logs, retrying, settings
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.model import notices, runs
from daemon.model import progress as progress_
from daemon.runtime import recording
from daemon.sources import base as source_base

log = logs.get_logger(__name__)

#: The longest wait between two polls of a run whose launcher keeps failing, in seconds.
MAX_POLL_BACKOFF_S = 300.0
#: How often the training curve of a run executing elsewhere is read from MLflow, in seconds (and how long
#: after MLflow failed to answer it is asked again).
CURVE_INTERVAL_S = 10.0


class RunTracker:
    """Follows active runs.

    Args:
        config: the settings (poll interval, run timeout, the runs folder with progress logs).
        journal: the runs.
        launcher: where the runs execute.
        recorder: journals the ends.
        clock: the current time.
        progress: where the training progress of each run is kept for the dashboard.
        curves_from_mlflow: read the training curve of a run with no local output from its MLflow run (runs
            executing elsewhere: the KFP launcher); off for local runs, whose output is always here.
    """

    def __init__(
        self,
        *,
        config: settings.Settings,
        journal: journal_base.Journal,
        launcher: launcher_base.Launcher,
        recorder: recording.OutcomeRecorder,
        clock: source_base.Clock,
        progress: progress_.ProgressBoard | None = None,
        curves_from_mlflow: bool = False,
    ) -> None:
        self.config = config
        self.progress = progress if progress is not None else progress_.ProgressBoard()
        self.curves_from_mlflow = curves_from_mlflow
        self.journal = journal
        self.launcher = launcher
        self.recorder = recorder
        self.clock = clock
        self.runs_root = config.kfp.local_pipeline_root
        self._delay_s = retrying.exponential(base_s=config.kfp.poll_interval_s, cap_s=MAX_POLL_BACKOFF_S)
        self._failures: dict[str, tuple[int, float]] = {}  # run key -> (failed polls, monotonic time of next)
        self._progress: dict[str, int] = {}
        self._overdue: set[str] = set()
        self._curve_at: dict[str, float] = {}  # run key -> monotonic time its curve may be read again

    def work(self) -> None:
        """One pass over the runs that were submitted and have not ended."""
        tracked = frozenset({runs.RunState.SUBMITTED, runs.RunState.RUNNING})
        for run in self.journal.runs(states=tracked, limit=1000):
            with logs.bound(rule=run.rule, run_key=run.run_key):
                self.follow(run)

    def follow(self, run: runs.RunRecord) -> None:
        failures, next_at = self._failures.get(run.run_key, (0, 0.0))
        if time.monotonic() < next_at:
            return
        try:
            status = self.launcher.find(run.run_key)
        except errors.TemporaryError as exc:
            wait = self._delay_s(failures)
            self._failures[run.run_key] = (failures + 1, time.monotonic() + wait)
            log.warning("run_poll_failed", error=str(exc), retry_in_s=round(wait, 1))
            return
        self._failures.pop(run.run_key, None)
        if status is None:
            self.journal.update_run(
                run.run_key, runs.RunState.ABANDONED, at=self.clock(), error="the launcher has no run with this key"
            )
            log.warning("run_abandoned", reason="the launcher has no run with this key")
            return
        if not self.report_progress(run.run_key) and self.curves_from_mlflow:
            if status.state.final:
                self._curve_at.pop(run.run_key, None)  # the whole curve, once more, as the run ended
            self.read_curve(run)
        if status.state is runs.RunState.RUNNING:
            self._check_overdue(run)
            self._check_waiting(run, status)
            return
        if status.retryable and self._retry(status):
            return
        if run.waiting:  # it ended: what it waited on is no longer its state (a failure writes its own error)
            self.journal.update_run(run.run_key, run.state, at=self.clock(), error="")
        try:
            self.recorder.finish(run, status)
        except errors.TemporaryError as exc:
            log.warning("run_outcome_pending", error=str(exc), action="recorded once MLflow answers")
            return
        self._progress.pop(run.run_key, None)
        self._overdue.discard(run.run_key)
        self._curve_at.pop(run.run_key, None)

    def _retry(self, status: launcher_base.RunStatus) -> bool:
        """Have the backend run a failed run's failed steps again; False when it refused (record the failure)."""
        try:
            self.launcher.retry(status)
        except errors.TemporaryError as exc:
            log.warning("run_retry_pending", error=str(exc), action="retried once the backend answers")
            return True
        except errors.PermanentError as exc:
            log.warning("run_retry_refused", error=str(exc))
            return False
        return True

    def _check_waiting(self, run: runs.RunRecord, status: launcher_base.RunStatus) -> None:
        """A run waiting to start for longer than ``kfp.pending_timeout_s`` is told once per wait, and what it
        waits on is journaled on the run (``retrain status``, the dashboard, the metric read it there); cleared
        once it starts."""
        now = self.clock()
        since = status.pending_since
        if since is None:
            if run.waiting:
                self.journal.update_run(run.run_key, run.state, at=now, error="")
                log.info("run_started_after_waiting", waited_for=run.waiting)
            return
        waited_s = (now - since).total_seconds()
        if waited_s <= self.config.kfp.pending_timeout_s:
            return
        reason = f"waiting to start since {since:%Y-%m-%d %H:%M} UTC: {status.pending_reason or 'Pending'}"
        if run.waiting != reason:
            self.journal.update_run(run.run_key, run.state, at=now, error=reason)
            self.journal.record_notice(
                notices.run_waiting(run, since=since, at=now, reason=status.pending_reason or "Pending")
            )
            log.warning(
                "run_waiting_too_long",
                waited_s=round(waited_s),
                limit_s=self.config.kfp.pending_timeout_s,
                reason=status.pending_reason,
                action="reported, not cancelled: fix what it waits on, or cancel it (retrain cancel)",
            )

    def _check_overdue(self, run: runs.RunRecord) -> None:
        running_s = (self.clock() - run.created_at).total_seconds()
        if running_s > self.config.kfp.run_timeout_s and run.run_key not in self._overdue:
            self._overdue.add(run.run_key)
            log.warning(
                "run_overdue",
                running_s=round(running_s),
                limit_s=self.config.kfp.run_timeout_s,
                action="reported, not killed: stop it in KFP (or kill its process) to free the rule",
            )

    def report_progress(self, run_key: str) -> bool:
        """Log the training progress lines the pipeline child printed since last time and put them on the
        progress board. False: the run has no local output (it executes elsewhere)."""
        path = Path(self.runs_root) / run_key / "log.txt"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return False
        seen = self._progress.get(run_key, 0)
        for line in lines[seen:]:
            if constants.PROGRESS_MARK in line:
                try:
                    progress = json.loads(line.split(constants.PROGRESS_MARK, 1)[1])
                except ValueError:
                    continue
                if not isinstance(progress, dict):
                    continue
                log.info("training_progress", run_key=run_key, **progress)
                self._board(run_key, progress)
        self._progress[run_key] = len(lines)
        return True

    def _board(self, run_key: str, line: dict[str, object]) -> None:
        """One progress line of the final training onto the board (tuning trials report theirs too: not the
        run's curve)."""
        if "trial" in line:
            return
        if "final" in line:
            self.progress.mark_final(run_key)
            return
        epoch, epochs, value, map50 = line.get("epoch"), line.get("epochs"), line.get("map50_95"), line.get("map50")
        if not isinstance(epoch, int) or not isinstance(value, int | float):
            return
        point = progress_.EpochPoint(
            epoch=epoch, map50_95=float(value), map50=float(map50) if isinstance(map50, int | float) else None
        )
        self.progress.add_point(run_key, point, epochs=epochs if isinstance(epochs, int) else None, source="log")

    def read_curve(self, run: runs.RunRecord) -> None:
        """The training curve of a run executing elsewhere, from its MLflow run (MLflow down: kept as it was)."""
        model = self.recorder.model_of(run)
        if model is None or time.monotonic() < self._curve_at.get(run.run_key, 0.0):
            return
        self._curve_at[run.run_key] = time.monotonic() + CURVE_INTERVAL_S
        try:
            curve = self.recorder.mlflow.training_curve(experiment=model, run_key=run.run_key)
        except errors.RetrainError as exc:
            log.debug("training_curve_unavailable", error=str(exc))
            return
        if curve is None:
            return
        points = [
            progress_.EpochPoint(epoch=step, map50_95=value, map50=map50)
            for step, value, map50 in curve.points
            if curve.epochs is None or step <= curve.epochs  # past the last epoch: the best weights' final check
        ]
        self.progress.replace_points(
            run.run_key, points, epochs=curve.epochs, mlflow_run_id=curve.run_id, source="mlflow"
        )
