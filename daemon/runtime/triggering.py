"""Triggering: the loop's work. Schedules fall due, every rule is decided, launches become intents.

This is the only part that runs on the loop thread, and it only reads and writes the journal (which is on
a local volume): no S3, MLflow or KFP call, so the liveness probe measures the daemon, not a service.

- Renamed rules (``renamed_from``) take their history over before they are decided.
- The wall clock is watched: when it stepped back (NTP, a VM restored) past what the journal recorded,
  times from the "future" are brought back to now, so quiet periods, waits and cooldowns run from times
  that happened instead of hanging until the clock catches up.
- A launch's intent is committed with the data it consumes before anyone is told; the launching worker
  then submits it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from daemon import failpoints, logs
from daemon.engine import deciding
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base
from daemon.model import decisions, rules
from daemon.sources import scheduling

log = logs.get_logger(__name__)

#: A wall clock this far behind the newest time the journal recorded has stepped back.
CLOCK_STEP_TOLERANCE = timedelta(seconds=60)


class ClockGuard:
    """Notices a wall clock that stepped back and brings the journal's future times back to now."""

    def __init__(self, journal: journal_base.Journal) -> None:
        self.journal = journal
        self.watermark = journal.latest_time()

    def check(self, now: datetime) -> None:
        if self.watermark is not None and now < self.watermark - CLOCK_STEP_TOLERANCE:
            moved = self.journal.clamp_future(now)
            log.warning(
                "clock_stepped_back",
                by_s=round((self.watermark - now).total_seconds()),
                restamped=moved,
                action="times recorded in the future now count from now",
            )
            self.watermark = now
        elif self.watermark is None or now > self.watermark:
            self.watermark = now


class Triggering:
    """One pass of the loop: ticks, decisions, intents.

    Args:
        journal: what rules see, and where decisions go.
        schedules: journals schedule slots as they fall due.
        metrics: decisions and launch latency are counted.
        clock: the current time.
        on_intent: called after a launch's intent is committed (wakes the launching worker).
        dry_run: launches are journaled as ``dry_run`` skips ("would launch ...") and logged; no intent is
            written, so no data is consumed and nothing starts.
    """

    def __init__(
        self,
        *,
        journal: journal_base.Journal,
        schedules: scheduling.ScheduleSource,
        metrics: metrics_.Metrics,
        clock: Callable[[], datetime],
        on_intent: Callable[[], None],
        dry_run: bool = False,
    ) -> None:
        self.dry_run = dry_run
        self.journal = journal
        self.schedules = schedules
        self.metrics = metrics
        self.clock = clock
        self.on_intent = on_intent
        self.clock_guard = ClockGuard(journal)
        self._said: dict[str, str] = {}

    def adopt_renames(self, rule_map: Mapping[str, rules.Rule]) -> None:
        """Move the history of every rule's previous name to it, once (see ``Rule.renamed_from``)."""
        for rule in rule_map.values():
            old = rule.renamed_from
            if old is None or old in rule_map or not self.journal.has_history(old):
                continue
            dataset = (old, rule.dataset_name) if rule.dataset.name is None else None
            if self.journal.rename_rule(old, rule.name, datasets=dataset):
                log.info("rule_renamed", rule=rule.name, renamed_from=old, action="its history moved with it")

    def step(self, rule_map: Mapping[str, rules.Rule], *, stopping: Callable[[], bool]) -> None:
        now = self.clock()
        self.clock_guard.check(now)
        self.schedules.due(rule_map, now=now)
        for rule in rule_map.values():
            if stopping():
                return
            with logs.bound(rule=rule.name):
                self.decide(rule)

    def decide(self, rule: rules.Rule) -> decisions.Decision:
        now = self.clock()
        st = self.journal.rule_state(rule, now=now)
        decision = deciding.decide(rule, st, now)
        if isinstance(decision, decisions.Skip):
            self.journal.record_skip(decision, at=now)
            if self._said.get(rule.name) != decision.code.value:
                self._said[rule.name] = decision.code.value
                self.metrics.decisions.labels(rule.name, "skip", decision.code.value).inc()
                log.info("rule_waiting", code=decision.code.value, reason=decision.reason)
            return decision
        if self.dry_run:
            return self._would_launch(rule, decision, now)
        if not self.journal.record_intent(decision, at=now):
            return decision
        self._said.pop(rule.name, None)
        failpoints.hit("intent_written")
        self.metrics.decisions.labels(rule.name, "launch", decision.trigger.value).inc()
        log.info("rule_fired", run_key=decision.run_key, trigger=decision.trigger.value, reason=decision.reason)
        if st.pending.last_at is not None and decision.trigger is decisions.TriggerKind.NEW_LABELS:
            latency = (self.clock() - st.pending.last_at).total_seconds()
            self.metrics.launch_latency.labels(decision.trigger.value).observe(max(0.0, latency))
        self.on_intent()
        return decision

    def _would_launch(self, rule: rules.Rule, launch: decisions.Launch, now: datetime) -> decisions.Skip:
        """The dry run's answer to a launch: journaled as a decision (answering no tick nor request), said once."""
        would = decisions.Skip(
            rule=rule.name,
            code=decisions.SkipCode.DRY_RUN,
            reason=f"dry run: would launch {launch.run_key} ({launch.trigger.value}): {launch.reason}",
            numbers=launch.numbers,
        )
        self.journal.record_skip(would, at=now)
        said = f"{decisions.SkipCode.DRY_RUN.value}:{launch.run_key}"
        if self._said.get(rule.name) != said:
            self._said[rule.name] = said
            self.metrics.decisions.labels(rule.name, "skip", decisions.SkipCode.DRY_RUN.value).inc()
            log.info("would_launch", run_key=launch.run_key, trigger=launch.trigger.value, reason=launch.reason)
        return would
