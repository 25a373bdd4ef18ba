"""Pure helpers of the engine: standard crontab semantics and drift statistics (hand-computed values)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.engine import drift
from daemon.model import crontab

UTC_ZONE = ZoneInfo("UTC")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        # 2026-11-23 is a Monday. 0 = Sunday, as in cron(5) (APScheduler's from_crontab would say Monday).
        ("0 3 * * 0", "2026-11-23T00:00", "2026-11-29T03:00"),
        ("0 3 * * 7", "2026-11-23T00:00", "2026-11-29T03:00"),
        ("0 3 * * sun", "2026-11-23T00:00", "2026-11-29T03:00"),
        ("0 3 * * 1", "2026-11-23T00:00", "2026-11-23T03:00"),
        ("30 2 * * 1-5", "2026-11-27T03:00", "2026-11-30T02:30"),  # Friday after the slot -> Monday
        ("*/15 * * * *", "2026-11-23T10:07", "2026-11-23T10:15"),
        ("0 0 1 jan *", "2026-11-23T00:00", "2027-01-01T00:00"),
        ("@daily", "2026-11-23T00:00", "2026-11-24T00:00"),
        ("0 0 29 2 *", "2026-11-23T00:00", "2028-02-29T00:00"),
        # Day of month and day of week both restricted: either matches (cron(5)).
        ("0 12 1 * 0", "2026-11-23T00:00", "2026-11-29T12:00"),
        ("0 12 25 * 3", "2026-11-23T00:00", "2026-11-25T12:00"),
        # Far slots (found by the cron oracle: an 8-year search gave up on the first): Tuesday the 1st of
        # September (day of month */7 starts with *, so both must match) is 11 years away; Sunday 29
        # February 27 years, and 38 across 2100, which is not a leap year.
        ("* * */7 9 2", "2027-01-01T00:00", "2037-09-01T00:00"),
        ("0 0 29 2 */7", "2033-01-01T00:00", "2060-02-29T00:00"),
        ("0 0 29 2 */7", "2090-01-01T00:00", "2128-02-29T00:00"),
    ],
)
def test_next_slot(expression: str, after: str, expected: str) -> None:
    assert crontab.CronExpression.parse(expression).next_after(at(after), UTC_ZONE) == at(expected)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        # Exact rows for every step form (cron(5)): ``a/n`` runs from a to the field's end, ``a-b/n`` from a
        # to b inclusive, both in steps of n counted from a (not from the field's start).
        ("5/15", {5, 20, 35, 50}),
        ("0/20", {0, 20, 40}),
        ("59/1", {59}),
        ("58/2", {58}),
        ("10-30/10", {10, 20, 30}),
        ("10-31/10", {10, 20, 30}),
        ("10-29/10", {10, 20}),
        ("7-7/5", {7}),
        ("1-5/2,40", {1, 3, 5, 40}),
        ("*/25", {0, 25, 50}),
        ("3-4", {3, 4}),
    ],
)
def test_minute_field_rows_are_exact(field: str, expected: set[int]) -> None:
    assert crontab.CronExpression.parse(f"{field} * * * *").minutes == expected


@pytest.mark.parametrize(
    ("expression", "attribute", "expected"),
    [
        ("0 0 2/10 * *", "days", {2, 12, 22}),  # day of month starts at 1: a/n counts from a, up to 31
        ("0 0 */10 * *", "days", {1, 11, 21, 31}),
        ("0 0 * 2/5 *", "months", {2, 7, 12}),
        ("0 0 * feb-aug/3 *", "months", {2, 5, 8}),  # names in a stepped range
        ("0 0 * * 1-7/2", "weekdays", {1, 3, 5, 0}),  # 7 is Sunday, folded into 0
        ("0 0 * * mon/2", "weekdays", {1, 3, 5, 0}),  # a/n reaches 7 (Sunday) at the field's end
        ("0 20/2 * * *", "hours", {20, 22}),
    ],
)
def test_stepped_rows_in_other_fields(expression: str, attribute: str, expected: set[int]) -> None:
    assert getattr(crontab.CronExpression.parse(expression), attribute) == expected


def test_a_stepped_day_field_restricts_but_a_star_step_does_not() -> None:
    # cron(5): a day field that starts with * counts as unrestricted when both day fields are given.
    assert crontab.CronExpression.parse("0 0 2/10 * 1").day_restricted
    assert not crontab.CronExpression.parse("0 0 */10 * 1").day_restricted
    assert crontab.CronExpression.parse("0 0 * * 1/2").weekday_restricted
    assert not crontab.CronExpression.parse("0 0 * * */2").weekday_restricted


def test_slot_is_strictly_after() -> None:
    expr = crontab.CronExpression.parse("0 3 * * *")
    assert expr.next_after(at("2026-11-23T03:00"), UTC_ZONE) == at("2026-11-24T03:00")


def test_timezone_is_the_rules_wall_clock() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    expr = crontab.CronExpression.parse("0 3 * * 0")
    # 03:00 in Berlin on Sunday 29 November (CET, UTC+1) is 02:00 UTC.
    assert expr.next_after(at("2026-11-23T00:00"), berlin) == at("2026-11-29T02:00")


def test_daylight_saving_gap_is_skipped_and_repeat_fires_once() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    # 2027-03-28: 02:00-03:00 does not exist in Berlin; 02:30 that day is skipped.
    gap = crontab.CronExpression.parse("30 2 * * *")
    assert gap.next_after(at("2027-03-27T12:00"), berlin) == at("2027-03-29T00:30")
    # 2026-10-25: 02:30 happens twice; the slot fires at the first (CEST, UTC+2).
    repeat = crontab.CronExpression.parse("30 2 25 10 *")
    slots = repeat.slots_between(at("2026-10-24T00:00"), at("2026-10-26T00:00"), berlin)
    assert slots == [at("2026-10-25T00:30")]


def test_slots_between_lists_missed_slots() -> None:
    expr = crontab.CronExpression.parse("0 * * * *")
    assert len(expr.slots_between(at("2026-11-23T00:00"), at("2026-11-23T05:00"), UTC_ZONE)) == 5


def test_never_firing_expression() -> None:
    assert crontab.CronExpression.parse("0 0 31 2 *").next_after(at("2026-01-01T00:00"), UTC_ZONE) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 3 * *", "has 4 fields"),
        ("61 * * * *", "minute: 61 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day of month: 0 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day of week: 8 is out of range 0-7"),
        ("0 0 * * funday", "day of week: 'funday' is not a number or a name"),
        ("*/0 * * * *", "step '0' must be a positive number"),
        ("5-1 * * * *", "range '5-1' runs backwards"),
        ("1,,2 * * * *", "empty list item"),
    ],
)
def test_bad_expressions(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        crontab.CronExpression.parse(expression)
    assert message in str(caught.value)


def test_jensen_shannon_hand_computed() -> None:
    assert drift.jensen_shannon({"0": 10, "1": 10}, {"0": 3, "1": 3}) == pytest.approx(0.0, abs=1e-12)
    assert drift.jensen_shannon({"0": 5}, {"1": 7}) == pytest.approx(1.0)
    # p = (.5, .5), q = (1, 0), m = (.75, .25):
    # KL(p||m) = .5 log2(.5/.75) + .5 log2(.5/.25) = 0.2075187; KL(q||m) = log2(1/.75) = 0.4150375.
    assert drift.jensen_shannon({"0": 1, "1": 1}, {"0": 4}) == pytest.approx((0.2075187 + 0.4150375) / 2, abs=1e-6)


def test_jensen_shannon_is_symmetric() -> None:
    a, b = {"0": 3, "1": 1, "2": 6}, {"0": 1, "1": 5}
    assert drift.jensen_shannon(a, b) == pytest.approx(drift.jensen_shannon(b, a))


def test_psi_hand_computed() -> None:
    # p = (.5, .5), q = (.25, .75): (-.25) ln(.5) + (.25) ln(1.5) = 0.1732868 + 0.1013663.
    assert drift.psi({"0": 2, "1": 2}, {"0": 1, "1": 3}) == pytest.approx(0.2746531, abs=1e-6)
    assert drift.psi({"0": 2, "1": 2}, {"0": 5, "1": 5}) == pytest.approx(0.0)


def test_psi_smooths_empty_bins() -> None:
    value = drift.psi({"0": 1}, {"1": 1})
    assert math.isfinite(value)
    assert value == pytest.approx(2 * (1 - 1e-4) * math.log(1 / 1e-4))


def test_divergence_by_name_and_errors() -> None:
    assert drift.divergence("psi", {"0": 1}, {"0": 1}) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="unknown statistic 'kl'"):
        drift.divergence("kl", {"0": 1}, {"0": 1})
    with pytest.raises(ValueError, match="at least one count"):
        drift.jensen_shannon({}, {"0": 1})
