"""Schedule triggers: cron(5) semantics through APScheduler, journaled ticks, restarts. Fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

from daemon.journal import sqlite
from daemon.model import crontab
from daemon.rules import loading
from daemon.sources import base, scheduling


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def rule_map(cron: str, timezone: str = "UTC", grace: str = "10m") -> dict[str, object]:
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


@pytest.mark.parametrize(
    ("cron", "timezone"),
    [
        ("0 3 * * 0", "UTC"),  # Sunday, not Monday
        ("0 3 * * 7", "UTC"),
        ("30 2 * * 1-5", "America/New_York"),
        ("0 4 * * sun", "Europe/Berlin"),
        ("*/20 9-17 * * mon-fri", "Asia/Tokyo"),
        ("0 12 1 * 0", "UTC"),  # day of month OR day of week
        ("15 6 1,15 * *", "Europe/Berlin"),
        ("@daily", "Australia/Sydney"),
    ],
)
def test_apscheduler_trigger_fires_at_the_crontab_slots(cron: str, timezone: str) -> None:
    [rule] = rule_map(cron, timezone).values()
    spec = rule.triggers[1].schedule  # type: ignore[attr-defined]
    trigger = scheduling.trigger_for(spec)
    expr = crontab.CronExpression.parse(cron)
    now = at("2026-11-23T00:00")  # a Monday
    for _ in range(12):
        expected = expr.next_after(now, spec.zone)
        fired = trigger.get_next_fire_time(None, now + timedelta(microseconds=1))
        assert fired is not None and expected is not None
        assert fired.astimezone(UTC) == expected, (cron, timezone, now)
        now = expected


def test_sunday_is_zero_unlike_from_crontab() -> None:
    [rule] = rule_map("0 3 * * 0").values()
    trigger = scheduling.trigger_for(rule.triggers[1].schedule)  # type: ignore[attr-defined]
    fired = trigger.get_next_fire_time(None, at("2026-11-23T00:00"))
    assert fired is not None and fired.strftime("%A") == "Sunday"


def test_a_slot_is_journaled_once_even_across_a_restart() -> None:
    journal = sqlite.SqliteJournal(":memory:")
    clock = Clock(at("2026-11-29T03:00:02"))
    rules = rule_map("0 3 * * 0")
    first = scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=clock)
    first.sync(rules)
    slot = at("2026-11-29T03:00")
    first._on_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, "nightly#1", "default", [slot]))
    assert [t.slot for t in journal.rule_state(rules["nightly"], now=clock.now).ticks] == [slot]  # type: ignore[arg-type]

    # The daemon restarts two minutes later and catches up: the slot is already journaled.
    clock.now = at("2026-11-29T03:02")
    restarted = scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=clock)
    assert restarted.catch_up(rules, now=clock.now) == 0  # type: ignore[arg-type]
    assert len(journal.rule_state(rules["nightly"], now=clock.now).ticks) == 1  # type: ignore[arg-type]


def test_catch_up_journals_slots_missed_within_grace_only() -> None:
    journal = sqlite.SqliteJournal(":memory:")
    rules = rule_map("*/5 * * * *", grace="12m")
    source = scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=Clock(at("2026-11-23T10:31")))
    # Down since 09:00: only the slots of the last 12 minutes are still worth a run.
    assert source.catch_up(rules, now=at("2026-11-23T10:31")) == 3  # type: ignore[arg-type]
    slots = [t.slot for t in journal.rule_state(rules["nightly"], now=at("2026-11-23T10:31")).ticks]  # type: ignore[arg-type]
    assert slots == [at("2026-11-23T10:20"), at("2026-11-23T10:25"), at("2026-11-23T10:30")]


def test_jobs_follow_rule_reloads_on_a_running_scheduler() -> None:
    journal = sqlite.SqliteJournal(":memory:")
    source = scheduling.ScheduleSource(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    source.start()
    try:
        source.sync(rule_map("0 3 * * 0", "Europe/Berlin"))  # type: ignore[arg-type]
        [job] = source.scheduler.get_jobs()
        assert job.id == "nightly#1"
        assert job.next_run_time.strftime("%A %H:%M") == "Sunday 03:00"
        assert str(job.next_run_time.tzinfo) == "Europe/Berlin"
        source.sync(rule_map("30 2 * * 1-5", "America/New_York"))  # type: ignore[arg-type]
        [job] = source.scheduler.get_jobs()
        assert job.next_run_time.strftime("%H:%M") == "02:30"
        assert job.next_run_time.strftime("%a") in {"Mon", "Tue", "Wed", "Thu", "Fri"}
        source.sync({})
        assert source.scheduler.get_jobs() == []
    finally:
        source.stop()
