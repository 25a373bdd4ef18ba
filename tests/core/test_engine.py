"""The pure engine: table-driven decisions with specific reasons, and properties that must always hold."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.engine import deciding, snapshots
from daemon.model import decisions, events, ids, rules, runs, state
from tests.support.budget import examples
from tests.support.sim import T0, Simulation, label, make_rule

FP = "ab" * 32
S = timedelta(seconds=1)
M = timedelta(minutes=1)


def pending(
    labels: int, *, last_ago: timedelta = timedelta(hours=1), first_ago: timedelta | None = None
) -> state.PendingData:
    first = first_ago if first_ago is not None else last_ago
    return state.PendingData(labels=labels, images=labels, first_at=T0 - first, last_at=T0 - last_ago)


CASES = [
    # (name, rule kwargs, state, expected outcome, reason fragment)
    ("nothing pending", {}, state.RuleState(snapshot=FP, snapshot_items=4), "skip", "no new or changed labels"),
    (
        "below threshold",
        {"min_new_labels": 200},
        state.RuleState(pending=pending(184), snapshot=FP),
        "skip",
        "184/200 new labels",
    ),
    (
        "quiet period running",
        {"quiet_period": "10m"},
        state.RuleState(pending=pending(5, last_ago=42 * S), snapshot=FP),
        "skip",
        "waiting for quiet period: last label 42s ago, need 10m",
    ),
    (
        "quiet period over",
        {"quiet_period": "10m"},
        state.RuleState(pending=pending(5, last_ago=11 * M), snapshot=FP),
        "launch",
        "5 new labels (need 1), quiet for 11m",
    ),
    (
        "max wait reached",
        {"quiet_period": "10m", "max_wait": "1h"},
        state.RuleState(pending=pending(5, last_ago=5 * S, first_ago=61 * M), snapshot=FP),
        "launch",
        "still arriving but max_wait 1h reached",
    ),
    (
        "cooldown",
        {"cooldown": "1h"},
        state.RuleState(pending=pending(5), snapshot=FP, last_launch_at=T0 - 20 * M),
        "skip",
        "cooldown until 2026-11-23 12:40 UTC",
    ),
    (
        "concurrency",
        {},
        state.RuleState(pending=pending(5), snapshot=FP, active_runs=(ids.RunKey("pets-dold"),)),
        "skip",
        "1 run already active (pets-dold); follow-up queued",
    ),
    (
        "daily limit",
        {"max_runs_per_day": 2, "cooldown": "0s"},
        state.RuleState(pending=pending(5), snapshot=FP, launches_last_day=(T0 - 5 * M, T0 - 3 * M)),
        "skip",
        "daily limit: 2/2 launches in the last 24 h",
    ),
    (
        "already ran",
        {},
        state.RuleState(
            pending=pending(5), snapshot=FP, snapshot_run=(snapshots.data_run_key("pets", FP), runs.RunState.SUCCEEDED)
        ),
        "skip",
        "already trained by run pets-dabab",
    ),
    ("empty dataset", {}, state.RuleState(pending=pending(5), snapshot=None), "skip", "dataset is empty"),
    (
        "manual ignores cooldown",
        {},
        state.RuleState(
            snapshot=FP,
            last_launch_at=T0 - 1 * M,
            manual=(state.ManualRequest(id="m1", reason="hotfix", actor="ana", at=T0),),
        ),
        "launch",
        "manual trigger by ana: hotfix",
    ),
]


@pytest.mark.parametrize(("name", "kwargs", "st_", "outcome", "reason"), CASES, ids=[c[0] for c in CASES])
def test_decision_table(name: str, kwargs: dict[str, object], st_: state.RuleState, outcome: str, reason: str) -> None:
    decision = deciding.decide(make_rule(**kwargs), st_, T0)  # type: ignore[arg-type]
    assert decision.outcome == outcome
    assert reason in decision.reason


def test_launch_carries_deterministic_key_params_and_numbers() -> None:
    decision = deciding.decide(make_rule(), state.RuleState(pending=pending(3), snapshot=FP, snapshot_items=6), T0)
    assert isinstance(decision, decisions.Launch)
    assert decision.run_key == f"pets-d{FP[:16]}"
    assert decision.params["training"]["epochs"] == 100
    assert decision.params["dataset"]["name"] == "pets"
    assert decision.numbers["pending_labels"] == 3


def test_quiet_period_skip_says_when_to_look_again() -> None:
    decision = deciding.decide(make_rule(), state.RuleState(pending=pending(5, last_ago=42 * S), snapshot=FP), T0)
    assert isinstance(decision, decisions.Skip)
    assert decision.code is decisions.SkipCode.QUIET_PERIOD
    assert decision.next_check_at == T0 - 42 * S + 10 * M


SCHEDULE = '  - schedule: {cron: "0 3 * * 0", timezone: UTC, only_if_new_data: true, misfire_grace: 10m}\n'


def test_schedule_slot_launches_with_slot_key() -> None:
    rule = make_rule(min_new_labels=1000, extra_triggers=SCHEDULE)
    slot = T0 - 2 * M
    tick = state.Tick(id="t1", trigger_index=1, slot=slot)
    decision = deciding.decide(rule, state.RuleState(pending=pending(3), snapshot=FP, ticks=(tick,)), T0)
    assert isinstance(decision, decisions.Launch)
    assert decision.run_key == snapshots.schedule_run_key("pets", slot)
    assert decision.acknowledges == ("t1",)


@pytest.mark.parametrize(
    ("labels", "slot_ago", "reason"),
    [(0, 2 * M, "only_if_new_data and no new labels"), (3, 11 * M, "missed by 11m (grace 10m)")],
)
def test_schedule_slot_skipped_is_answered(labels: int, slot_ago: timedelta, reason: str) -> None:
    rule = make_rule(min_new_labels=1000, extra_triggers=SCHEDULE)
    tick = state.Tick(id="t1", trigger_index=1, slot=T0 - slot_ago)
    decision = deciding.decide(rule, state.RuleState(pending=pending(labels), snapshot=FP, ticks=(tick,)), T0)
    assert isinstance(decision, decisions.Skip)
    assert reason in decision.reason
    assert decision.acknowledges == ("t1",)


def test_a_paused_rule_decides_nothing_and_says_who_paused_it() -> None:
    tick = state.Tick(id="t1", trigger_index=1, slot=T0 - 2 * M)
    request = state.ManualRequest(id="m1", reason="now", actor="ops", at=T0 - M)
    busy = state.RuleState(pending=pending(2000), snapshot=FP, ticks=(tick,), manual=(request,))
    rule = make_rule(extra_triggers=SCHEDULE)
    assert isinstance(deciding.decide(rule, busy, T0), decisions.Launch)
    pause = state.Pause(actor="alice", reason="camera swap", at=T0 - 10 * M)
    paused = deciding.decide(rule, dataclasses.replace(busy, paused=pause), T0)
    assert isinstance(paused, decisions.Skip) and paused.code is decisions.SkipCode.PAUSED
    assert paused.reason == "paused by alice at 2026-11-23 11:50 UTC: camera swap (retrain resume pets)"
    assert paused.acknowledges == ()  # the slot and the request wait for the resume


def test_a_rule_waiting_says_when_its_schedule_fires_next() -> None:
    """Before: a schedule rule's skip had ``next_check_at: null`` and no word of the next slot."""
    rule = make_rule(min_new_labels=1000, extra_triggers=SCHEDULE)  # Sundays 03:00 UTC; T0 is a Monday
    waiting = deciding.decide(rule, state.RuleState(pending=pending(184), snapshot=FP), T0)
    assert isinstance(waiting, decisions.Skip)
    assert waiting.next_check_at == datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    assert waiting.reason == "184/1000 new labels; next schedule slot 2026-11-29 03:00 UTC ('0 3 * * 0' UTC)"
    # A wait that ends sooner keeps its own time.
    quiet = deciding.decide(rule, state.RuleState(pending=pending(1000, last_ago=42 * S), snapshot=FP), T0)
    assert isinstance(quiet, decisions.Skip) and quiet.next_check_at == T0 - 42 * S + 10 * M
    assert "next schedule slot" not in quiet.reason
    only = rules.Rule.model_validate(
        {
            "name": "nightly",
            "dataset": {"source": "file:///data/x"},
            "model": {"registered_name": "x", "base": "yolov8n.yaml"},
            "triggers": [{"schedule": {"cron": "30 2 * * *", "timezone": "America/New_York"}}],
        }
    )
    idle = deciding.decide(only, state.RuleState(snapshot=FP), T0)
    assert isinstance(idle, decisions.Skip) and idle.code is decisions.SkipCode.NOT_DUE
    assert idle.next_check_at == datetime(2026, 11, 24, 7, 30, tzinfo=UTC)  # 02:30 in New York (EST)
    assert idle.reason == "no trigger is due; next schedule slot 2026-11-24 07:30 UTC ('30 2 * * *' America/New_York)"
    never = rules.Rule.model_validate(
        {**only.model_dump(mode="json", exclude_none=True), "triggers": [{"schedule": {"cron": "0 0 31 2 *"}}]}
    )
    silent = deciding.decide(never, state.RuleState(snapshot=FP), T0)
    assert silent.reason == "no trigger is due" and silent.next_check_at is None  # type: ignore[union-attr]


