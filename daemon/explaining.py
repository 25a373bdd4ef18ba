"""``retrain explain``: what a rule sees now, what it would decide and why, and what it decided before.

Reads the journal and runs the pure engine with the current time; changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from daemon.engine import deciding
from daemon.journal import base
from daemon.model import decisions, durations, runs, state
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


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def decision_data(decision: decisions.Decision) -> dict[str, Any]:
    if isinstance(decision, decisions.Launch):
        return {"outcome": "launch", "code": decision.trigger, "run_key": decision.run_key, "reason": decision.reason}
    return {
        "outcome": "skip",
        "code": decision.code.value,
        "reason": decision.reason,
        "next_check_at": iso(decision.next_check_at),
    }


def decision_record_data(record: base.DecisionRecord) -> dict[str, Any]:
    return {
        "at": iso(record.at),
        "outcome": record.outcome,
        "code": record.code,
        "reason": record.reason,
        "run_key": record.run_key,
    }


def pause_data(pause: state.Pause | None) -> dict[str, Any] | None:
    return None if pause is None else {"actor": pause.actor, "reason": pause.reason, "at": iso(pause.at)}


def run_data(run: runs.RunRecord) -> dict[str, Any]:
    return {
        "run_key": run.run_key,
        "rule": run.rule,
        "state": run.state.value,
        "trigger": run.trigger,
        "reason": run.reason,
        "snapshot": run.snapshot,
        "backend": run.backend,
        "backend_run_id": run.backend_run_id,
        "created_at": iso(run.created_at),
        "updated_at": iso(run.updated_at),
        "metrics": run.metrics,
        "promotion": run.promotion,
        "error": run.error,
    }


def promotion_data(record: base.PromotionRecord) -> dict[str, Any]:
    return {
        "model": record.model,
        "version": record.version,
        "previous_version": record.previous_version,
        "run_key": record.run_key,
        "kind": record.kind,
        "actor": record.actor,
        "reason": record.reason,
        "metrics": record.metrics,
        "at": iso(record.at),
    }


def champions_data(models: Iterable[str], journal: base.Journal) -> list[dict[str, Any]]:
    """The champion of each model as the journal knows it (the last promotion or rollback), or None."""
    found = []
    for model in sorted(set(models)):
        moves = [p for p in journal.promotions(model, limit=20) if p.kind in ("promoted", "rollback")]
        found.append({"model": model, "champion": promotion_data(moves[0]) if moves else None})
    return found


def status_data(
    loaded_rules: Mapping[str, loading.LoadedRule],
    journal: base.Journal,
    *,
    now: datetime,
    decisions_per_rule: int = 3,
) -> dict[str, Any]:
    """What ``retrain status`` shows, as JSON-ready data (``retrain status --json`` and ``GET /api/v1/status``)."""
    rules_out: list[dict[str, Any]] = []
    for name, loaded in sorted(loaded_rules.items()):
        rule = loaded.rule
        st = journal.rule_state(rule, now=now)
        rules_out.append(
            {
                "name": name,
                "file": str(loaded.file),
                "line": loaded.line,
                "enabled": rule.enabled,
                "paused": pause_data(st.paused),
                "model": rule.model.registered_name,
                "pending": {"labels": st.pending.labels, "images": st.pending.images, "deleted": st.pending.deleted},
                "decision": decision_data(deciding.decide(rule, st, now)),
                "recent_decisions": [
                    decision_record_data(r) for r in journal.decisions(name, limit=decisions_per_rule)
                ],
            }
        )
    finished = [r for r in journal.runs(limit=10) if r.state.final]
    return {
        "rules": rules_out,
        "active_runs": [run_data(r) for r in journal.runs(states=runs.ACTIVE, limit=100)],
        "recent_runs": [run_data(r) for r in finished[:5]],
        "champions": champions_data((r["model"] for r in rules_out), journal),
    }


def _score(metrics: Mapping[str, Any], prefix: str = " ", suffix: str = "") -> str:
    score = metrics.get("map50_95")
    return f"{prefix}map50_95={score:.4f}{suffix}" if isinstance(score, int | float) else ""


def _parse(moment: str | None) -> datetime | None:
    return None if moment is None else datetime.fromisoformat(moment)


def status_lines(data: Mapping[str, Any], *, now: datetime) -> Iterator[str]:
    """Render :func:`status_data` as the lines ``retrain status`` prints."""
    yield "rules:"
    for rule in data["rules"]:
        decision = rule["decision"]
        when = ""
        if decision.get("next_check_at"):
            when = f"; next possible fire {_parse(decision['next_check_at']):%Y-%m-%d %H:%M:%S} UTC"
        verdict = (
            f"LAUNCH {decision['run_key']}" if decision["outcome"] == "launch" else f"waiting [{decision['code']}]"
        )
        pending = f"{rule['pending']['labels']} new labels, {rule['pending']['images']} new images"
        flags = "" if rule["enabled"] else " (disabled)"
        flags += " (PAUSED)" if rule.get("paused") else ""
        yield f"  {rule['name']}{flags}: {pending}; {verdict}: {decision['reason']}{when}"
        for record in rule["recent_decisions"]:
            at = _parse(record["at"])
            yield f"    {at:%Y-%m-%d %H:%M:%S} {record['outcome']} [{record['code']}] {record['reason']}"
    yield f"active runs ({len(data['active_runs'])}):"
    for run in data["active_runs"]:
        since = _when(_parse(run["updated_at"]), now)
        yield f"  {run['run_key']} ({run['rule']}) {run['state']} since {since}: {run['reason']}"
        if run["error"]:
            yield f"    WAITING: {run['error']}"
    yield "recent runs:"
    for run in data["recent_runs"]:
        outcome = run["promotion"].get("decision", "")
        detail = run["error"] or run["promotion"].get("reason", "")
        yield f"  {run['run_key']} {run['state']}{_score(run['metrics'])} {outcome} {detail}".rstrip()
    yield "champions:"
    for entry in data["champions"]:
        top = entry["champion"]
        if top is None:
            yield f"  {entry['model']}: none yet"
            continue
        figure = _score(top["metrics"], prefix="", suffix=", ")
        moved = f"{top['kind']} {_when(_parse(top['at']), now)} by {top['actor']}"
        yield f"  {entry['model']}: v{top['version']} ({figure}{moved}: {top['reason']})"
