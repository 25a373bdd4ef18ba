"""Edges of the pure core, each pinned to the exact value or message (found by mutation testing: see
MUTATION.md). Messages are part of the contract: users read them in `retrain rules check` and `explain`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.engine import drift, gating, labels
from daemon.model import events, outcomes, rules
from daemon.model.crontab import CronExpression


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- crontab ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x * * * *", "minute: 'x' is not a number"),
        ("* * * foo *", "month: 'foo' is not a number or a name"),
        ("70-80 * * * *", "minute: 70 is out of range 0-59"),
        ("1-80 * * * *", "minute: 80 is out of range 0-59"),
        ("1-5-7 * * * *", "minute: '5-7' is not a number"),
        (
            "0 3 * *",
            "'0 3 * *' has 4 fields; a crontab expression has 5: "
            "minute hour day-of-month month day-of-week (e.g. '0 3 * * 0' = Sundays 03:00)",
        ),
    ],
)
def test_cron_messages(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        CronExpression.parse(text)
    assert str(caught.value) == message


def test_cron_keeps_its_text_stripped() -> None:
    assert CronExpression.parse("  0 3 * * 0 ").text == "0 3 * * 0"


def test_cron_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match=r"^next_after needs an aware datetime$"):
        CronExpression.parse("* * * * *").next_after(datetime(2026, 1, 1), ZoneInfo("UTC"))


def test_cron_skips_only_the_minutes_a_half_hour_dst_gap_removes() -> None:
    # Lord Howe Island moves its clocks from 02:00 to 02:30 on 4 October 2026: 02:00 does not exist, 02:45 does.
    tz = ZoneInfo("Australia/Lord_Howe")
    got = CronExpression.parse("0,45 2 * * *").next_after(datetime(2026, 10, 4, 1, 0, tzinfo=tz), tz)
    assert got == datetime(2026, 10, 3, 15, 45, tzinfo=UTC)
    assert got.astimezone(tz).hour == 2 and got.astimezone(tz).minute == 45


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # The hour after the half-hour gap exists from its first minute (cronsim skips 03:00-03:29 here).
        ("* 3 * * *", datetime(2028, 9, 30, 12, 0), datetime(2028, 9, 30, 16, 0, tzinfo=UTC)),
        # Going back at 02:00 repeats 01:30-01:59; 02:00 itself happens once, at 15:30 UTC.
        ("* 2 * * 0", datetime(2026, 4, 5, 1, 0), datetime(2026, 4, 4, 15, 30, tzinfo=UTC)),
        # 01:45 repeats; it fired at its first pass (before the start), so the next is a week on, in standard time.
        ("45 1 * * 0", datetime(2026, 4, 5, 1, 50), datetime(2026, 4, 11, 15, 15, tzinfo=UTC)),
    ],
)
def test_cron_around_half_hour_daylight_saving_changes(expression: str, start: datetime, expected: datetime) -> None:
    tz = ZoneInfo("Australia/Lord_Howe")
    assert CronExpression.parse(expression).next_after(start.replace(tzinfo=tz), tz) == expected


@pytest.mark.usefixtures("local_zone_not_utc")
def test_cron_answers_in_utc_whatever_the_local_zone() -> None:
    tz = ZoneInfo("Europe/Berlin")
    got = CronExpression.parse("0 3 * * *").next_after(datetime(2026, 11, 23, 12, 0, tzinfo=UTC), tz)
    assert got.tzinfo is UTC
    assert got == datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    assert str(got) == "2026-11-24 02:00:00+00:00"


# --- rules -----------------------------------------------------------------------------------------------


def _model(**fields: object) -> rules.ModelSpec:
    return rules.ModelSpec(registered_name="pets", **fields)  # type: ignore[arg-type]


def test_an_s3_base_needs_a_bucket_and_a_key() -> None:
    with pytest.raises(ValueError, match=r"'s3://yolov8n.pt' is not s3://bucket/key.pt"):
        _model(base="s3://yolov8n.pt")
    assert _model(base="s3://models/yolov8n.pt").base == "s3://models/yolov8n.pt"


def test_a_base_of_the_wrong_kind_says_what_is_accepted() -> None:
    with pytest.raises(ValueError) as caught:
        _model(base="weights.bin")
    assert (
        "'weights.bin': base must be .pt weights (s3://..., file:///... or a file in the trainer image), "
        "a .yaml model config or models:/..."
    ) in str(caught.value)


def test_unknown_hyperparameters_are_listed_with_the_tunable_ones() -> None:
    with pytest.raises(ValueError) as caught:
        rules.TrainingSpec(hyperparameters={"lr9": 0.1, "zoom": 1.0})
    tunable = ", ".join(sorted(rules.TUNABLE))
    assert f"unknown hyperparameter lr9, zoom: tunable are {tunable}" in str(caught.value)


# --- events ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("train/labels/frame.001.txt", events.ItemKind.LABEL),  # labels deeper than the first folder, dotted names
        ("val/images/a.b.JPG", events.ItemKind.IMAGE),
        ("labels/notes.txt.bak", events.ItemKind.OTHER),
    ],
)
def test_classify_uses_the_last_suffix_and_every_folder(key: str, kind: events.ItemKind) -> None:
    assert events.classify(key) is kind


# --- gating ----------------------------------------------------------------------------------------------


def _scores(value: float, **per_class: float) -> outcomes.Evaluation:
    return outcomes.Evaluation(map50_95=value, map50=value, per_class=per_class)


def test_a_first_model_within_float_tolerance_below_the_bar_passes() -> None:
    spec = rules.PromotionSpec(first_model_min=0.5)
    verdict = gating.gate(candidate=_scores(0.5 - gating.EPSILON), champion=None, policy=spec)
    assert verdict.promote


def test_a_gain_no_larger_than_float_tolerance_is_no_gain() -> None:
    verdict = gating.gate(candidate=_scores(gating.EPSILON), champion=_scores(0.0), policy=rules.PromotionSpec())
    assert not verdict.promote


def test_a_class_drop_equal_to_the_limit_within_tolerance_is_allowed() -> None:
    spec = rules.PromotionSpec(max_class_drop=0.5)
    champion = _scores(0.2, cat=0.5 + gating.EPSILON)
    verdict = gating.gate(candidate=_scores(0.4, cat=0.0), champion=champion, policy=spec)
    assert verdict.promote


def test_classes_that_cannot_be_compared_are_named() -> None:
    spec = rules.PromotionSpec(max_class_drop=0.5)
    champion = _scores(0.2, cat=float("nan"), dog=float("nan"))
    verdict = gating.gate(candidate=_scores(0.4), champion=champion, policy=spec)
    assert verdict.reason == (
        "map50_95 0.4000 beats champion 0.2000 by +0.2000 (> 0); classes without a champion AP, not compared: cat, dog"
    )


# --- drift -----------------------------------------------------------------------------------------------


def test_drift_takes_zero_counts_as_absent_classes() -> None:
    assert drift.psi({"0": 4, "1": 0}, {"0": 4}) == drift.psi({"0": 4}, {"0": 4}) == 0.0
    assert drift.jensen_shannon({"0": 4, "1": 0}, {"0": 2}) == 0.0


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ({}, {"0": 1}, "both histograms need at least one count"),
        ({"0": 3, "1": -1}, {"0": 1}, "histogram counts cannot be negative"),
    ],
)
def test_drift_messages(reference: dict[str, int], current: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        drift.psi(reference, current)
    assert str(caught.value) == message


# --- labels ----------------------------------------------------------------------------------------------


def test_a_bad_line_does_not_hide_the_boxes_after_it() -> None:
    assert labels.class_counts("not a box\n0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\n0 0.1 0.1 0.1 0.1\n") == {
        "0": 2,
        "1": 1,
    }


def test_the_search_stops_where_dates_end() -> None:
    """400 years ahead is the horizon; a start whose horizon would pass year 9999 answers None, one that just
    fits still finds its slot."""
    daily = CronExpression.parse("0 0 * * *")
    utc = ZoneInfo("UTC")
    assert daily.next_after(datetime(9599, 1, 1, tzinfo=UTC), utc) == datetime(9599, 1, 2, tzinfo=UTC)
    assert daily.next_after(datetime(9700, 1, 1, tzinfo=UTC), utc) is None