def test_class_drift_fires_over_threshold_only_with_enough_labels() -> None:
    rule = make_rule(
        min_new_labels=1000,
        extra_triggers="  - class_drift: {statistic: jensen_shannon, threshold: 0.15, min_labels: 10}\n",
    )
    obs = state.Observation(id="o1", kind="class_drift", trigger_index=1, value=0.21, at=T0)
    fired = deciding.decide(rule, state.RuleState(pending=pending(12), snapshot=FP, observations=(obs,)), T0)
    assert isinstance(fired, decisions.Launch)
    assert "class drift: jensen_shannon 0.210 >= 0.15 over 12 new labels" in fired.reason
    few = deciding.decide(rule, state.RuleState(pending=pending(4), snapshot=FP, observations=(obs,)), T0)
    assert few.outcome == "skip"


def test_metric_drift_fires_on_drop() -> None:
    rule = make_rule(
        min_new_labels=1000, extra_triggers="  - metric_drift: {metric: live_map, drop_from_champion: 0.05}\n"
    )
    obs = state.Observation(id="o" * 20, kind="metric_drift", trigger_index=1, value=0.08, at=T0)
    decision = deciding.decide(rule, state.RuleState(snapshot=FP, observations=(obs,)), T0)
    assert isinstance(decision, decisions.Launch)
    assert decision.run_key == snapshots.observation_run_key("pets", "o" * 20)


