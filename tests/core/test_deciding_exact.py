"""decide() spelled out: for each situation the whole decision, every field of it (code, reason, numbers, when
to look again, what it answers, the launch's parameters), at the boundaries the README promises (at least,
exactly at, just before). What users read in `retrain explain` is part of the contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from daemon.engine import deciding, snapshots
from daemon.model import decisions, ids, rules, runs, state
from daemon.rules import loading

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
FP = "f" * 64


def rule(triggers: str, *, extra: str = "", classes: str = "") -> rules.Rule:
    text = (
        f"name: pets\ndataset: {{source: 's3://datasets/pets/'{classes}}}\nmodel: {{registered_name: pets-detector}}\n"
        f"triggers:\n{triggers}\n{extra}"
    )
    result = loading.parse_text(text, file="pets.yaml")
    assert not result.errors, [e.render() for e in result.errors]
    return result.rules[0].rule


def pending(
    labels: int,
    *,
    images: int = 0,
    first: timedelta | None = None,
    last: timedelta | None = None,
    counts: dict[str, int] | None = None,
) -> state.PendingData:
    return state.PendingData(
        labels=labels,
        images=images,
        class_counts=counts or {},
        first_at=NOW - first if first is not None else None,
        last_at=NOW - last if last is not None else None,
    )


def numbers(
    labels: int = 0, images: int = 0, *, since: float | None = None, active: int = 0, launches: int = 0, items: int = 0
) -> dict[str, object]:
    found: dict[str, object] = {
        "pending_labels": labels,
        "pending_images": images,
        "active_runs": active,
        "launches_last_day": launches,
        "snapshot_items": items,
    }
    if since is not None:
        found["seconds_since_last_label"] = since
    return found


NEW_LABELS = "  - new_labels: {min_new_labels: 3, min_new_images: 2, quiet_period: 10m, max_wait: 1h}"


def skip(
    code: decisions.SkipCode,
    reason: str,
    nums: dict[str, object],
    *,
    at: datetime | None = None,
    acks: tuple[str, ...] = (),
) -> decisions.Skip:
    return decisions.Skip(rule="pets", code=code, reason=reason, numbers=nums, next_check_at=at, acknowledges=acks)


def test_a_disabled_rule() -> None:
    r = rule(NEW_LABELS, extra="enabled: false")
    got = deciding.decide(r, state.RuleState(pending=pending(5, images=5, first=2 * S, last=S)), NOW)
    assert got == skip(decisions.SkipCode.DISABLED, "rule is disabled", numbers(5, 5, since=1.0))


def test_a_dataset_that_cannot_be_used() -> None:
    r = rule(NEW_LABELS)
    st = state.RuleState(pending=pending(5, images=5, first=1 * 3600 * S, last=20 * 60 * S), dataset_problem="gone")
    got = deciding.decide(r, st, NOW)
    reason = "dataset pets cannot be used now: gone; waiting to 5 new labels (need 3), quiet for 20m (quiet period 10m)"
    assert got == skip(decisions.SkipCode.DATASET_UNAVAILABLE, reason, numbers(5, 5, since=1200.0))
    quiet = deciding.decide(r, state.RuleState(dataset_problem="not mounted"), NOW)
    assert quiet == skip(
        decisions.SkipCode.DATASET_UNAVAILABLE, "dataset pets cannot be used now: not mounted", numbers()
    )


@pytest.mark.parametrize(
    ("data", "code", "reason", "nums", "at"),
    [
        (pending(0), decisions.SkipCode.NO_NEW_DATA, "no new or changed labels", numbers(), None),
        (
            pending(2, images=9, first=S, last=S),
            decisions.SkipCode.BELOW_THRESHOLD,
            "2/3 new labels",
            numbers(2, 9, since=1.0),
            None,
        ),
        (
            pending(3, images=1, first=S, last=S),
            decisions.SkipCode.BELOW_THRESHOLD,
            "1/2 new images",
            numbers(3, 1, since=1.0),
            None,
        ),
        # Waiting: the quiet period ends 9m59s from now unless max_wait (ends in 59m) comes first.
        (
            pending(3, images=2, first=60 * S, last=S),
            decisions.SkipCode.QUIET_PERIOD,
            "waiting for quiet period: last label 1s ago, need 10m "
            "(3 new labels (need 3); max_wait ends 2026-11-23 12:59 UTC)",
            numbers(3, 2, since=1.0),
            NOW + 600 * S - S,
        ),
        # max_wait is nearer than the quiet period's end.
        (
            pending(3, images=2, first=3590 * S, last=S),
            decisions.SkipCode.QUIET_PERIOD,
            "waiting for quiet period: last label 1s ago, need 10m "
            "(3 new labels (need 3); max_wait ends 2026-11-23 12:00 UTC)",
            numbers(3, 2, since=1.0),
            NOW + 10 * S,
        ),
    ],
)
def test_new_labels_waits(
    data: state.PendingData, code: decisions.SkipCode, reason: str, nums: dict[str, object], at: datetime | None
) -> None:
    got = deciding.decide(rule(NEW_LABELS), state.RuleState(pending=data, snapshot=FP, snapshot_items=7), NOW)
    assert got == skip(code, reason, {**nums, "snapshot_items": 7}, at=at)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        # Exactly the quiet period: it fires ("quiet for at least").
        (pending(3, images=2, first=600 * S, last=600 * S), "3 new labels (need 3), quiet for 10m (quiet period 10m)"),
        # Exactly max_wait after the first pending file, while files still arrive.
        (
            pending(4, images=2, first=3600 * S, last=0 * S),
            "4 new labels (need 3), still arriving but max_wait 1h reached",
        ),
    ],
)
def test_new_labels_fire_at_the_boundaries(data: state.PendingData, reason: str) -> None:
    r = rule(NEW_LABELS)
    got = deciding.decide(r, state.RuleState(pending=data, snapshot=FP, snapshot_items=5), NOW)
    key = snapshots.data_run_key("pets", FP)
    since = (NOW - data.last_at).total_seconds() if data.last_at else None  # type: ignore[operator]
    assert got == decisions.Launch(
        rule="pets",
        run_key=key,
        trigger=decisions.TriggerKind.NEW_LABELS,
        reason=reason,
        snapshot=FP,
        params=deciding.launch_params(r)
        | {"trigger": decisions.TriggerKind.NEW_LABELS, "run_key": key, "snapshot": FP},
        numbers=numbers(data.labels, data.images, since=since, items=5),
        acknowledges=(),
    )


def test_just_before_the_boundaries_it_waits() -> None:
    r = rule(NEW_LABELS)
    for data in (pending(3, images=2, first=599 * S, last=599 * S), pending(4, images=2, first=3599 * S, last=0 * S)):
        got = deciding.decide(r, state.RuleState(pending=data, snapshot=FP), NOW)
        assert isinstance(got, decisions.Skip) and got.code is decisions.SkipCode.QUIET_PERIOD


def test_per_class_minimums_by_name_and_by_id() -> None:
    r = rule(
        "  - new_labels: {min_new_labels: 1, min_per_class: {dog: 5, '0': 2}, quiet_period: 0s}",
        classes=", classes: [cat, dog]",
    )
    few_dogs = pending(2, first=S, last=S, counts={"0": 9, "1": 4})
    got = deciding.decide(r, state.RuleState(pending=few_dogs, snapshot=FP), NOW)
    assert got == skip(decisions.SkipCode.BELOW_THRESHOLD, "class 'dog': 4/5 new boxes", numbers(2, since=1.0))
    few_cats = pending(2, first=S, last=S, counts={"0": 1, "1": 5})
    got = deciding.decide(r, state.RuleState(pending=few_cats, snapshot=FP), NOW)
    assert got == skip(decisions.SkipCode.BELOW_THRESHOLD, "class '0': 1/2 new boxes", numbers(2, since=1.0))
    enough = pending(2, first=S, last=S, counts={"0": 2, "1": 5})
    assert isinstance(deciding.decide(r, state.RuleState(pending=enough, snapshot=FP), NOW), decisions.Launch)


SCHEDULE = "  - schedule: {cron: '0 3 * * *', timezone: Europe/Berlin, misfire_grace: 5m, only_if_new_data: true}"
#: What a waiting schedule rule adds to its reason: 03:00 in Berlin (CET) is 02:00 UTC, the next day.
NEXT_SLOT = "; next schedule slot 2026-11-24 02:00 UTC ('0 3 * * *' Europe/Berlin)"
NEXT_SLOT_AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)


def tick(minutes_ago: float, index: int = 0) -> state.Tick:
    return state.Tick(id=f"tick-{index}", trigger_index=index, slot=NOW - timedelta(minutes=minutes_ago))


@pytest.mark.parametrize(
    ("ticks", "labels", "expected"),
    [
        # Exactly at the grace: still run. A second past it: skipped as missed.
        ((tick(5),), 1, "launch"),
        (
            (tick(5 + 1 / 60),),
            1,
            skip(
                decisions.SkipCode.SLOT_SKIPPED,
                "schedule slot 2026-11-23 11:54 UTC missed by 5m1s (grace 5m)" + NEXT_SLOT,
                numbers(1, since=1.0),
                at=NEXT_SLOT_AT,
                acks=("tick-0",),
            ),
        ),
        (
            (tick(1),),
            0,
            skip(
                decisions.SkipCode.SLOT_SKIPPED,
                "schedule slot 2026-11-23 11:59 UTC skipped: only_if_new_data and no new labels" + NEXT_SLOT,
                numbers(),
                at=NEXT_SLOT_AT,
                acks=("tick-0",),
            ),
        ),
        (
            (tick(1, index=3),),
            1,
            skip(
                decisions.SkipCode.SLOT_SKIPPED,
                "schedule slot 2026-11-23 11:59 UTC: the trigger no longer exists" + NEXT_SLOT,
                numbers(1, since=1.0),
                at=NEXT_SLOT_AT,
                acks=("tick-3",),
            ),
        ),
    ],
)
def test_schedule_slots(ticks: tuple[state.Tick, ...], labels: int, expected: object) -> None:
    r = rule(SCHEDULE)
    data = pending(labels, first=S, last=S) if labels else pending(0)
    got = deciding.decide(r, state.RuleState(pending=data, ticks=ticks, snapshot=FP), NOW)
    if expected == "launch":
        slot = ticks[0].slot
        key = snapshots.schedule_run_key("pets", slot)
        assert got == decisions.Launch(
            rule="pets",
            run_key=key,
            trigger=decisions.TriggerKind.SCHEDULE,
            reason="schedule '0 3 * * *' (Europe/Berlin) slot 2026-11-23 11:55 UTC",
            snapshot=FP,
            params=deciding.launch_params(r)
            | {"trigger": decisions.TriggerKind.SCHEDULE, "run_key": key, "snapshot": FP},
            numbers=numbers(1, since=1.0),
            acknowledges=("tick-0",),
        )
    else:
        assert got == expected


DRIFT = (
    "  - class_drift: {statistic: psi, threshold: 0.2, min_labels: 4}\n"
    "  - metric_drift: {metric: live_map, drop_from_champion: 0.05}"
)


def observation(kind: str, value: float, index: int, detail: str = "") -> state.Observation:
    return state.Observation(id=f"obs-{kind}", kind=kind, trigger_index=index, value=value, at=NOW, detail=detail)


@pytest.mark.parametrize(
    ("obs", "labels", "expected"),
    [
        (
            observation("class_drift", 0.9, 0),
            3,
            skip(
                decisions.SkipCode.BELOW_THRESHOLD,
                "class drift: 3/4 new labels before the mix is trusted",
                numbers(3, since=1.0),
            ),
        ),
        (
            observation("class_drift", 0.19, 0),
            4,
            skip(decisions.SkipCode.DRIFT_BELOW_THRESHOLD, "class drift: psi 0.190 < 0.2", numbers(4, since=1.0)),
        ),
        (
            observation("metric_drift", 0.049, 1, "live 0.5"),
            0,
            skip(
                decisions.SkipCode.DRIFT_BELOW_THRESHOLD,
                "metric drift: live_map drop 0.049 < 0.05",
                numbers(),
                acks=("obs-metric_drift",),
            ),
        ),
        (
            observation("metric_drift", 0.3, 7),
            0,
            skip(
                decisions.SkipCode.SLOT_SKIPPED,
                "metric_drift observation for a trigger that no longer exists",
                numbers(),
                acks=("obs-metric_drift",),
            ),
        ),
        (
            observation("class_drift", 0.3, 1),
            0,  # pointing at the metric trigger: not a class drift trigger
            skip(
                decisions.SkipCode.SLOT_SKIPPED,
                "class_drift observation for a trigger that no longer exists",
                numbers(),
                acks=("obs-class_drift",),
            ),
        ),
    ],
)
def test_drift_waits(obs: state.Observation, labels: int, expected: decisions.Skip) -> None:
    data = pending(labels, first=S, last=S) if labels else pending(0)
    got = deciding.decide(rule(DRIFT), state.RuleState(pending=data, observations=(obs,), snapshot=FP), NOW)
    assert got == expected


def test_drift_fires_exactly_at_its_threshold() -> None:
    r = rule(DRIFT)
    data = pending(4, first=S, last=S)
    got = deciding.decide(
        r, state.RuleState(pending=data, observations=(observation("class_drift", 0.2, 0),), snapshot=FP), NOW
    )
    key = snapshots.data_run_key("pets", FP)
    assert got == decisions.Launch(
        rule="pets",
        run_key=key,
        trigger=decisions.TriggerKind.CLASS_DRIFT,
        reason="class drift: psi 0.200 >= 0.2 over 4 new labels",
        snapshot=FP,
        params=deciding.launch_params(r)
        | {"trigger": decisions.TriggerKind.CLASS_DRIFT, "run_key": key, "snapshot": FP},
        numbers=numbers(4, since=1.0),
        acknowledges=("obs-class_drift",),
    )
    metric = observation("metric_drift", 0.05, 1, "live 0.40")
    got = deciding.decide(r, state.RuleState(observations=(metric,), snapshot=FP), NOW)
    key = snapshots.observation_run_key("pets", "obs-metric_drift")
    assert got == decisions.Launch(
        rule="pets",
        run_key=key,
        trigger=decisions.TriggerKind.METRIC_DRIFT,
        reason="metric drift: live_map is 0.050 below the champion's validation value (fires at 0.05); live 0.40",
        snapshot=FP,
        params=deciding.launch_params(r)
        | {"trigger": decisions.TriggerKind.METRIC_DRIFT, "run_key": key, "snapshot": FP},
        numbers=numbers(),
        acknowledges=("obs-metric_drift",),
    )
    plain = deciding.decide(r, state.RuleState(observations=(observation("metric_drift", 0.5, 1),), snapshot=FP), NOW)
    assert isinstance(plain, decisions.Launch) and plain.reason.endswith("(fires at 0.05)")


LIMITS = "limits: {cooldown: 1h, max_concurrent_runs: 2, max_runs_per_day: 2}"
QUICK = "  - new_labels: {min_new_labels: 1, quiet_period: 0s}"


def test_limits() -> None:
    r = rule(QUICK, extra=LIMITS)
    data = pending(1, first=S, last=S)
    fired = "1 new labels (need 1), quiet for 1s (quiet period 0s)"
    busy = state.RuleState(pending=data, snapshot=FP, active_runs=(ids.RunKey("a"), ids.RunKey("b")))
    assert deciding.decide(r, busy, NOW) == skip(
        decisions.SkipCode.CONCURRENCY,
        f"2 run already active (a, b); follow-up queued: {fired}",
        numbers(1, since=1.0, active=2),
    )
    one = state.RuleState(pending=data, snapshot=FP, active_runs=(ids.RunKey("a"),))
    assert isinstance(deciding.decide(r, one, NOW), decisions.Launch)  # below max_concurrent_runs
    cooling = state.RuleState(
        pending=data, snapshot=FP, last_launch_at=NOW - 3599 * S, launches_last_day=(NOW - 3599 * S,)
    )
    assert deciding.decide(r, cooling, NOW) == skip(
        decisions.SkipCode.COOLDOWN,
        f"cooldown until 2026-11-23 12:00 UTC (1h after the last launch): {fired}",
        numbers(1, since=1.0, launches=1),
        at=NOW + S,
    )
    cooled = state.RuleState(
        pending=data, snapshot=FP, last_launch_at=NOW - 3600 * S, launches_last_day=(NOW - 3600 * S,)
    )
    assert isinstance(deciding.decide(r, cooled, NOW), decisions.Launch)  # exactly the cooldown: allowed
    day = (NOW - timedelta(hours=23, minutes=59), NOW - timedelta(hours=2))
    capped = state.RuleState(pending=data, snapshot=FP, last_launch_at=NOW - 7200 * S, launches_last_day=day)
    assert deciding.decide(r, capped, NOW) == skip(
        decisions.SkipCode.DAILY_LIMIT,
        f"daily limit: 2/2 launches in the last 24 h; next at 2026-11-23 12:01 UTC: {fired}",
        numbers(1, since=1.0, launches=2),
        at=day[0] + timedelta(days=1),
    )
    old = (NOW - timedelta(days=1), NOW - timedelta(hours=2))  # one of them exactly a day ago: out of the window
    freed = state.RuleState(pending=data, snapshot=FP, last_launch_at=NOW - 7200 * S, launches_last_day=old)
    assert isinstance(deciding.decide(r, freed, NOW), decisions.Launch)


def test_manual_requests_skip_the_cooldown_but_not_the_snapshot_check() -> None:
    r = rule(QUICK, extra=LIMITS)
    request = state.ManualRequest(id="m1", reason="new camera", actor="ops", at=NOW)
    st = state.RuleState(manual=(request,), snapshot=FP, snapshot_items=3, last_launch_at=NOW - S)
    got = deciding.decide(r, st, NOW)
    key = snapshots.data_run_key("pets", FP)
    assert got == decisions.Launch(
        rule="pets",
        run_key=key,
        trigger=decisions.TriggerKind.MANUAL,
        reason="manual trigger by ops: new camera",
        snapshot=FP,
        params=deciding.launch_params(r) | {"trigger": decisions.TriggerKind.MANUAL, "run_key": key, "snapshot": FP},
        numbers=numbers(items=3),
        acknowledges=("m1",),
    )
    ran = state.RuleState(manual=(request,), snapshot=FP, snapshot_run=(key, runs.RunState.SUCCEEDED))
    assert deciding.decide(r, ran, NOW) == skip(
        decisions.SkipCode.ALREADY_RAN,
        f"snapshot {FP[:12]} already trained by run {key} (succeeded): manual trigger by ops: new camera",
        numbers(),
        acks=("m1",),
    )
    empty = state.RuleState(manual=(request,))
    assert deciding.decide(r, empty, NOW) == skip(
        decisions.SkipCode.EMPTY_DATASET, "dataset is empty: manual trigger by ops: new camera", numbers()
    )


def test_one_launch_answers_every_trigger_that_trains_on_the_same_data() -> None:
    r = rule(f"{QUICK}\n  - class_drift: {{statistic: psi, threshold: 0.1, min_labels: 1}}")
    request = state.ManualRequest(id="m1", reason="why", actor="ops", at=NOW)
    st = state.RuleState(
        pending=pending(1, first=S, last=S),
        snapshot=FP,
        manual=(request,),
        observations=(observation("class_drift", 0.5, 1),),
    )
    got = deciding.decide(r, st, NOW)
    assert isinstance(got, decisions.Launch)
    assert got.trigger is decisions.TriggerKind.MANUAL  # requests first
    assert got.acknowledges == ("m1", "obs-class_drift")


def test_no_trigger_due() -> None:
    got = deciding.decide(rule(SCHEDULE), state.RuleState(), NOW)
    assert got == skip(decisions.SkipCode.NOT_DUE, "no trigger is due" + NEXT_SLOT, numbers(), at=NEXT_SLOT_AT)


def test_the_waiting_reason_that_can_change_soonest_is_shown() -> None:
    r = rule(f"{NEW_LABELS}\n  - class_drift: {{statistic: psi, threshold: 0.9, min_labels: 1}}")
    st = state.RuleState(
        pending=pending(3, images=2, first=60 * S, last=S),
        snapshot=FP,
        observations=(observation("class_drift", 0.1, 1),),
    )
    got = deciding.decide(r, st, NOW)
    assert isinstance(got, decisions.Skip)
    assert got.code is decisions.SkipCode.QUIET_PERIOD  # it has a time; the drift wait has none


def test_launch_params_carry_the_rule() -> None:
    r = rule(QUICK, classes=", classes: [cat]")
    params = deciding.launch_params(r)
    assert params == {
        "rule": "pets",
        "dataset": r.dataset.model_dump(mode="json") | {"name": "pets"},
        "model": r.model.model_dump(mode="json"),
        "training": r.training.model_dump(mode="json"),
        "promotion": r.promotion.model_dump(mode="json"),
    }
    assert params["dataset"]["classes"] == ["cat"]


MISSED = state.Tick(id="tick-1", trigger_index=1, slot=NOW - timedelta(hours=1))  # past its 5m grace: answered


@pytest.mark.parametrize(
    ("st", "code"),
    [
        (state.RuleState(ticks=(MISSED,), snapshot=FP, dataset_problem="not watched"), "dataset_unavailable"),
        (state.RuleState(ticks=(MISSED,), snapshot=FP), "slot_skipped"),
        (
            state.RuleState(
                ticks=(MISSED,), pending=pending(1, first=S, last=S), snapshot=FP, active_runs=(ids.RunKey("a"),)
            ),
            "concurrency",
        ),
        (state.RuleState(ticks=(MISSED,), pending=pending(1, first=S, last=S)), "empty_dataset"),
        (
            state.RuleState(
                ticks=(MISSED,),
                pending=pending(1, first=S, last=S),
                snapshot=FP,
                snapshot_run=(ids.RunKey("pets-old"), runs.RunState.FAILED),
            ),
            "already_ran",
        ),
    ],
)
def test_a_missed_slot_is_answered_whatever_else_stops_the_rule(st: state.RuleState, code: str) -> None:
    r = rule(f"{QUICK}\n{SCHEDULE}", extra="limits: {max_concurrent_runs: 1}")
    got = deciding.decide(r, st, NOW)
    assert isinstance(got, decisions.Skip)
    assert got.code == code
    assert "tick-1" in got.acknowledges


def test_a_tick_or_observation_of_a_trigger_one_past_the_end_is_answered_not_a_crash() -> None:
    r = rule(QUICK)  # one trigger: index 1 is one past the end
    gone = state.Tick(id="tick-9", trigger_index=1, slot=NOW - S)
    got = deciding.decide(r, state.RuleState(ticks=(gone,), snapshot=FP), NOW)
    assert isinstance(got, decisions.Skip) and got.acknowledges == ("tick-9",)
    assert got.reason == "schedule slot 2026-11-23 11:59 UTC: the trigger no longer exists"
    stale = observation("class_drift", 0.9, 1)
    got = deciding.decide(r, state.RuleState(observations=(stale,), snapshot=FP), NOW)
    assert isinstance(got, decisions.Skip) and got.acknowledges == ("obs-class_drift",)


def test_a_label_stamped_in_the_future_is_0s_ago_and_waited_for() -> None:
    r = rule(QUICK)
    future = state.PendingData(labels=1, first_at=NOW + 5 * S, last_at=NOW + 5 * S)
    got = deciding.decide(r, state.RuleState(pending=future, snapshot=FP), NOW)
    assert isinstance(got, decisions.Skip) and got.next_check_at == NOW + 5 * S
    assert got.reason == (
        "waiting for quiet period: last label 0s ago, need 0s "
        "(1 new labels (need 1); max_wait ends 2026-11-23 18:00 UTC)"
    )


def test_a_class_with_no_new_boxes_counts_zero() -> None:
    r = rule(
        "  - new_labels: {min_new_labels: 1, min_per_class: {dog: 5}, quiet_period: 0s}",
        classes=", classes: [cat, dog]",
    )
    only_cats = pending(2, first=S, last=S, counts={"0": 9})
    got = deciding.decide(r, state.RuleState(pending=only_cats, snapshot=FP), NOW)
    assert isinstance(got, decisions.Skip) and got.reason == "class 'dog': 0/5 new boxes"


def test_seconds_since_the_last_label_are_kept_to_the_millisecond() -> None:
    data = state.PendingData(
        labels=1, first_at=NOW - timedelta(seconds=1.234567), last_at=NOW - timedelta(seconds=1.234567)
    )
    got = deciding.decide(rule(NEW_LABELS), state.RuleState(pending=data, snapshot=FP), NOW)
    assert got.numbers["seconds_since_last_label"] == 1.235


@pytest.fixture
def local_zone_not_utc(monkeypatch: pytest.MonkeyPatch) -> object:
    """The process's local zone is Tokyo: a time shown or keyed 'in UTC' must not follow it."""
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("local_zone_not_utc")
def test_times_in_reasons_and_run_keys_are_utc_whatever_the_local_zone() -> None:
    r = rule(QUICK, extra=LIMITS)
    cooling = state.RuleState(
        pending=pending(1, first=S, last=S), snapshot=FP, last_launch_at=NOW - S, launches_last_day=(NOW - S,)
    )
    got = deciding.decide(r, cooling, NOW)
    assert got.reason.startswith("cooldown until 2026-11-23 12:59 UTC")
    assert snapshots.schedule_run_key("pets", NOW) == "pets-s202611231200"


