"""Deciding: ``decide(rule, state, now) -> Launch | Skip``, a purely computational function.

The order of questions, and why:

1. Is any trigger satisfied? Manual requests, due schedule slots, settled new labels (quiet period passed
   or max wait reached), class drift at or over its threshold, metric drift at or over its drop. Each
   unsatisfied trigger says what it waits for; the first satisfied one (in that order) is the launch.
2. May the rule launch now? Concurrency (data arriving during a run stays pending, and gives exactly one
   follow-up after it), cooldown (manual requests ignore it), the daily limit.
3. Has this exact snapshot already been trained by this rule? Same data, same key: skip.

Nothing here reads the clock or the journal: ``now`` and the state are passed in, so every decision can be
replayed and explained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from daemon.engine import snapshots
from daemon.model import crontab, decisions, durations, ids, rules, state, triggers


@dataclass(frozen=True, kw_only=True)
class _Fire:
    trigger: decisions.TriggerKind
    reason: str
    run_key: ids.RunKey | None  # None: the data key of the current snapshot
    acknowledges: tuple[str, ...] = ()
    manual: bool = False


@dataclass(frozen=True, kw_only=True)
class _Wait:
    code: decisions.SkipCode
    reason: str
    next_check_at: datetime | None = None
    acknowledges: tuple[str, ...] = ()
    numbers: dict[str, Any] = field(default_factory=dict)


def _ago(now: datetime, then: datetime) -> str:
    return durations.format(now - then) if now > then else "0s"


def _clock(moment: datetime) -> str:
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


def _new_labels(
    rule: rules.Rule, trigger: triggers.NewLabelsTrigger, pending: state.PendingData, now: datetime
) -> _Fire | _Wait:
    if pending.labels == 0:
        return _Wait(code=decisions.SkipCode.NO_NEW_DATA, reason="no new or changed labels")
    if pending.labels < trigger.min_new_labels:
        return _Wait(
            code=decisions.SkipCode.BELOW_THRESHOLD,
            reason=f"{pending.labels}/{trigger.min_new_labels} new labels",
        )
    if trigger.min_new_images is not None and pending.images < trigger.min_new_images:
        return _Wait(
            code=decisions.SkipCode.BELOW_THRESHOLD,
            reason=f"{pending.images}/{trigger.min_new_images} new images",
        )
    for name, minimum in (trigger.min_per_class or {}).items():
        have = pending.class_counts.get(rule.class_id(name), 0)
        if have < minimum:
            return _Wait(
                code=decisions.SkipCode.BELOW_THRESHOLD,
                reason=f"class {name!r}: {have}/{minimum} new boxes",
            )
    counted = f"{pending.labels} new labels (need {trigger.min_new_labels})"
    last = pending.last_at or now
    first = pending.first_at or last
    quiet_for = now - last
    waited = now - first
    if quiet_for >= trigger.quiet_period:
        return _Fire(
            trigger=decisions.TriggerKind.NEW_LABELS,
            reason=f"{counted}, quiet for {_ago(now, last)} (quiet period {durations.format(trigger.quiet_period)})",
            run_key=None,
        )
    if waited >= trigger.max_wait:
        return _Fire(
            trigger=decisions.TriggerKind.NEW_LABELS,
            reason=f"{counted}, still arriving but max_wait {durations.format(trigger.max_wait)} reached",
            run_key=None,
        )
    settles_at = min(last + trigger.quiet_period, first + trigger.max_wait)
    return _Wait(
        code=decisions.SkipCode.QUIET_PERIOD,
        reason=(
            f"waiting for quiet period: last label {_ago(now, last)} ago, need "
            f"{durations.format(trigger.quiet_period)} ({counted}; max_wait ends {_clock(first + trigger.max_wait)})"
        ),
        next_check_at=settles_at,
    )


def _schedule(rule: rules.Rule, tick: state.Tick, pending: state.PendingData, now: datetime) -> _Fire | _Wait:
    spec = rule.triggers[tick.trigger_index].schedule if tick.trigger_index < len(rule.triggers) else None
    slot = _clock(tick.slot)
    if spec is None:
        # The rule was edited and this trigger is gone: answer the tick without a run.
        return _Wait(
            code=decisions.SkipCode.SLOT_SKIPPED,
            reason=f"schedule slot {slot}: the trigger no longer exists",
            acknowledges=(tick.id,),
        )
    if now - tick.slot > spec.misfire_grace:
        return _Wait(
            code=decisions.SkipCode.SLOT_SKIPPED,
            reason=(
                f"schedule slot {slot} missed by {_ago(now, tick.slot)} (grace {durations.format(spec.misfire_grace)})"
            ),
            acknowledges=(tick.id,),
        )
    if spec.only_if_new_data and pending.labels == 0:
        return _Wait(
            code=decisions.SkipCode.SLOT_SKIPPED,
            reason=f"schedule slot {slot} skipped: only_if_new_data and no new labels",
            acknowledges=(tick.id,),
        )
    return _Fire(
        trigger=decisions.TriggerKind.SCHEDULE,
        reason=f"schedule '{spec.cron}' ({spec.timezone}) slot {slot}",
        run_key=snapshots.schedule_run_key(rule.name, tick.slot),
        acknowledges=(tick.id,),
    )


def _drift(rule: rules.Rule, obs: state.Observation, pending: state.PendingData) -> _Fire | _Wait:
    trigger = rule.triggers[obs.trigger_index] if obs.trigger_index < len(rule.triggers) else None
    if trigger is not None and obs.kind == decisions.TriggerKind.CLASS_DRIFT and trigger.class_drift is not None:
        spec = trigger.class_drift
        if pending.labels < spec.min_labels:
            return _Wait(
                code=decisions.SkipCode.BELOW_THRESHOLD,
                reason=f"class drift: {pending.labels}/{spec.min_labels} new labels before the mix is trusted",
            )
        if obs.value >= spec.threshold:
            return _Fire(
                trigger=decisions.TriggerKind.CLASS_DRIFT,
                reason=(
                    f"class drift: {spec.statistic} {obs.value:.3f} >= {spec.threshold:g} "
                    f"over {pending.labels} new labels"
                ),
                run_key=None,
                acknowledges=(obs.id,),
            )
        return _Wait(
            code=decisions.SkipCode.DRIFT_BELOW_THRESHOLD,
            reason=f"class drift: {spec.statistic} {obs.value:.3f} < {spec.threshold:g}",
        )
    if trigger is not None and obs.kind == decisions.TriggerKind.METRIC_DRIFT and trigger.metric_drift is not None:
        metric_spec = trigger.metric_drift
        if obs.value >= metric_spec.drop_from_champion:
            return _Fire(
                trigger=decisions.TriggerKind.METRIC_DRIFT,
                reason=(
                    f"metric drift: {metric_spec.metric} is {obs.value:.3f} below the champion's validation "
                    f"value (fires at {metric_spec.drop_from_champion:g}){f'; {obs.detail}' if obs.detail else ''}"
                ),
                run_key=snapshots.observation_run_key(rule.name, obs.id),
                acknowledges=(obs.id,),
            )
        return _Wait(
            code=decisions.SkipCode.DRIFT_BELOW_THRESHOLD,
            reason=f"metric drift: {metric_spec.metric} drop {obs.value:.3f} < {metric_spec.drop_from_champion:g}",
            acknowledges=(obs.id,),
        )
    return _Wait(
        code=decisions.SkipCode.SLOT_SKIPPED,
        reason=f"{obs.kind} observation for a trigger that no longer exists",
        acknowledges=(obs.id,),
    )


def _evaluate(rule: rules.Rule, st: state.RuleState, now: datetime) -> tuple[list[_Fire], list[_Wait]]:
    waits: list[_Wait] = []
    fires: list[_Fire] = [
        _Fire(
            trigger=decisions.TriggerKind.MANUAL,
            reason=f"manual trigger by {request.actor}: {request.reason}",
            run_key=None,
            acknowledges=(request.id,),
            manual=True,
        )
        for request in st.manual
    ]
    for tick in st.ticks:
        result = _schedule(rule, tick, st.pending, now)
        (fires if isinstance(result, _Fire) else waits).append(result)  # type: ignore[arg-type]
    for trigger in rule.triggers_of(decisions.TriggerKind.NEW_LABELS):
        result = _new_labels(rule, trigger, st.pending, now)
        (fires if isinstance(result, _Fire) else waits).append(result)  # type: ignore[arg-type]
    for obs in st.observations:
        result = _drift(rule, obs, st.pending)
        (fires if isinstance(result, _Fire) else waits).append(result)  # type: ignore[arg-type]
    return fires, waits


def next_slot(rule: rules.Rule, now: datetime) -> tuple[datetime, triggers.ScheduleTrigger] | None:
    """The rule's next schedule slot after ``now`` and its trigger (None: no schedule, or one that never fires)."""
    found: tuple[datetime, triggers.ScheduleTrigger] | None = None
    for spec in rule.triggers_of(decisions.TriggerKind.SCHEDULE):
        slot = crontab.CronExpression.parse(spec.cron).next_after(now, ZoneInfo(spec.timezone))
        if slot is not None and (found is None or slot < found[0]):
            found = (slot, spec)
    return found


