"""The reactor: the composition root of ``retrain up``. It builds the parts, starts them, runs the loop and
stops them; the work itself lives in :mod:`daemon.runtime`.

1. start: bind the HTTP port (a taken port stops the start), load the rules; on a journal shared by
   replicas (PostgreSQL), stand by until this replica takes the leader's lease (:mod:`daemon.runtime.leading`:
   a standby serves HTTP and journals webhook deliveries, nothing else); then log the runs left active by
   the last life (the workers resolve them: intents are submitted or found, running runs re-attached),
   start the workers;
2. the loop, once per ``tick_s`` and at once when a source journals new events: reload changed rule files
   (handing them to the source supervisor), then :class:`~daemon.runtime.triggering.Triggering` journals
   due schedule slots, decides every rule and commits launch intents; it only touches the journal;
3. stop (SIGTERM/SIGINT): no new work, the journal write in progress finishes, running pipelines are left
   alone (the next start re-attaches), the lease is given up, exit within ``shutdown.timeout_s``. A leader
   that loses its lease stops the same way, at once, and ``retrain up`` exits with
   :data:`~daemon.runtime.leading.EXIT_LOST_LEADERSHIP` (restarted, it stands by).

Workers (each a thread, :mod:`daemon.runtime.working`): launching, tracking, drift checks, the source
supervisor, the S3 reconciles and the reading of S3 label files' class counts (woken by every delivery).
Every failure becomes a log line and, where it concerns a run, a journaled outcome; only a stop ends the loop.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta

from daemon import __version__, errors, logs, settings
from daemon.launchers import base as launcher_base
from daemon.model import rules, runs
from daemon.runtime import (
    launching,
    leading,
    notifying,
    pruning,
    recording,
    serving,
    specs,
    supervising,
    tracking,
    triggering,
    wiring,
    working,
)
from daemon.sources import drifting, scheduling

log = logs.get_logger(__name__)

#: The shortest time between two loop passes, in seconds, when events wake the loop early.
MIN_PASS_GAP_S = 0.01
#: Seconds between two passes of the notifier (deliveries due, sources down, refused rule files).
NOTIFY_INTERVAL_S = 2.0
#: Seconds between two passes of the label-counting worker when no delivery wakes it.
COUNTING_INTERVAL_S = 30.0
#: A reconcile pass is followed by at least this many times its own duration before the next one (a bucket
#: that takes 10 minutes to list is listed at most a quarter of the time, whatever the interval).
RECONCILE_STRETCH = 3.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def pass_delay(*, since_last_pass_s: float, took_s: float) -> float:
    """Seconds to wait, once woken, before the next loop pass: what is left of the gap after the last pass.

    The gap is as long as that pass (at least :data:`MIN_PASS_GAP_S`), counted from its end, so a label
    that lands on a quiet daemon is decided on at once, while a burst of deliveries is taken in a few
    passes and the loop never holds the journal more than half the time.
    """
    return max(0.0, max(MIN_PASS_GAP_S, took_s) - since_last_pass_s)


class Reactor:
    """The daemon. ``run()`` blocks until ``stop()``.

    Args:
        config: the settings.
        clock: the current time (aware).
        tick_s: seconds between two passes of the loop.
        environ: the environment local pipeline children inherit (default: this process's).
        launcher: runs runs instead of the configured launcher (benchmarks).
        dry_run: sources and decisions run; launches are journaled and logged as "would launch", none starts.
    """

    def __init__(
        self,
        config: settings.Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        tick_s: float = 1.0,
        environ: Mapping[str, str] | None = None,
        launcher: launcher_base.Launcher | None = None,
        dry_run: bool = False,
    ) -> None:
        self.config = config
        self.tick_s = tick_s
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self.started = threading.Event()
        """Set once the daemon runs (HTTP served, first scans done, workers started)."""
        self.parts = parts = wiring.build(config, clock=clock, environ=environ, on_new=self._on_new, launcher=launcher)
        self.journal, self.rulebook, self.launcher = parts.journal, parts.rulebook, parts.launcher
        self.supervisor = supervising.SourceSupervisor(config=config, sink=parts.sink, store=parts.store, clock=clock)
        loaded = parts.rulebook.in_force
        inputs = specs.RunInputs(config=config, journal=parts.journal, store=parts.store)
        self.launching = launching.Launching(
            config=config, journal=parts.journal, launcher=parts.launcher, inputs=inputs, rules=loaded, clock=clock
        )
        recorder = recording.OutcomeRecorder(
            journal=parts.journal,
            mlflow=parts.mlflow,
            rules=loaded,
            metrics=parts.metrics,
            backend=parts.launcher.name,
            clock=clock,
        )
        self.tracker = tracking.RunTracker(
            config=config,
            journal=parts.journal,
            launcher=parts.launcher,
            recorder=recorder,
            clock=clock,
            progress=parts.progress,
            curves_from_mlflow=config.kfp.launcher != "local",
        )
        drift = drifting.DriftChecker(journal=parts.journal, board=parts.board, clock=clock, metrics=parts.mlflow)
        schedules = scheduling.ScheduleSource(journal=parts.journal, board=parts.board, clock=clock)
        self.notifier = notifying.Notifier(
            config=config.notify,
            journal=parts.journal,
            board=parts.board,
            rulebook=parts.rulebook,
            clock=clock,
            environ=os.environ if environ is None else environ,
        )
        self.pruner = pruning.Pruner(
            journal=parts.journal,
            clock=clock,
            retention=timedelta(days=config.journal.retention_days),
            pruned=parts.metrics.pruned,
            stopping=self._stopping.is_set,
        )
        self.workers = {
            name: working.Worker(
                name=name,
                work=work,
                interval_s=interval,
                on_crash=lambda _: parts.metrics.loop_errors.inc(),
                stretch=RECONCILE_STRETCH if name == "reconcile" else None,
            )
            for name, work, interval in (
                ("launching", self.launching.work, 5.0),
                ("tracking", self.tracker.work, 1.0 if config.kfp.launcher == "local" else config.kfp.poll_interval_s),
                ("drift", lambda: drift.run_due(self.rule_map()), 5.0),
                ("sources", self.supervisor.work, config.sources.unwatched_retry_s),
                ("reconcile", self.supervisor.reconcile, config.sources.reconcile_interval_s),
                ("counting", lambda: self.supervisor.count_labels(stopping=self._stopping.is_set), COUNTING_INTERVAL_S),
                ("notify", self.notifier.work, NOTIFY_INTERVAL_S),
                ("prune", self.pruner.work, config.journal.prune_interval_s),
            )
        }
        self.triggering = triggering.Triggering(
            journal=parts.journal,
            schedules=schedules,
            metrics=parts.metrics,
            clock=clock,
            on_intent=self.workers["launching"].wake,
            dry_run=dry_run,
        )
        self.leading = leading.Leading(
            leadership=parts.journal.leadership(),
            config=config.leader,
            metrics=parts.metrics,
            on_lost=self._lost_leadership,
        )
        context = serving.context(config, parts, self.supervisor.locations)
        context.leadership = lambda: dataclasses.asdict(self.leading.standing())
        self.http = serving.HttpServer(
            config=config.http, context=context, webhook_on=bool(config.sources.webhook_token)
        )

    def _lost_leadership(self, reason: str) -> None:
        """This replica no longer leads: stop at once (the journal refuses its acting writes already)."""
        self.stop()

    def _on_new(self) -> None:
        """A source journaled new events: the loop decides on them, the counting worker reads new labels."""
        self._wake.set()
        counting = getattr(self, "workers", {}).get("counting")
        if counting is not None:
            counting.wake()

    def rule_map(self) -> dict[str, rules.Rule]:
        """The rules in force, by name."""
        return {name: loaded.rule for name, loaded in self.rulebook.rules.items()}

    @property
    def http_port(self) -> int | None:
        """The port the HTTP server listens on (after ``run()`` started it)."""
        return self.http.port

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        """Ask the loop to end (signal handlers call this)."""
        self._stopping.set()
        self._wake.set()

    @property
    def lost_leadership(self) -> bool:
        """Whether this replica stopped because it lost the leader's lease."""
        return self.leading.lost.is_set()

    def start(self) -> bool:
        """Everything but the loop: serve, stand by until leading, start the work. False: a stop came while
        standing by. Raises :class:`~daemon.errors.ConfigError` when the HTTP port is taken."""
        self.serve()
        if not self.leading.wait_for_lease(stopping=self._stopping.is_set, on_wait=self._stand_by):
            return False
        self.lead()
        return True

    def serve(self) -> None:
        """Bind HTTP and load the rules: what every replica does, leader or standby."""
        log.info("daemon_starting", version=__version__, journal=self.journal.path, holder=self.leading.holder)
        self.parts.liveness.mark()
        if self.config.http.enabled:
            try:
                self.http.start()
            except errors.RetrainError:
                self.parts.launcher.close()
                self.journal.close()
                raise
        self.rulebook.refresh()
        self.supervisor.sync(self.rule_map())  # the webhook maps keys to datasets with it, on any replica

    def _stand_by(self) -> None:
        """A standby's pass: the rules the dashboard shows and the webhook maps keys with stay current, and
        the liveness probe passes. It starts no source and decides nothing."""
        try:
            if self.rulebook.refresh().changed:
                self.supervisor.sync(self.rule_map())
        except Exception:  # a bug in reloading must not stop a standby; traced
            log.exception("standby_pass_crashed", action="will retry")
        self.parts.liveness.mark()

    def lead(self) -> None:
        """Start the work only the leader does: recovered runs, the first scans, the workers."""
        self.refresh_rules(force=True)
        for run in self.journal.runs(states=runs.ACTIVE, limit=1000):
            log.info("run_recovered", run_key=run.run_key, journal_state=run.state.value)
        self.supervisor.work()  # the first scans, before the first decision
        for worker in self.workers.values():
            worker.start()
        self.started.set()
        log.info("daemon_started", rules=sorted(self.rulebook.rules), dry_run=self.triggering.dry_run)

    def run(self) -> None:
        """Serve until :meth:`stop` (or until this replica loses the leader's lease)."""
        try:
            if not self.start():
                return
            while not self._stopping.is_set() and not self.leading.check():
                began = time.monotonic()
                self.step()
                took = time.monotonic() - began
                if self.supervisor.reconcile_requested.is_set():
                    self.workers["reconcile"].wake()
                # A tick, or less when new events arrive: woken by a source's commit, the next pass starts
                # once the gap after this one is over (at once after a quiet spell).
                ended = time.monotonic()
                self._wake.wait(self.tick_s)
                self._wake.clear()
                self._stopping.wait(pass_delay(since_last_pass_s=time.monotonic() - ended, took_s=took))
        finally:
            self.shutdown()

    def refresh_rules(self, *, force: bool = False) -> None:
        if self.rulebook.refresh().changed or force:
            rule_map = self.rule_map()
            self.triggering.adopt_renames(rule_map)
            self.supervisor.sync(rule_map)
            self.workers["sources"].wake()
            self.workers["counting"].wake()  # a rule that starts using class counts has them read now

    def step(self) -> None:
        """One pass of the loop; never raises for a bad rule, a source or a run."""
        try:
            self.refresh_rules()
            self.triggering.step(self.rule_map(), stopping=self._stopping.is_set)
        except errors.RetrainError as exc:
            self.parts.metrics.loop_errors.inc()
            log.warning("loop_step_failed", error=str(exc), action="will retry next tick")
        except Exception:  # a bug or an unexpected library error must not stop the daemon; counted, traced
            self.parts.metrics.loop_errors.inc()
            log.exception("loop_step_crashed", action="will retry next tick")
        self.parts.liveness.mark()

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.config.shutdown.timeout_s
        for worker in self.workers.values():
            worker.stop()
        self.supervisor.stop(deadline=deadline)
        self.http.stop(max(0.1, deadline - time.monotonic()))
        for worker in self.workers.values():
            worker.join(max(0.1, deadline - time.monotonic()))
        self.leading.stop()  # after the workers: their last writes land before a standby takes over
        self.parts.launcher.close()
        self.journal.close()
        log.info("daemon_stopped", note="running pipelines are left alone; the next start re-attaches")