def test_disabled_rule_never_launches() -> None:
    rule = make_rule().model_copy(update={"enabled": False})
    assert deciding.decide(rule, state.RuleState(pending=pending(50), snapshot=FP), T0).outcome == "skip"


# --- properties ------------------------------------------------------------------------------------------

manifests = st.lists(
    st.tuples(st.text("abcxyz/._ ", min_size=1, max_size=12), st.text("0123456789abcdef", min_size=1, max_size=8)),
    min_size=1,
    max_size=30,
    unique_by=lambda kv: kv[0],
)


@given(manifest=manifests, data=st.data())
def test_same_snapshot_same_run_key_whatever_the_order_or_timing(
    manifest: list[tuple[str, str]], data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(manifest))
    fp1, fp2 = snapshots.fingerprint(manifest), snapshots.fingerprint(shuffled)
    assert fp1 == fp2 and fp1 is not None
    rule = make_rule(quiet_period="0s")
    quiet = data.draw(st.integers(min_value=0, max_value=10_000))
    count = data.draw(st.integers(min_value=1, max_value=500))
    a = deciding.decide(rule, state.RuleState(pending=pending(count, last_ago=quiet * S), snapshot=fp1), T0)
    b = deciding.decide(rule, state.RuleState(pending=pending(1), snapshot=fp2), T0 + 3 * M)
    assert isinstance(a, decisions.Launch) and isinstance(b, decisions.Launch)
    assert a.run_key == b.run_key


