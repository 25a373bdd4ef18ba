"""Prometheus metrics: instruments the loop updates, and the sources' and journal's state read at scrape time.

Counters the reactor owns (decisions, launches, event-to-launch latency, promotions, loop errors) are
prometheus_client instruments. Everything else (events by source and kind, source connectivity, reconcile
lag, runs by state, ages of the last event and the last loop pass) is read when Prometheus scrapes, from
the :class:`~daemon.sources.base.StatusBoard` and the journal, so the figures cannot drift from the state
``retrain status`` shows. A registry per daemon: tests run several side by side.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from daemon import __version__, logs
from daemon.journal import base as journal_base
from daemon.model import runs
from daemon.rules import reloading
from daemon.sources import base as source_base

log = logs.get_logger(__name__)

#: Seconds from the newest event a launch consumed to the launcher call: quiet periods make minutes normal.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)


class Metrics:
    """The daemon's metrics.

    Args:
        board: the sources' statuses.
        journal: runs by state and the event count are read from it at scrape time.
        rulebook: loaded rules and rule file errors.
        clock: the current time (ages are measured against it).
        since_last_pass: seconds since the loop last completed a pass.
    """

    def __init__(
        self,
        *,
        board: source_base.StatusBoard,
        journal: journal_base.Journal,
        rulebook: reloading.RuleBook,
        clock: Callable[[], datetime],
        since_last_pass: Callable[[], float],
    ) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "retrain_decisions",
            "Rule evaluations by rule, outcome (launch or skip) and code (the trigger or the skip reason).",
            ["rule", "outcome", "code"],
            registry=self.registry,
        )
        self.launch_latency = Histogram(
            "retrain_event_to_launch_seconds",
            "Seconds from receiving the newest event a launch consumed to calling the launcher, by trigger.",
            ["trigger"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.promotions = Counter(
            "retrain_promotions",
            "Finished runs by model and the gate's decision (promoted, rejected...).",
            ["model", "decision"],
            registry=self.registry,
        )
        self.pruned = Counter(
            "retrain_journal_pruned",
            "Rows the retention removed from the journal, by table (events, decisions, signals, notices).",
            ["table"],
            registry=self.registry,
        )
        self.loop_errors = Counter(
            "retrain_loop_errors", "Loop passes that ended in an error (logged).", registry=self.registry
        )
        self.leader = Gauge(
            "retrain_leader",
            "1 while this replica leads (it runs sources, decisions, launches and the run watcher), 0 while it "
            "is a standby (it serves the dashboard, the read API and the webhook). A single SQLite replica is 1.",
            registry=self.registry,
        )
        self.leader_epoch = Gauge(
            "retrain_leader_epoch", "The lease's epoch this replica leads at (0 while standby).", registry=self.registry
        )
        self.lease_renewals = Counter(
            "retrain_lease_renewals",
            "Renewals of the leader's lease by this replica, by result: ok, failed (the database did not answer; "
            "retried within the TTL), lost (taken over, or the TTL passed without one).",
            ["result"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(board, journal, rulebook, clock, since_last_pass))
        # The process (memory, CPU, open files), the Python runtime and the build, as every exporter has them.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Info("retrain_build", "The daemon's version and Python.", registry=self.registry).info(
            {"version": __version__, "python": platform.python_version()}
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _StateCollector(Collector):
    def __init__(
        self,
        board: source_base.StatusBoard,
        journal: journal_base.Journal,
        rulebook: reloading.RuleBook,
        clock: Callable[[], datetime],
        since_last_pass: Callable[[], float],
    ) -> None:
        self.board = board
        self.journal = journal
        self.rulebook = rulebook
        self.clock = clock
        self.since_last_pass = since_last_pass

    def collect(self) -> Iterator[Any]:
        now = self.clock()
        yield from self._sources(now)
        yield from self._journal()
        passed = GaugeMetricFamily("retrain_loop_last_pass_age_seconds", "Seconds since the loop completed a pass.")
        passed.add_metric([], self.since_last_pass())
        yield passed
        loaded = GaugeMetricFamily("retrain_rules_loaded", "Valid rules in force.")
        loaded.add_metric([], len(self.rulebook.rules))
        yield loaded
        broken = GaugeMetricFamily(
            "retrain_rule_errors", "Errors in rule files (their last good version stays in force)."
        )
        broken.add_metric([], len(self.rulebook.errors))
        yield broken

    def _sources(self, now: datetime) -> Iterator[Any]:
        by_kind = CounterMetricFamily(
            "retrain_events",
            "Events handed to the journal (duplicates included), by source and kind.",
            labels=["source", "kind"],
        )
        for (source, kind), count in sorted(self.board.kinds().items()):
            by_kind.add_metric([source, kind], count)
        yield by_kind
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "new": CounterMetricFamily(
                "retrain_events_new", "Events the journal did not have yet, by source.", labels=["source"]
            ),
            "rejected": CounterMetricFamily(
                "retrain_events_rejected", "Malformed inputs refused, by source.", labels=["source"]
            ),
            "gaps": CounterMetricFamily(
                "retrain_source_gaps", "Times a source lost its stream or a pass failed.", labels=["source"]
            ),
            "connected": GaugeMetricFamily(
                "retrain_source_connected", "1 when the source works, 0 when it is failing.", labels=["source"]
            ),
            "event_age": GaugeMetricFamily(
                "retrain_last_event_age_seconds",
                "Seconds since the source last handed events to the journal.",
                labels=["source"],
            ),
            "reconcile_lag": GaugeMetricFamily(
                "retrain_reconcile_duration_seconds", "How long the last reconcile pass took.", labels=["source"]
            ),
            "reconcile_age": GaugeMetricFamily(
                "retrain_last_reconcile_age_seconds",
                "Seconds since the last successful reconcile pass.",
                labels=["source"],
            ),
        }
        for status in self.board.all():
            name = [status.name]
            families["new"].add_metric(name, status.new_events)
            families["rejected"].add_metric(name, status.rejected)
            families["gaps"].add_metric(name, status.gaps)
            families["connected"].add_metric(name, 1.0 if status.connected else 0.0)
            if status.last_event_at is not None:
                families["event_age"].add_metric(name, (now - status.last_event_at).total_seconds())
            if status.reconcile_lag_s is not None:
                families["reconcile_lag"].add_metric(name, status.reconcile_lag_s)
            if status.last_reconcile_at is not None:
                families["reconcile_age"].add_metric(name, (now - status.last_reconcile_at).total_seconds())
        yield from families.values()

    def _journal(self) -> Iterator[Any]:
        up = GaugeMetricFamily("retrain_journal_up", "1 when the journal answered this scrape.")
        try:
            counts = self.journal.run_counts()
            events = self.journal.event_count()
            active = self.journal.runs(states=runs.ACTIVE, limit=1000)
        except Exception as exc:  # a locked or broken journal must not fail the whole scrape
            log.warning("metrics_journal_unreadable", error=str(exc))
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        by_state = GaugeMetricFamily("retrain_runs", "Runs in the journal by state.", labels=["state"])
        for state in runs.RunState:
            by_state.add_metric([state.value], counts.get(state.value, 0))
        yield by_state
        waiting = GaugeMetricFamily(
            "retrain_runs_waiting",
            "Active runs waiting to start for longer than kfp.pending_timeout_s (a task's pod Pending), by rule.",
            labels=["rule"],
        )
        stuck: dict[str, int] = {}
        for run in active:
            if run.waiting:
                stuck[run.rule] = stuck.get(run.rule, 0) + 1
        for rule, count in sorted(stuck.items()):
            waiting.add_metric([rule], count)
        yield waiting
        total = GaugeMetricFamily("retrain_journal_events", "Distinct events in the journal.")
        total.add_metric([], events)
        yield total