def _with_next_slot(rule: rules.Rule, wait: _Wait, now: datetime) -> _Wait:
    """A wait of a rule with a schedule, saying when that schedule fires next if nothing else comes sooner."""
    upcoming = next_slot(rule, now)
    if upcoming is None or (wait.next_check_at is not None and wait.next_check_at <= upcoming[0]):
        return wait
    slot, spec = upcoming
    return dataclasses.replace(
        wait,
        reason=f"{wait.reason}; next schedule slot {_clock(slot)} ('{spec.cron}' {spec.timezone})",
        next_check_at=slot,
    )


def _numbers(st: state.RuleState, now: datetime) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "pending_labels": st.pending.labels,
        "pending_images": st.pending.images,
        "active_runs": len(st.active_runs),
        "launches_last_day": len(st.launches_last_day),
        "snapshot_items": st.snapshot_items,
    }
    if st.pending.last_at is not None:
        numbers["seconds_since_last_label"] = round((now - st.pending.last_at).total_seconds(), 3)
    return numbers


def _skip(rule: rules.Rule, wait: _Wait, numbers: dict[str, Any], acks: tuple[str, ...] = ()) -> decisions.Skip:
    return decisions.Skip(
        rule=rule.name,
        code=wait.code,
        reason=wait.reason,
        numbers={**numbers, **wait.numbers},
        next_check_at=wait.next_check_at,
        acknowledges=tuple(dict.fromkeys((*acks, *wait.acknowledges))),
    )


