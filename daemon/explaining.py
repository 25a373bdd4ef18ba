"""``retrain explain``: what a rule sees now, what it would decide and why, and what it decided before.

Reads the journal and runs the pure engine with the current time; changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

from daemon.engine import deciding
from daemon.journal import base
from daemon.model import decisions, durations, runs
from daemon.rules import loading


def _when(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC ({durations.format(now - moment)} ago)"


def _trigger_line(kind: str, spec: object) -> str:
    fields = spec.model_dump(mode="json", exclude_none=True)  # type: ignore[attr-defined]
    return f"{kind}: " + ", ".join(f"{k}={v}" for k, v in fields.items())


def explain(
    loaded: loading.LoadedRule, journal: base.Journal, *, now: datetime, history: int = 10, journal_name: str = ""
) -> Iterator[str]:
    """Lines of the explanation, ready to print."""
    rule = loaded.rule
    st = journal.rule_state(rule, now=now)
    decision = deciding.decide(rule, st, now)
    yield f"rule {rule.name} ({loaded.file}:{loaded.line}){'' if rule.enabled else ' [disabled]'}"
    yield f"  dataset {rule.dataset_name}: {rule.dataset.source}"
    yield f"  model {rule.model.registered_name} from {rule.model.base}"
    yield f"  journal: {journal_name}"
    yield "triggers:"
    for trigger in rule.triggers:
        yield f"  - {_trigger_line(trigger.kind, trigger.spec)}"
    yield (
        f"  limits: cooldown {durations.format(rule.limits.cooldown)}, "
        f"max_concurrent_runs {rule.limits.max_concurrent_runs}, "
        f"max_runs_per_day {rule.limits.max_runs_per_day or 'unlimited'}"
    )
    yield "what it sees now:"
    pending = st.pending
    yield f"  pending: {pending.labels} new or changed labels, {pending.images} images, {pending.deleted} deletions"
    yield f"  oldest pending change: {_when(pending.first_at, now)}"
    yield f"  newest pending change: {_when(pending.last_at, now)}"
    if pending.class_counts:
        yield "  new boxes per class: " + ", ".join(f"{k}={v}" for k, v in sorted(pending.class_counts.items()))
    snapshot = f"{st.snapshot[:12]} ({st.snapshot_items} files)" if st.snapshot else "empty"
    yield f"  dataset snapshot: {snapshot}"
    yield f"  active runs: {', '.join(st.active_runs) or 'none'}"
    yield f"  last launch: {_when(st.last_launch_at, now)}; launches in the last 24 h: {len(st.launches_last_day)}"
    for tick in st.ticks:
        yield f"  open schedule slot: {tick.slot:%Y-%m-%d %H:%M} UTC"
    for obs in st.observations:
        yield f"  open {obs.kind} observation: {obs.value:.4f} at {_when(obs.at, now)}"
    for request in st.manual:
        yield f"  open manual request by {request.actor}: {request.reason}"
    yield "decision now:"
    if isinstance(decision, decisions.Launch):
        yield f"  LAUNCH {decision.run_key} ({decision.trigger}): {decision.reason}"
    else:
        yield f"  SKIP [{decision.code}] {decision.reason}"
        if decision.next_check_at is not None:
            yield f"  could change at {decision.next_check_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    recent = journal.decisions(rule.name, limit=history)
    yield f"recent decisions ({len(recent)}):" if recent else "recent decisions: none"
    for record in recent:
        target = f" {record.run_key}" if record.run_key else ""
        yield f"  {record.at:%Y-%m-%d %H:%M:%S} {record.outcome.upper()}{target} [{record.code}] {record.reason}"


def status(
    loaded_rules: dict[str, loading.LoadedRule], journal: base.Journal, *, now: datetime, decisions_per_rule: int = 3
) -> Iterator[str]:
    """Lines of ``retrain status``: rules, active runs, recent decisions, champions."""
    yield "rules:"
    models: set[str] = set()
    for name, loaded in sorted(loaded_rules.items()):
        rule = loaded.rule
        models.add(rule.model.registered_name)
        st = journal.rule_state(rule, now=now)
        decision = deciding.decide(rule, st, now)
        when = ""
        if isinstance(decision, decisions.Skip) and decision.next_check_at is not None:
            when = f"; next possible fire {decision.next_check_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
        verdict = (
            f"LAUNCH {decision.run_key}" if isinstance(decision, decisions.Launch) else f"waiting [{decision.code}]"
        )
        pending = f"{st.pending.labels} new labels, {st.pending.images} new images"
        yield f"  {name}: {pending}; {verdict}: {decision.reason}{when}"
        for record in journal.decisions(name, limit=decisions_per_rule):
            yield f"    {record.at:%Y-%m-%d %H:%M:%S} {record.outcome} [{record.code}] {record.reason}"
    active = journal.runs(states=runs.ACTIVE, limit=100)
    yield f"active runs ({len(active)}):"
    for run in active:
        yield f"  {run.run_key} ({run.rule}) {run.state} since {_when(run.updated_at, now)}: {run.reason}"
    finished = [r for r in journal.runs(limit=10) if r.state.final]
    yield "recent runs:"
    for run in finished[:5]:
        outcome = run.promotion.get("decision", "") if run.promotion else ""
        score = run.metrics.get("map50_95")
        figure = f" map50_95={score:.4f}" if isinstance(score, int | float) else ""
        yield f"  {run.run_key} {run.state}{figure} {outcome} {run.error or run.promotion.get('reason', '')}".rstrip()
    yield "champions:"
    for model in sorted(models):
        moves = [p for p in journal.promotions(model, limit=20) if p.kind in ("promoted", "rollback")]
        if not moves:
            yield f"  {model}: none yet"
            continue
        top = moves[0]
        score = top.metrics.get("map50_95")
        figure = f"map50_95={score:.4f}, " if isinstance(score, int | float) else ""
        yield f"  {model}: v{top.version} ({figure}{top.kind} {_when(top.at, now)} by {top.actor}: {top.reason})"
