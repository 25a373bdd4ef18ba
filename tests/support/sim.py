"""Helpers to drive the journal and the engine together with a fake clock (no real time passes)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from daemon.engine import deciding
from daemon.journal import base, sqlite
from daemon.model import decisions, events, rules, runs
from daemon.rules import loading

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def make_rule(
    *,
    name: str = "pets",
    min_new_labels: int = 1,
    quiet_period: str = "10m",
    max_wait: str = "6h",
    cooldown: str = "1h",
    max_concurrent_runs: int = 1,
    max_runs_per_day: int | None = None,
    extra_triggers: str = "",
) -> rules.Rule:
    limit = f", max_runs_per_day: {max_runs_per_day}" if max_runs_per_day else ""
    text = f"""
name: {name}
dataset: {{source: "s3://datasets/{name}/"}}
model: {{registered_name: {name}-detector}}
triggers:
  - new_labels: {{min_new_labels: {min_new_labels}, quiet_period: {quiet_period}, max_wait: {max_wait}}}
{extra_triggers}
limits: {{cooldown: {cooldown}, max_concurrent_runs: {max_concurrent_runs}{limit}}}
"""
    result = loading.parse_text(text, file="test.yaml")
    assert not result.errors, [e.render() for e in result.errors]
    return result.rules[0].rule


def label(
    key: str,
    version: str = "v1",
    *,
    dataset: str = "pets",
    at: datetime = T0,
    kind: events.ChangeKind = events.ChangeKind.CREATED,
    source: events.Source = events.Source.WEBHOOK,
    class_counts: dict[str, int] | None = None,
) -> events.SourceEvent:
    path = key if "/" in key else f"labels/train/{key}.txt"
    return events.SourceEvent(
        source=source,
        dataset=dataset,
        key=path,
        kind=kind,
        item=events.classify(path),
        version=None if kind is events.ChangeKind.DELETED else version,
        size=None if kind is events.ChangeKind.DELETED else 18,
        time=at,
        class_counts=class_counts,
    )


@dataclass
class Simulation:
    """A rule, an in-memory SQLite journal and a clock; ``step`` decides and journals like the daemon."""

    rule: rules.Rule
    now: datetime = T0
    journal: base.Journal = field(default_factory=lambda: sqlite.SqliteJournal(":memory:"))
    launches: list[decisions.Launch] = field(default_factory=list)

    def drop(self, batch: Iterable[events.SourceEvent]) -> None:
        self.journal.append_events(list(batch), received_at=self.now)

    def advance(self, delta: timedelta) -> None:
        self.now += delta

    def step(self) -> decisions.Decision:
        decision = deciding.decide(self.rule, self.journal.rule_state(self.rule, now=self.now), self.now)
        if isinstance(decision, decisions.Launch):
            if self.journal.record_intent(decision, at=self.now):
                self.launches.append(decision)
        else:
            self.journal.record_skip(decision, at=self.now)
        return decision

    def finish(self, run_key: str, state: runs.RunState = runs.RunState.SUCCEEDED) -> None:
        from daemon.model import ids

        self.journal.update_run(ids.RunKey(run_key), runs.RunState.RUNNING, at=self.now)
        self.journal.update_run(ids.RunKey(run_key), state, at=self.now)
