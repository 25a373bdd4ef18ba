"""Tracking: active runs are followed in a worker until their outcome is journaled.

Each pass asks the launcher about every run the journal holds as running, logs the training progress its
process printed, reports runs past ``kfp.run_timeout_s`` (once; they are not killed), and hands finished
runs to the :class:`~daemon.runtime.recording.OutcomeRecorder`. A launcher that cannot answer about a run
is asked again after a backoff (doubling from ``kfp.poll_interval_s`` up to five minutes), per run; a run
the launcher does not know at all is abandoned. MLflow unable to give a finished run's outcome leaves the
run active: it is recorded once MLflow answers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from daemon import constants, errors, logs, retrying, settings
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.model import runs
from daemon.runtime import recording
from daemon.sources import base as source_base

log = logs.get_logger(__name__)

#: The longest wait between two polls of a run whose launcher keeps failing, in seconds.
MAX_POLL_BACKOFF_S = 300.0


class RunTracker:
    """Follows active runs.

    Args:
        config: the settings (poll interval, run timeout, the runs folder with progress logs).
        journal: the runs.
        launcher: where the runs execute.
        recorder: journals the ends.
        clock: the current time.
    """

    def __init__(
        self,
        *,
        config: settings.Settings,
        journal: journal_base.Journal,
        launcher: launcher_base.Launcher,
        recorder: recording.OutcomeRecorder,
        clock: source_base.Clock,
    ) -> None:
        self.config = config
        self.journal = journal
        self.launcher = launcher
        self.recorder = recorder
        self.clock = clock
        self.runs_root = config.kfp.local_pipeline_root
        self._delay_s = retrying.exponential(base_s=config.kfp.poll_interval_s, cap_s=MAX_POLL_BACKOFF_S)
        self._failures: dict[str, tuple[int, float]] = {}  # run key -> (failed polls, monotonic time of next)
        self._progress: dict[str, int] = {}
        self._overdue: set[str] = set()

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
        self.report_progress(run.run_key)
        if status.state is runs.RunState.RUNNING:
            self._check_overdue(run)
            return
        try:
            self.recorder.finish(run, status)
        except errors.TemporaryError as exc:
            log.warning("run_outcome_pending", error=str(exc), action="recorded once MLflow answers")
            return
        self._progress.pop(run.run_key, None)
        self._overdue.discard(run.run_key)

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

    def report_progress(self, run_key: str) -> None:
        """Log the training progress lines the pipeline child printed since last time."""
        path = Path(self.runs_root) / run_key / "log.txt"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        seen = self._progress.get(run_key, 0)
        for line in lines[seen:]:
            if constants.PROGRESS_MARK in line:
                try:
                    progress = json.loads(line.split(constants.PROGRESS_MARK, 1)[1])
                except ValueError:
                    continue
                log.info("training_progress", run_key=run_key, **progress)
        self._progress[run_key] = len(lines)