def _limits(rule: rules.Rule, st: state.RuleState, fire: _Fire, now: datetime) -> _Wait | None:
    limits = rule.limits
    if len(st.active_runs) >= limits.max_concurrent_runs:
        active = ", ".join(st.active_runs)
        return _Wait(
            code=decisions.SkipCode.CONCURRENCY,
            reason=f"{len(st.active_runs)} run already active ({active}); follow-up queued: {fire.reason}",
        )
    if not fire.manual and st.last_launch_at is not None and now < st.last_launch_at + limits.cooldown:
        until = st.last_launch_at + limits.cooldown
        return _Wait(
            code=decisions.SkipCode.COOLDOWN,
            reason=(
                f"cooldown until {_clock(until)} ({durations.format(limits.cooldown)} after the last launch): "
                f"{fire.reason}"
            ),
            next_check_at=until,
        )
    recent = [t for t in st.launches_last_day if now - t < timedelta(days=1)]
    if limits.max_runs_per_day is not None and len(recent) >= limits.max_runs_per_day:
        until = min(recent) + timedelta(days=1)
        return _Wait(
            code=decisions.SkipCode.DAILY_LIMIT,
            reason=(
                f"daily limit: {len(recent)}/{limits.max_runs_per_day} launches in the last 24 h; "
                f"next at {_clock(until)}: {fire.reason}"
            ),
            next_check_at=until,
        )
    return None


