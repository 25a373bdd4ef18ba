"""The project's crontab engine against an independent one: cronsim (Vixie cron's semantics), never against
itself. Hypothesis writes expressions (steps, ranges, lists, names, both day fields) and start times in zones
with daylight-saving changes; the next fire times must agree.

The documented differences: a slot that falls into a daylight-saving gap does not exist, and this engine
skips it, where cronsim moves it to the first minute after the gap; and a repeated hour (the clock set back)
fires once here, at its first occurrence, where cronsim (as Vixie cron for expressions with a wildcard hour)
fires its slots again. Those moved and repeated times are left out of cronsim's answer, nothing else is.
(cronsim also reads a one-value range with a step, ``0-0/1``, as ``0/1``; cron(5) and this engine read it
as ``0``: such fields are not generated.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.model import crontab
from tests.support.budget import examples

# Not Australia/Lord_Howe: cronsim assumes daylight saving moves clocks by a whole hour, and on the day Lord
# Howe Island goes from 02:00 to 02:30 it skips 03:00-03:29 too (and 02:00-02:29 on the day it goes back).
# Hypothesis found that; the half-hour changes are pinned by exact tests in test_edges_exact.py.
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "America/Sao_Paulo"]
MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]


@st.composite
def field(draw: st.DrawFn, low: int, high: int, names: list[str] | None = None) -> str:
    """One crontab field: *, */n, a, a-b, a-b/n, a/n, names, or a list of them."""

    def value() -> str:
        number = draw(st.integers(min_value=low, max_value=high))
        if names and draw(st.booleans()):
            return names[(number - low) % len(names)]
        return str(number)

    def item() -> str:
        kind = draw(st.sampled_from(["star", "step", "one", "range", "range-step", "from-step"]))
        step = draw(st.integers(min_value=1, max_value=max(1, (high - low) // 2)))
        if kind == "star":
            return "*"
        if kind == "step":
            return f"*/{step}"
        if kind == "one":
            return value()
        a, b = sorted(draw(st.integers(min_value=low, max_value=high)) for _ in range(2))
        if kind == "range":
            return f"{a}-{b}"
        if kind == "range-step" and a < b:
            # (a one-value range with a step, a-a/n, is {a} in cron(5); cronsim reads it as a/n: not compared)
            return f"{a}-{b}/{step}"
        if kind == "range-step":
            return f"{a}-{b}"
        return f"{a}/{step}"

    first = item()
    if first.startswith("*"):
        return first
    return ",".join([first, *(item() for _ in range(draw(st.integers(min_value=0, max_value=2))))]).replace("*,", "")


@st.composite
def expressions(draw: st.DrawFn) -> str:
    fields = [
        draw(field(0, 59)),
        draw(field(0, 23)),
        draw(field(1, 28)),  # days 29-31 exist in some months only: covered by the known-date tests
        draw(field(1, 12, MONTHS)),
        draw(field(0, 7, DAYS + ["sun"])),
    ]
    return " ".join(fields)


def ours(expression: str, start: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    parsed = crontab.CronExpression.parse(expression)
    found: list[datetime] = []
    cursor = start
    while len(found) < count and (slot := parsed.next_after(cursor, zone)) is not None:
        found.append(slot)
        cursor = slot
    return found


def theirs(expression: str, start: datetime, zone: ZoneInfo, count: int) -> list[datetime]:
    parsed = crontab.CronExpression.parse(expression)
    found: list[datetime] = []
    iterator = CronSim(expression, start.astimezone(zone).replace(second=0, microsecond=0))
    for moment in iterator:
        local = moment.astimezone(zone)
        moved = local.minute not in parsed.minutes or local.hour not in parsed.hours  # out of a DST gap
        repeated = local.fold == 1 and local.replace(fold=0).astimezone(UTC) != moment.astimezone(UTC)
        if moment.astimezone(UTC) > start and not moved and not repeated and moment.astimezone(UTC) not in found:
            found.append(moment.astimezone(UTC))
        if len(found) == count:
            break
    return found


@settings(max_examples=examples(300), deadline=None)
@given(
    expression=expressions(),
    zone=st.sampled_from(ZONES),
    start=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31)).map(
        lambda moment: moment.replace(tzinfo=UTC)
    ),
)
def test_next_fire_times_agree_with_an_independent_cron(expression: str, zone: str, start: datetime) -> None:
    tz = ZoneInfo(zone)
    assert ours(expression, start, tz, 5) == theirs(expression, start, tz, 5), expression


@settings(max_examples=examples(60), deadline=None)
@given(
    expression=expressions(),
    zone=st.sampled_from(["Europe/Berlin", "America/New_York", "America/Sao_Paulo"]),
    year=st.integers(min_value=2026, max_value=2028),
    transition=st.sampled_from([(3, 25), (10, 25), (3, 8), (11, 1), (4, 1), (10, 1)]),
)
def test_agreement_around_daylight_saving_changes(
    expression: str, zone: str, year: int, transition: tuple[int, int]
) -> None:
    """Starts a day before each zone's usual change dates, where a repeated hour fires once."""
    tz = ZoneInfo(zone)
    start = datetime(year, transition[0], transition[1], tzinfo=UTC) - timedelta(days=1)
    assert ours(expression, start, tz, 8) == theirs(expression, start, tz, 8), expression