@given(
    labels=st.integers(min_value=0, max_value=1000),
    active=st.integers(min_value=0, max_value=5),
    max_concurrent=st.integers(min_value=1, max_value=3),
    since_launch_s=st.integers(min_value=0, max_value=10_000),
    cooldown_s=st.integers(min_value=0, max_value=10_000),
    quiet_ago_s=st.integers(min_value=0, max_value=10_000),
)
def test_no_launch_during_cooldown_or_at_concurrency_limit(
    labels: int, active: int, max_concurrent: int, since_launch_s: int, cooldown_s: int, quiet_ago_s: int
) -> None:
    rule = make_rule(cooldown=f"{cooldown_s}s", max_concurrent_runs=max_concurrent, quiet_period="0s")
    st_ = state.RuleState(
        pending=pending(labels, last_ago=quiet_ago_s * S),
        snapshot=FP,
        active_runs=tuple(ids.RunKey(f"r{i}") for i in range(active)),
        last_launch_at=T0 - since_launch_s * S,
    )
    decision = deciding.decide(rule, st_, T0)
    if isinstance(decision, decisions.Launch):
        assert active < max_concurrent
        assert since_launch_s >= cooldown_s
        assert labels >= 1


@settings(max_examples=examples(40), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    offsets=st.lists(st.integers(min_value=0, max_value=599), min_size=1, max_size=40),
    step_s=st.integers(min_value=5, max_value=120),
)
def test_a_burst_inside_the_quiet_period_gives_one_launch(offsets: list[int], step_s: int) -> None:
    """K files arriving within 10 minutes, decided every few seconds for two hours: exactly one launch."""
    sim = Simulation(rule=make_rule(quiet_period="10m", cooldown="0s"))
    arrivals = sorted(offsets)
    elapsed = 0
    index = 0
    while elapsed <= 7200:
        while index < len(arrivals) and arrivals[index] <= elapsed:
            sim.drop([label(f"img{index}", at=sim.now)])
            index += 1
        sim.step()
        sim.advance(step_s * S)
        elapsed += step_s
    assert len(sim.launches) == 1


@settings(max_examples=examples(30), deadline=None)
@given(replays=st.integers(min_value=1, max_value=8), n=st.integers(min_value=1, max_value=20))
def test_replaying_events_changes_nothing(replays: int, n: int) -> None:
    sim = Simulation(rule=make_rule(quiet_period="0s"))
    batch = [label(f"img{i}", f"e{i}") for i in range(n)]
    sim.drop(batch)
    before = sim.journal.rule_state(sim.rule, now=sim.now)
    count = sim.journal.event_count()
    for _ in range(replays):
        result = sim.journal.append_events(batch, received_at=sim.now + 5 * M)
        assert (result.new, result.duplicates) == (0, n)
    assert sim.journal.rule_state(sim.rule, now=sim.now) == before
    assert sim.journal.event_count() == count == n
    first = sim.step()
    sim.drop(batch)
    sim.advance(2 * M)
    second = sim.step()
    assert first.outcome == "launch"
    assert second.outcome == "skip"
    assert len(sim.launches) == 1


def test_data_during_a_run_gives_exactly_one_follow_up() -> None:
    sim = Simulation(rule=make_rule(quiet_period="1m", cooldown="0s"))
    sim.drop([label("a"), label("b")])
    sim.advance(2 * M)
    assert sim.step().outcome == "launch"
    first = sim.launches[0].run_key
    for i in range(30):  # labels keep arriving while the run trains
        sim.advance(20 * S)
        sim.drop([label(f"late{i}", at=sim.now)])
        decision = sim.step()
        assert decision.outcome == "skip"
    sim.advance(5 * M)
    assert "follow-up queued" in sim.step().reason
    sim.finish(first)
    follow_up = sim.step()
    assert isinstance(follow_up, decisions.Launch)
    assert "30 new labels" in follow_up.reason
    sim.finish(follow_up.run_key)
    for _ in range(10):
        sim.advance(5 * M)
        sim.step()
    assert len(sim.launches) == 2


def test_delete_and_reupload_of_identical_bytes_is_new_data() -> None:
    sim = Simulation(rule=make_rule(quiet_period="0s", cooldown="0s"))
    sim.drop([label("a", "v1")])
    assert sim.step().outcome == "launch"
    sim.finish(sim.launches[-1].run_key)
    sim.drop([label("a", kind=events.ChangeKind.DELETED)])
    sim.advance(M)
    sim.drop([label("a", "v1")])
    # The same bytes are back: the snapshot equals the trained one, so nothing new to train on.
    decision = sim.step()
    assert decision.outcome == "skip"
    assert sim.journal.event_count() == 3