def launch_params(rule: rules.Rule) -> dict[str, Any]:
    """What a run of ``rule`` is launched with: dataset, model, training, promotion (plain JSON data)."""
    return {
        "rule": rule.name,
        "dataset": rule.dataset.model_dump(mode="json") | {"name": rule.dataset_name},
        "model": rule.model.model_dump(mode="json"),
        "training": rule.training.model_dump(mode="json"),
        "promotion": rule.promotion.model_dump(mode="json"),
    }


def decide(rule: rules.Rule, st: state.RuleState, now: datetime) -> decisions.Decision:
    """Decide whether ``rule`` launches a run now.

    Args:
        rule: the validated rule.
        st: what the journal knows about the rule's data, runs, ticks, observations and requests.
        now: the current time (aware).

    Returns:
        A :class:`~daemon.model.decisions.Launch` with a deterministic run key, or a
        :class:`~daemon.model.decisions.Skip` whose reason says what the rule waits for.
    """
    numbers = _numbers(st, now)
    if not rule.enabled:
        return decisions.Skip(
            rule=rule.name, code=decisions.SkipCode.DISABLED, reason="rule is disabled", numbers=numbers
        )
    if st.paused is not None:
        paused = st.paused
        return decisions.Skip(
            rule=rule.name,
            code=decisions.SkipCode.PAUSED,
            reason=f"paused by {paused.actor} at {_clock(paused.at)}: {paused.reason} (retrain resume {rule.name})",
            numbers=numbers,
        )
    fires, waits = _evaluate(rule, st, now)
    # Ticks and observations that are answered without a run are consumed whatever else happens.
    answered = tuple(a for w in waits for a in w.acknowledges)
    if st.dataset_problem is not None:
        wanted = f"; waiting to {fires[0].reason}" if fires else ""
        wait = _Wait(
            code=decisions.SkipCode.DATASET_UNAVAILABLE,
            reason=f"dataset {rule.dataset_name} cannot be used now: {st.dataset_problem}{wanted}",
        )
        return _skip(rule, wait, numbers, answered)
    if not fires:
        informative = sorted(waits, key=lambda w: w.next_check_at is None)
        wait = informative[0] if informative else _Wait(code=decisions.SkipCode.NOT_DUE, reason="no trigger is due")
        return _skip(rule, _with_next_slot(rule, wait, now), numbers, answered)
    fire = fires[0]
    if (blocked := _limits(rule, st, fire, now)) is not None:
        return _skip(rule, blocked, numbers, answered)
    if st.snapshot is None:
        wait = _Wait(code=decisions.SkipCode.EMPTY_DATASET, reason=f"dataset is empty: {fire.reason}")
        return _skip(rule, wait, numbers, answered)
    run_key = fire.run_key or snapshots.data_run_key(rule.name, st.snapshot)
    if fire.run_key is None and st.snapshot_run is not None:
        previous, previous_state = st.snapshot_run
        wait = _Wait(
            code=decisions.SkipCode.ALREADY_RAN,
            reason=f"snapshot {st.snapshot[:12]} already trained by run {previous} ({previous_state}): {fire.reason}",
            acknowledges=fire.acknowledges,
        )
        return _skip(rule, wait, numbers, answered)
    # One launch answers every satisfied trigger that would have trained on the same data.
    covered = tuple(a for f in fires if f.run_key is None or f is fire for a in f.acknowledges)
    return decisions.Launch(
        rule=rule.name,
        run_key=run_key,
        trigger=fire.trigger,
        reason=fire.reason,
        snapshot=st.snapshot,
        params=launch_params(rule) | {"trigger": fire.trigger, "run_key": run_key, "snapshot": st.snapshot},
        numbers=numbers,
        acknowledges=tuple(dict.fromkeys((*answered, *covered))),
    )
