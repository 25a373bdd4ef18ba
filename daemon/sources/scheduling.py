"""Schedule triggers: slots of the rules' crontab expressions, journaled as ticks by the daemon's loop.

One cron engine, the project's own (:mod:`daemon.model.crontab`: cron(5) semantics, 0 = Sunday, day of
month OR day of week, timezones and daylight-saving gaps), checked in the tests against an independent
implementation. On every pass the loop asks :meth:`ScheduleSource.due` for the slots that fell since its
last look, and journals each as a tick (``record_tick`` is idempotent on rule, trigger and slot: a
restart, or a clock that stepped back and forth, never fires the same slot twice).

Only slots within a trigger's ``misfire_grace`` of now are looked at: after downtime (or a clock that
jumped forward) older slots are gone, as cron would have them, and a jump of a year does not walk a year of
minutes. The engine answers a tick that is still older than the grace with "slot missed".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from daemon import logs
from daemon.journal import base as journal_base
from daemon.model import rules, triggers
from daemon.sources import base

log = logs.get_logger(__name__)

NAME = "schedules"

#: (rule, trigger index, the trigger), by ``rule#index``.
Schedules = dict[str, tuple[str, int, triggers.ScheduleTrigger]]


def schedules(rule_map: Mapping[str, rules.Rule]) -> Schedules:
    """Every schedule trigger of the enabled rules."""
    found: Schedules = {}
    for rule in rule_map.values():
        if not rule.enabled:
            continue
        for index, trigger in enumerate(rule.triggers):
            if trigger.schedule is not None:
                found[f"{rule.name}#{index}"] = (rule.name, index, trigger.schedule)
    return found


class ScheduleSource:
    """Journals the slots of every schedule trigger as they fall due.

    Args:
        journal: where ticks go.
        board: status counters.
        clock: the current time.
        on_tick: called after a new tick is journaled.
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
        self._checked: dict[str, datetime] = {}

    def due(self, rule_map: Mapping[str, rules.Rule], *, now: datetime) -> int:
        """Journal the slots in ``(last look, now]`` of every schedule, within its misfire grace; returns how
        many ticks were new. The first look after a start catches up the slots of the last grace period."""
        found = schedules(rule_map)
        fired = 0
        for job, (rule, index, spec) in found.items():
            earliest = now - max(spec.misfire_grace, timedelta(seconds=1))
            since = max(self._checked.get(job, earliest), earliest)
            for slot in spec.expression.slots_between(since, now, spec.zone):
                fired += int(self.fire(rule, index, slot))
            self._checked[job] = now
        for job in set(self._checked) - set(found):
            del self._checked[job]
        self.board.update(NAME, connected=True)
        return fired

    def fire(self, rule: str, index: int, slot: datetime) -> bool:
        """Journal the tick of one slot; False if it was journaled before (a restart, a second look)."""
        now = self.clock()
        new = self.journal.record_tick(rule, trigger_index=index, slot=slot, at=now)
        self.board.add(NAME, events=1, new_events=int(new))
        self.board.count_kinds(NAME, ["tick"])
        self.board.update(NAME, last_event_at=now)
        if new:
            log.info("schedule_fired", rule=rule, trigger=index, slot=slot.isoformat())
            self.on_tick(rule)
        return new