def test_a_paused_rule_says_who_paused_it_with_every_number() -> None:
    r = rule(NEW_LABELS)
    paused = state.Pause(actor="ana", reason="relabelling", at=NOW - 60 * S)
    st = state.RuleState(pending=pending(5, images=5, first=2 * S, last=S), paused=paused)
    got = deciding.decide(r, st, NOW)
    assert got == skip(
        decisions.SkipCode.PAUSED,
        "paused by ana at 2026-11-23 11:59 UTC: relabelling (retrain resume pets)",
        numbers(5, 5, since=1.0),
    )


TWO_SCHEDULES = (
    "  - schedule: {cron: '0 5 * * *', timezone: UTC}\n"
    "  - schedule: {cron: '0 4 * * *', timezone: UTC}\n"
    "  - schedule: {cron: '0 4 * * *', timezone: Europe/London}"
)


def test_the_next_slot_of_several_schedules_is_the_earliest_and_a_tie_names_the_first() -> None:
    r = rule(TWO_SCHEDULES)
    found = deciding.next_slot(r, NOW)
    assert found is not None
    slot, spec = found
    # 04:00 UTC and 04:00 in London (GMT in November) are the same instant: the first listed is named.
    assert (slot, spec.cron, spec.timezone) == (datetime(2026, 11, 24, 4, 0, tzinfo=UTC), "0 4 * * *", "UTC")
    assert deciding.next_slot(rule("  - schedule: {cron: '0 0 31 2 *'}"), NOW) is None  # never fires


def test_a_schedule_slot_at_the_same_moment_as_the_next_check_adds_nothing() -> None:
    # The quiet period ends at 12:10, exactly the schedule's next slot: the wait says nothing of the slot
    # (it is looked at then anyway); a slot one minute later than the check is not mentioned either, one earlier is.
    def at_minute(minute: int) -> rules.Rule:
        return rule(NEW_LABELS + f"\n  - schedule: {{cron: '{minute} 12 * * *', timezone: UTC}}")

    data = pending(3, images=2, first=60 * S, last=0 * S)
    at_check = deciding.decide(at_minute(10), state.RuleState(pending=data), NOW)
    later = deciding.decide(at_minute(11), state.RuleState(pending=data), NOW)
    earlier = deciding.decide(at_minute(9), state.RuleState(pending=data), NOW)
    for got in (at_check, later):
        assert isinstance(got, decisions.Skip)
        assert got.next_check_at == NOW + 600 * S and "next schedule slot" not in got.reason, got.reason
    assert isinstance(earlier, decisions.Skip) and earlier.next_check_at == NOW + 540 * S
    assert earlier.reason.endswith("; next schedule slot 2026-11-23 12:09 UTC ('9 12 * * *' UTC)"), earlier.reason
