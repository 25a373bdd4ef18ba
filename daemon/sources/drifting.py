"""Drift checks: periodic measurements that the rule engine thresholds.

- **class drift**: the class histogram of labels that arrived since the rule last trained, against the
  histogram of the champion's training data (the snapshot of the run that produced the champion, or of the
  rule's last successful run before any promotion), with the rule's statistic (Jensen-Shannon or PSI);
- **metric drift**: the latest value of an MLflow metric logged by any monitor (mAP on live traffic, say)
  against the champion's validation value; the observation is the drop.

Each check journals an observation; a newer one supersedes an unanswered older one. Missing inputs (no
champion yet, no label counts, MLflow unreachable) skip the check with a log line; nothing raises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from daemon import errors, logs
from daemon.engine import drift
from daemon.journal import base as journal_base
from daemon.model import ids, rules, runs, triggers
from daemon.sources import base

log = logs.get_logger(__name__)

NAME = "drift"


class MetricReader(Protocol):
    """What metric drift needs from the tracking server (implemented by ``daemon.registry``)."""

    def live_metric(self, *, experiment: str, metric: str) -> float | None:
        """The latest value of ``metric`` logged in ``experiment``, if any."""
        ...

    def champion_metric(self, *, model: str, metric: str) -> float | None:
        """The champion version's validation value of ``metric``, if there is a champion."""
        ...


@dataclass
class DriftChecker:
    """Runs the due drift checks of every rule and journals observations."""

    journal: journal_base.Journal
    board: base.StatusBoard
    clock: base.Clock
    metrics: MetricReader | None = None
    _last: dict[tuple[str, int], datetime] = field(default_factory=dict)

    def reference_snapshot(self, rule: rules.Rule) -> str | None:
        """The snapshot the champion was trained on, else the rule's last successful run's."""
        for promotion in self.journal.promotions(rule.model.registered_name, limit=50):
            if promotion.kind in ("promoted", "rollback") and promotion.run_key:
                run = self.journal.get_run(ids.RunKey(promotion.run_key))
                if run is not None and run.snapshot:
                    return run.snapshot
        for run in self.journal.runs(rule=rule.name, states=frozenset({runs.RunState.SUCCEEDED}), limit=1):
            if run.snapshot:
                return run.snapshot
        return None

    def class_drift(self, rule: rules.Rule, spec: triggers.ClassDriftTrigger, *, now: datetime) -> float | None:
        """The divergence between new labels and the champion's training data, or None if unknown."""
        current = dict(self.journal.rule_state(rule, now=now).pending.class_counts)
        snapshot = self.reference_snapshot(rule)
        if not current or snapshot is None:
            return None
        reference = self.journal.snapshot_histogram(rule.dataset_name, snapshot)
        if not reference:
            return None
        return drift.divergence(spec.statistic, reference, current)

    def metric_drop(self, rule: rules.Rule, spec: triggers.MetricDriftTrigger) -> tuple[float, str] | None:
        """The champion's validation value minus the live value, with a description, or None."""
        if self.metrics is None:
            return None
        model = rule.model.registered_name
        live = self.metrics.live_metric(experiment=spec.experiment or model, metric=spec.metric)
        champion = self.metrics.champion_metric(model=model, metric=rule.promotion.metric)
        if live is None or champion is None:
            return None
        return champion - live, f"live {spec.metric}={live:.4f}, champion {rule.promotion.metric}={champion:.4f}"

    def run_due(self, rule_map: Mapping[str, rules.Rule]) -> int:
        """Run every check whose ``check_every`` has passed; returns how many observations were journaled."""
        now = self.clock()
        recorded = 0
        for rule in rule_map.values():
            if not rule.enabled:
                continue
            for index, trigger in enumerate(rule.triggers):
                spec = trigger.class_drift or trigger.metric_drift
                if spec is None:
                    continue
                last = self._last.get((rule.name, index))
                if last is not None and now - last < spec.check_every:
                    continue
                self._last[(rule.name, index)] = now
                recorded += self._check(rule, index, trigger, now=now)
        return recorded

    def _check(self, rule: rules.Rule, index: int, trigger: triggers.TriggerSpec, *, now: datetime) -> int:
        try:
            if trigger.class_drift is not None:
                value = self.class_drift(rule, trigger.class_drift, now=now)
                if value is None:
                    log.debug("class_drift_skipped", rule=rule.name, reason="no champion data or no new label counts")
                    return 0
                self.journal.record_observation(rule.name, kind="class_drift", trigger_index=index, value=value, at=now)
                log.info("class_drift_measured", rule=rule.name, statistic=trigger.class_drift.statistic, value=value)
            elif trigger.metric_drift is not None:
                measured = self.metric_drop(rule, trigger.metric_drift)
                if measured is None:
                    log.debug("metric_drift_skipped", rule=rule.name, reason="no live metric or no champion")
                    return 0
                drop, detail = measured
                self.journal.record_observation(
                    rule.name, kind="metric_drift", trigger_index=index, value=drop, at=now, detail=detail
                )
                log.info("metric_drift_measured", rule=rule.name, drop=drop, detail=detail)
            else:
                return 0
        except errors.RetrainError as exc:
            self.board.update(NAME, last_error=str(exc))
            log.warning("drift_check_failed", rule=rule.name, error=str(exc))
            return 0
        self.board.add(NAME, events=1, new_events=1)
        self.board.count_kinds(NAME, [trigger.kind])
        self.board.update(NAME, last_event_at=now, connected=True)
        return 1
