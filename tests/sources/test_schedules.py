"""Schedule triggers, driven by the loop: each slot journaled once, catch-up within the grace only, a
clock that steps back or jumps forward fires nothing twice and walks no year of minutes. Fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.journal import sqlite
from daemon.model import crontab, rules
from daemon.rules import loading
from daemon.sources import base, scheduling


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rule_map(cron: str, timezone: str = "UTC", grace: str = "10m") -> dict[str, rules.Rule]:
    text = f"""
name: nightly
dataset: {{source: "s3://datasets/pets/"}}
model: {{registered_name: pets-detector}}
triggers:
  - new_labels: {{min_new_labels: 100}}
  - schedule: {{cron: "{cron}", timezone: {timezone}, misfire_grace: {grace}}}
"""
    result = loading.parse_text(text, file="nightly.yaml")
    assert not result.errors
    return {r.rule.name: r.rule for r in result.rules}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def source_at(now: datetime) -> tuple[scheduling.ScheduleSource, sqlite.SqliteJournal, Clock]:
    journal = sqlite.SqliteJournal(":memory:")
    clock = Clock(now)
    return scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=clock), journal, clock


def ticks(journal: sqlite.SqliteJournal, rules_: dict[str, rules.Rule], now: datetime) -> list[datetime]:
    return [t.slot for t in journal.rule_state(rules_["nightly"], now=now).ticks]


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [
        ("0 3 * * 0", "UTC"),
        ("30 2 * * 1-5", "America/New_York"),
        ("*/20 9-17 * * mon-fri", "Asia/Tokyo"),
        ("0 12 1 * 0", "UTC"),
        ("@daily", "Australia/Sydney"),
    ],
)
def test_a_week_of_loop_passes_journals_every_slot_once(cron: str, timezone: str) -> None:
    """Passes every 37 s for a week: exactly the expression's slots are journaled, each once."""
    rules_ = rule_map(cron, timezone, grace="5m")
    start = at("2026-11-23T00:00")
    source, journal, clock = source_at(start)
    end = start + timedelta(days=7)
    while clock.now < end:
        source.due(rules_, now=clock.now)
        clock.now += timedelta(seconds=37)
    zone = rules_["nightly"].triggers[1].schedule.zone  # type: ignore[union-attr]
    last_pass = clock.now - timedelta(seconds=37)
    expected = crontab.CronExpression.parse(cron).slots_between(start - timedelta(seconds=1), last_pass, zone)
    assert ticks(journal, rules_, end) == expected


def test_a_slot_is_journaled_once_even_across_a_restart() -> None:
    rules_ = rule_map("0 3 * * 0")
    first, journal, clock = source_at(at("2026-11-29T03:00:02"))
    assert first.due(rules_, now=clock.now) == 1
    # The daemon restarts two minutes later and catches up: the slot is already journaled.
    clock.now = at("2026-11-29T03:02")
    restarted = scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=clock)
    assert restarted.due(rules_, now=clock.now) == 0
    assert ticks(journal, rules_, clock.now) == [at("2026-11-29T03:00")]


def test_catch_up_journals_slots_missed_within_grace_only() -> None:
    rules_ = rule_map("*/5 * * * *", grace="12m")
    source, journal, _ = source_at(at("2026-11-23T10:31"))
    # Down since 09:00: only the slots of the last 12 minutes are still worth a run.
    assert source.due(rules_, now=at("2026-11-23T10:31")) == 3
    assert ticks(journal, rules_, at("2026-11-23T10:31")) == [
        at("2026-11-23T10:20"),
        at("2026-11-23T10:25"),
        at("2026-11-23T10:30"),
    ]


def test_a_clock_that_steps_back_fires_no_slot_twice() -> None:
    rules_ = rule_map("*/5 * * * *", grace="10m")
    source, journal, _ = source_at(at("2026-11-23T10:00"))
    for minute in range(0, 21):
        source.due(rules_, now=at("2026-11-23T10:00") + timedelta(minutes=minute))
    before = ticks(journal, rules_, at("2026-11-23T10:20"))
    # NTP steps the clock back a quarter of an hour; the loop goes on from there.
    for minute in range(5, 21):
        assert source.due(rules_, now=at("2026-11-23T10:00") + timedelta(minutes=minute)) == 0
    assert ticks(journal, rules_, at("2026-11-23T10:20")) == before


def test_a_clock_that_jumps_a_year_ahead_looks_at_the_grace_period_only() -> None:
    rules_ = rule_map("* * * * *", grace="3m")
    source, journal, _ = source_at(at("2026-11-23T10:00"))
    source.due(rules_, now=at("2026-11-23T10:00"))
    ahead = at("2027-11-23T10:00")
    assert source.due(rules_, now=ahead) == 3  # not half a million minutes
    assert ticks(journal, rules_, ahead)[-3:] == [ahead - timedelta(minutes=2 - i) for i in range(3)]


def test_schedules_follow_rule_reloads() -> None:
    source, journal, clock = source_at(at("2026-11-23T02:25"))
    source.due(rule_map("30 2 * * 1-5", "UTC"), now=clock.now)
    assert source.due(rule_map("30 2 * * 1-5", "UTC"), now=at("2026-11-23T02:30")) == 1
    # The trigger is removed: nothing fires any more.
    clock.now = at("2026-11-24T02:30")
    assert source.due({}, now=clock.now) == 0
