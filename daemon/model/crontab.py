"""Standard crontab expressions, parsed and evaluated without any scheduler library.

Semantics are those of cron(5), which users know, not APScheduler's ``from_crontab`` (which reads day of
week 0 as Monday):

- five fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or ``jan``-``dec``),
  day of week (0-7 or ``sun``-``sat``; **0 and 7 are Sunday**);
- ``*``, ``a``, ``a-b``, ``*/n``, ``a-b/n``, ``a/n`` and comma lists; ``@hourly``, ``@daily``,
  ``@weekly``, ``@monthly``, ``@yearly``;
- when both day of month and day of week are restricted, a day matches if **either** matches.

Times are wall-clock times in the rule's timezone. A slot that falls in a daylight-saving gap does not
exist and is skipped; a slot in a repeated hour fires once, at its first occurrence.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i
    for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)
}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
#: How far ahead ``next_after`` looks before deciding an expression never fires: the Gregorian calendar, weekdays
#: included, repeats every 400 years, so a day no 400-year span holds never comes (``0 0 31 2 *``). Shorter
#: horizons are wrong: Tuesday 1 September is 11 years apart, Sunday 29 February up to 40 (2100 is no leap year).
_HORIZON_YEARS = 400


def _value(token: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    lowered = token.lower()
    if lowered in names:
        return names[lowered]
    if not token.isdigit():
        raise ValueError(f"{field}: {token!r} is not a number" + (" or a name" if names else ""))
    value = int(token)
    if not low <= value <= high:
        raise ValueError(f"{field}: {value} is out of range {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: dict[str, int], field: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ValueError(f"{field}: empty list item in {text!r}")
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, low, high, names, field), _value(last, low, high, names, field)
            if start > end:
                raise ValueError(f"{field}: range {base!r} runs backwards")
        else:
            start = _value(base, low, high, names, field)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True, kw_only=True)
class CronExpression:
    """A parsed crontab line. Weekdays are 0 = Sunday ... 6 = Saturday (7 folded into 0)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse a crontab expression.

        Raises:
            ValueError: the expression is not standard crontab; the message names the field.
        """
        expanded = _MACROS.get(text.strip().lower(), text)
        parts = expanded.split()
        if len(parts) != 5:
            raise ValueError(
                f"{text!r} has {len(parts)} fields; a crontab expression has 5: "
                "minute hour day-of-month month day-of-week (e.g. '0 3 * * 0' = Sundays 03:00)"
            )
        sets = [_field(p, lo, hi, names, name) for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(
            text=text.strip(),
            minutes=sets[0],
            hours=sets[1],
            days=sets[2],
            months=sets[3],
            weekdays=weekdays,
            day_restricted=not parts[2].startswith("*"),
            weekday_restricted=not parts[4].startswith("*"),
        )

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays  # isoweekday: Monday 1 ... Sunday 7 -> 0
        if self.day_restricted and self.weekday_restricted:
            return dom or dow
        return dom and dow

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """The first slot strictly after ``after`` (an aware datetime), as an aware UTC datetime.

        Returns ``None`` for an expression that never fires (``0 0 31 2 *``).
        """
        if after.tzinfo is None:
            raise ValueError("next_after needs an aware datetime")
        local = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        day = local.date()
        if day.year + _HORIZON_YEARS > date.max.year:
            return None
        end = day.replace(year=day.year + _HORIZON_YEARS, day=1)
        while day <= end:
            if day.month not in self.months:  # a month that never matches: go to the next one at once
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
                continue
            if self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        naive = datetime(day.year, day.month, day.day, hour, minute)
                        if naive <= local and day == local.date():
                            continue
                        aware = naive.replace(tzinfo=tz, fold=0)
                        # A wall-clock time in a DST gap does not round-trip: it does not exist; skip it.
                        if aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) != naive:
                            continue
                        slot = aware.astimezone(UTC)
                        if slot > after:
                            return slot
            day += timedelta(days=1)
        return None

    def slots_between(self, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
        """Every slot in ``(start, end]``, in order (for catching up after downtime)."""
        found: list[datetime] = []
        cursor = start
        while (slot := self.next_after(cursor, tz)) is not None and slot <= end:
            found.append(slot)
            cursor = slot
        return found
