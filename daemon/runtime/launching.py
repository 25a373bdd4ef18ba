"""Launching: intents become runs, in a worker, so the loop never waits on a launcher.

The loop commits a run's intent to the journal (with the data it consumes) and wakes this worker. For each
run the journal holds as ``intended``, oldest first, the worker asks the launcher whether a run with that
key exists (a crash between "submitted" and "recorded" left one behind), submits it if not, and records it
as running. The same pass resolves the intents a crash left at start-up: the journal is the queue.

A launcher that is full or unreachable leaves the intent in place for the next pass; an intent whose rule
was removed is abandoned.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon import errors, failpoints, logs, settings
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.model import rules, runs
from daemon.rules import loading
from daemon.runtime import specs
from daemon.sources import base as source_base

log = logs.get_logger(__name__)


class Launching:
    """Submits intended runs.

    Args:
        config: the settings.
        journal: intents and runs.
        launcher: where runs execute.
        inputs: writes each run's manifest where it can read it.
        rules: the rules in force, by name.
        clock: the current time.
    """

    def __init__(
        self,
        *,
        config: settings.Settings,
        journal: journal_base.Journal,
        launcher: launcher_base.Launcher,
        inputs: specs.RunInputs,
        rules: Callable[[], Mapping[str, loading.LoadedRule]],
        clock: source_base.Clock,
    ) -> None:
        self.config = config
        self.journal = journal
        self.launcher = launcher
        self.inputs = inputs
        self.rules = rules
        self.clock = clock

    def work(self) -> None:
        """One pass over the intents, oldest first; stops at the first one the launcher cannot take now."""
        intended = self.journal.runs(states=frozenset({runs.RunState.INTENDED}), limit=1000)
        for run in reversed(intended):
            with logs.bound(rule=run.rule, run_key=run.run_key):
                if not self.launch(run):
                    return

    def launch(self, run: runs.RunRecord) -> bool:
        """Submit one intended run (or find it submitted); False when the launcher cannot take it now."""
        loaded = self.rules().get(run.rule)
        if loaded is None:
            self.journal.update_run(
                run.run_key, runs.RunState.ABANDONED, at=self.clock(), error="its rule no longer exists"
            )
            log.warning("run_abandoned", reason="rule removed before the run could start")
            return True
        try:
            self.journal.assert_leader()  # a replica that lost the lease submits nothing (KFP is outside the fence)
            status = self.launcher.find(run.run_key) or self.launcher.submit(run.run_key, self.spec(loaded.rule, run))
        except errors.TemporaryError as exc:
            log.info("run_waiting_for_launcher", reason=str(exc))
            return False
        failpoints.hit("submitted")
        self.journal.update_run(
            run.run_key,
            runs.RunState.RUNNING,
            at=self.clock(),
            backend=self.launcher.name,
            backend_run_id=status.backend_run_id,
        )
        return True

    def spec(self, rule: rules.Rule, run: runs.RunRecord) -> dict[str, object]:
        return specs.spec_for(rule, run, config=self.config, inputs=self.inputs)
