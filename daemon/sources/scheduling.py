"""Schedule triggers: APScheduler 3 cron jobs whose firings become journaled ticks.

Rules use standard crontab (0 = Sunday). APScheduler's ``CronTrigger.from_crontab`` reads day-of-week 0 as
Monday, and ANDs day-of-month with day-of-week where cron(5) ORs them, so the trigger is built here from
the parsed expression: weekdays by name (``sun``...), and an ``OrTrigger`` of two cron triggers when both
day fields are restricted.

Each firing journals a tick with its slot time (``record_tick`` is idempotent on rule, trigger and slot):
a restart never fires the same slot twice, and :meth:`ScheduleSource.catch_up` journals slots that fell
while the daemon was down, if they are still within the trigger's misfire grace.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent, JobSubmissionEvent
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from daemon import logs
from daemon.journal import base as journal_base
from daemon.model import rules
from daemon.sources import base

log = logs.get_logger(__name__)

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
NAME = "schedules"


def _join(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


def trigger_for(spec: rules.ScheduleTrigger) -> BaseTrigger:
    """The APScheduler trigger equivalent to the rule's crontab expression, in its timezone."""
    expr = spec.expression
    common: dict[str, object] = {
        "second": 0,
        "minute": _join(expr.minutes),
        "hour": _join(expr.hours),
        "month": _join(expr.months),
        "timezone": spec.zone,
    }
    days = _join(expr.days) if expr.day_restricted else "*"
    weekdays = ",".join(_DAY_NAMES[d] for d in sorted(expr.weekdays)) if expr.weekday_restricted else "*"
    if expr.day_restricted and expr.weekday_restricted:
        return OrTrigger([CronTrigger(day=days, **common), CronTrigger(day_of_week=weekdays, **common)])
    return CronTrigger(day=days, day_of_week=weekdays, **common)


def _job_id(rule: str, index: int) -> str:
    return f"{rule}#{index}"


class ScheduleSource:
    """Keeps one APScheduler job per schedule trigger and journals each firing as a tick.

    Args:
        journal: where ticks go.
        board: status counters.
        clock: the current time.
        on_tick: called after a new tick is journaled (wakes the rule engine).
    """

    def __init__(
        self,
        *,
        journal: journal_base.Journal,
        board: base.StatusBoard,
        clock: base.Clock,
        on_tick: Callable[[str], None] = lambda rule: None,
    ) -> None:
        self.journal = journal
        self.board = board
        self.clock = clock
        self.on_tick = on_tick
        self._lock = threading.Lock()
        self._specs: dict[str, tuple[str, int, rules.ScheduleTrigger]] = {}
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_SUBMITTED | EVENT_JOB_MISSED)

    def schedules(self, rule_map: Mapping[str, rules.Rule]) -> dict[str, tuple[str, int, rules.ScheduleTrigger]]:
        found: dict[str, tuple[str, int, rules.ScheduleTrigger]] = {}
        for rule in rule_map.values():
            if not rule.enabled:
                continue
            for index, trigger in enumerate(rule.triggers):
                if trigger.schedule is not None:
                    found[_job_id(rule.name, index)] = (rule.name, index, trigger.schedule)
        return found

    def sync(self, rule_map: Mapping[str, rules.Rule]) -> None:
        """Make the jobs match the rules in force (after a reload)."""
        wanted = self.schedules(rule_map)
        with self._lock:
            for job_id in set(self._specs) - set(wanted):
                self.scheduler.remove_job(job_id)
            for job_id, (rule, index, spec) in wanted.items():
                if self._specs.get(job_id) == (rule, index, spec):
                    continue
                self.scheduler.add_job(
                    _noop,
                    trigger=trigger_for(spec),
                    id=job_id,
                    name=f"{rule} schedule {spec.cron!r} ({spec.timezone})",
                    replace_existing=True,
                    misfire_grace_time=int(spec.misfire_grace.total_seconds()) or 1,
                )
            self._specs = wanted
        self.board.update(NAME, connected=True)

    def fire(self, rule: str, index: int, slot: datetime) -> bool:
        """Journal the tick of one slot; False if it was journaled before (a restart, a second firing)."""
        new = self.journal.record_tick(rule, trigger_index=index, slot=slot, at=self.clock())
        self.board.add(NAME, events=1, new_events=int(new))
        self.board.count_kinds(NAME, ["tick"])
        self.board.update(NAME, last_event_at=self.clock())
        if new:
            log.info("schedule_fired", rule=rule, trigger=index, slot=slot.isoformat())
            self.on_tick(rule)
        return new

    def catch_up(self, rule_map: Mapping[str, rules.Rule], *, now: datetime) -> int:
        """Journal slots that fell while the daemon was down and are still within their misfire grace."""
        fired = 0
        for rule, index, spec in self.schedules(rule_map).values():
            since = now - max(spec.misfire_grace, timedelta(seconds=1))
            for slot in spec.expression.slots_between(since, now, spec.zone):
                fired += int(self.fire(rule, index, slot))
        return fired

    def _on_event(self, event: JobEvent) -> None:
        with self._lock:
            spec = self._specs.get(event.job_id)
        if spec is None:
            return
        rule, index, _ = spec
        if isinstance(event, JobSubmissionEvent) and event.code == EVENT_JOB_SUBMITTED:
            self.fire(rule, index, max(event.scheduled_run_times))
        else:
            log.warning("schedule_missed", rule=rule, trigger=index, action="slot skipped (past its misfire grace)")

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        self.board.update(NAME, connected=False)


def _noop() -> None:
    """The job itself does nothing: the submission listener journals the tick with its slot time."""
