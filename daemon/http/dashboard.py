"""What the web dashboard shows, as one JSON document (``GET /api/v1/dashboard``), and a model's history.

Everything is read from the journal, the rules in force, the sources' board and the progress board at the
moment of the request; nothing here writes. The page (``daemon/http/static/``) only draws this document.

- rules: the engine's decision now, and the gauges behind it: pending labels and images against the
  ``new_labels`` thresholds, boxes per class against ``min_per_class``, when the quiet period and the
  max wait end, the cooldown, the next schedule slot, launches today against the daily limit, paused;
- runs: active runs with their training curve, recent runs with what they trained on and how they ended;
- models: every gate decision per version over time, rollbacks, the champion's line, and the per-class AP
  of the last candidate against the champion it was compared with;
- sources and datasets: connected or not, last event, gaps, last reconcile, datasets that are not watched.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from daemon import __version__, explaining, redaction
from daemon.engine import deciding
from daemon.journal import base as journal_base
from daemon.model import decisions, ids, outcomes, progress, runs, state
from daemon.model import rules as rules_
from daemon.rules import loading
from daemon.sources import base as source_base

#: How many promotion records of a model the history reads (its chart shows each version once).
HISTORY_LIMIT = 500


def _iso_after(start: datetime | None, span: timedelta) -> str | None:
    return None if start is None else explaining.iso(start + span)


def _gauges(rule: rules_.Rule, st: state.RuleState, now: datetime) -> dict[str, Any]:
    """The numbers a rule waits on, for progress bars and countdowns."""
    pending = st.pending
    found: dict[str, Any] = {
        "pending_labels": pending.labels,
        "pending_images": pending.images,
        "pending_deleted": pending.deleted,
        "first_pending_at": explaining.iso(pending.first_at),
        "last_pending_at": explaining.iso(pending.last_at),
        "active_runs": list(st.active_runs),
        "max_concurrent_runs": rule.limits.max_concurrent_runs,
        "launches_last_day": len(st.launches_last_day),
        "max_runs_per_day": rule.limits.max_runs_per_day,
        "cooldown_until": None,
        "next_slot": None,
        "new_labels": None,
    }
    if st.last_launch_at is not None and st.last_launch_at + rule.limits.cooldown > now:
        found["cooldown_until"] = explaining.iso(st.last_launch_at + rule.limits.cooldown)
    upcoming = deciding.next_slot(rule, now)
    if upcoming is not None:
        found["next_slot"] = {"at": explaining.iso(upcoming[0]), "cron": upcoming[1].cron, "tz": upcoming[1].timezone}
    labelled = rule.triggers_of(decisions.TriggerKind.NEW_LABELS)
    if labelled:
        spec = labelled[0]
        found["new_labels"] = {
            "min_new_labels": spec.min_new_labels,
            "min_new_images": spec.min_new_images,
            "per_class": [
                {"class": name, "have": pending.class_counts.get(rule.class_id(name), 0), "need": need}
                for name, need in (spec.min_per_class or {}).items()
            ],
            "quiet_period_s": spec.quiet_period.total_seconds(),
            "max_wait_s": spec.max_wait.total_seconds(),
            "quiet_ends_at": _iso_after(pending.last_at if pending.labels else None, spec.quiet_period),
            "max_wait_ends_at": _iso_after(pending.first_at if pending.labels else None, spec.max_wait),
        }
    return found


def rule_view(loaded: loading.LoadedRule, journal: journal_base.Journal, *, now: datetime) -> dict[str, Any]:
    """One rule as the dashboard shows it."""
    rule = loaded.rule
    st = journal.rule_state(rule, now=now)
    return {
        "name": rule.name,
        "file": str(loaded.file),
        "line": loaded.line,
        "enabled": rule.enabled,
        "paused": explaining.pause_data(st.paused),
        "model": rule.model.registered_name,
        "dataset": {"name": rule.dataset_name, "source": redaction.redact(rule.dataset.source)},
        "triggers": [trigger.kind for trigger in rule.triggers],
        "decision": explaining.decision_data(deciding.decide(rule, st, now)),
        "dataset_problem": st.dataset_problem,
        "gauges": _gauges(rule, st, now),
        "recent_decisions": [explaining.decision_record_data(r) for r in journal.decisions(rule.name, limit=5)],
    }


def progress_data(found: progress.RunProgress | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "epochs": found.epochs,
        "epoch": found.epoch,
        "final": found.final,
        "source": found.source,
        "points": [{"epoch": p.epoch, "map50_95": p.map50_95, "map50": p.map50} for p in found.points],
    }


def _links(run: runs.RunRecord, found: progress.RunProgress | None, ui_url: str | None) -> dict[str, str]:
    """Links into the MLflow UI (``mlflow.ui_url``): the training run, and the version the run registered."""
    if not ui_url:
        return {}
    base = ui_url.rstrip("/")
    links: dict[str, str] = {}
    run_id = run.promotion.get("mlflow_run_id") or (found.mlflow_run_id if found is not None else None)
    if isinstance(run_id, str) and run_id:
        links["mlflow_run"] = f"{base}/#/runs/{quote(run_id)}"
    model, version = run.promotion.get("model"), run.promotion.get("version")
    if isinstance(model, str) and isinstance(version, str):
        links["mlflow_version"] = f"{base}/#/models/{quote(model)}/versions/{quote(version)}"
    return links


def run_view(run: runs.RunRecord, board: progress.ProgressBoard, ui_url: str | None) -> dict[str, Any]:
    found = board.get(run.run_key)
    dataset = run.params.get("dataset")
    source = dataset.get("source") if isinstance(dataset, dict) else None
    return explaining.run_data(run) | {
        "progress": progress_data(found),
        "links": _links(run, found, ui_url),
        "dataset_source": redaction.redact(source) if isinstance(source, str) else None,
        "error": redaction.redact(run.error) if run.error else None,
    }


def _score(metrics: Mapping[str, Any]) -> float | None:
    value = metrics.get("map50_95")
    return float(value) if isinstance(value, int | float) else None


def model_history(model: str, journal: journal_base.Journal) -> dict[str, Any]:
    """Every version the gate judged (its score, decision and time), the rollbacks, the champion's line over
    time and the per-class AP of the last candidate against the champion it was compared with."""
    records = list(reversed(journal.promotions(model, limit=HISTORY_LIMIT)))  # oldest first
    versions: dict[str, dict[str, Any]] = {}
    rollbacks: list[dict[str, Any]] = []
    champion_line: list[dict[str, Any]] = []
    for record in records:
        if record.kind is outcomes.PromotionKind.ROLLBACK:
            rollbacks.append(explaining.promotion_data(record))
            if record.previous_version in versions:
                versions[record.previous_version]["rolled_back"] = True
        elif record.version is not None:
            versions[record.version] = {
                "version": record.version,
                "at": explaining.iso(record.at),
                "decision": record.kind.value,
                "map50_95": _score(record.metrics),
                "map50": record.metrics.get("map50"),
                "split": record.metrics.get("split"),
                "run_key": record.run_key,
                "reason": record.reason,
                "rolled_back": False,
            }
        if record.kind.moves_champion and record.version is not None:
            judged = versions.get(record.version)
            champion_line.append(
                {
                    "at": explaining.iso(record.at),
                    "version": record.version,
                    "map50_95": judged["map50_95"] if judged else None,
                    "kind": record.kind.value,
                }
            )
    return {
        "model": model,
        "champion": champion_line[-1]["version"] if champion_line else None,
        "versions": list(versions.values()),
        "rollbacks": rollbacks,
        "champion_line": champion_line,
        "per_class": _per_class(records, journal),
    }


def _per_class(records: list[journal_base.PromotionRecord], journal: journal_base.Journal) -> dict[str, Any] | None:
    """The per-class AP of the last judged candidate and of the champion it was compared with."""
    for record in reversed(records):
        if record.kind is outcomes.PromotionKind.ROLLBACK or record.run_key is None:
            continue
        run = journal.get_run(ids.RunKey(record.run_key))
        champion = run.promotion.get("champion") if run is not None else None
        candidate = record.metrics.get("per_class")
        if not isinstance(candidate, dict):
            return None
        return {
            "version": record.version,
            "champion_version": record.previous_version,
            "split": record.metrics.get("split"),
            "candidate": candidate,
            "champion": champion.get("per_class") if isinstance(champion, dict) else None,
        }
    return None


def source_view(status: source_base.SourceStatus) -> dict[str, Any]:
    return {
        "name": status.name,
        "connected": status.connected,
        "events": status.events,
        "new_events": status.new_events,
        "rejected": status.rejected,
        "gaps": status.gaps,
        "last_event_at": explaining.iso(status.last_event_at),
        "last_reconcile_at": explaining.iso(status.last_reconcile_at),
        "reconcile_lag_s": status.reconcile_lag_s,
        "last_error": redaction.redact(status.last_error) if status.last_error else None,
    }


def overview(
    *,
    loaded_rules: Mapping[str, loading.LoadedRule],
    rule_errors: list[str],
    journal: journal_base.Journal,
    board: source_base.StatusBoard,
    progress_board: progress.ProgressBoard,
    now: datetime,
    ui_url: str | None,
    token_configured: bool,
    recent_runs: int = 20,
) -> dict[str, Any]:
    """The dashboard's whole document."""
    models = sorted({loaded.rule.model.registered_name for loaded in loaded_rules.values()})
    datasets = sorted({loaded.rule.dataset_name for loaded in loaded_rules.values()})
    finished = [r for r in journal.runs(limit=recent_runs + 100) if r.state.final][:recent_runs]
    return {
        "version": __version__,
        "now": now.astimezone(UTC).isoformat(),
        "token_configured": token_configured,
        "mlflow_ui_url": ui_url,
        "rules": [rule_view(loaded, journal, now=now) for _, loaded in sorted(loaded_rules.items())],
        "rule_errors": rule_errors,
        "active_runs": [run_view(r, progress_board, ui_url) for r in journal.runs(states=runs.ACTIVE, limit=100)],
        "recent_runs": [run_view(r, progress_board, ui_url) for r in finished],
        "models": [model_history(model, journal) for model in models],
        "sources": [source_view(s) for s in board.all()],
        "datasets": [_dataset_view(journal.dataset_status(name)) for name in datasets],
    }


def _dataset_view(status: journal_base.DatasetStatus) -> dict[str, Any]:
    return {
        "name": status.dataset,
        "source": redaction.redact(status.source) if status.source else None,
        "watched": status.problem is None and status.source is not None,
        "problem": status.problem,
        "problem_since": explaining.iso(status.problem_since),
    }
