"""Notices: what operators are told, as values the journal keeps until they are delivered.

A notice is written to the journal's outbox in the same transaction as the fact it tells (a run's end and
its gate decision), under an id derived from that fact: a restart, a retried write or a second delivery
attempt can never make two notices of one outcome. Sources that stay disconnected and rule files that are
refused get notices too, one per episode. Delivery (:mod:`daemon.runtime.notifying`) reads them from there.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime

from daemon.model import runs


class NoticeKind(enum.StrEnum):
    PROMOTED = "promoted"
    REJECTED = "rejected"
    """The gate kept the champion (not better by enough, a class dropped, the class list changed)."""
    REFUSED = "refused"
    """Better, but the champion moved meanwhile (the compare-and-set lost)."""
    FAILED = "failed"
    ABANDONED = "abandoned"
    WAITING = "waiting"
    """A run waited too long to start (a pod Pending on the cluster)."""
    SOURCE_DOWN = "source_down"
    RULE_REJECTED = "rule_rejected"


@dataclass(frozen=True, kw_only=True)
class Notice:
    id: str
    """Derived from the fact told: one notice per outcome, per disconnection, per refused file version."""
    kind: NoticeKind
    title: str
    body: str
    at: datetime
    rule: str | None = None
    """The rule the notice is about (its own ``notify`` targets are added), if any."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def for_run(run: runs.RunRecord) -> Notice | None:
    """The notice a run's end gives: its gate decision, or its failure; None while it is still active."""
    if not run.state.final:
        return None
    promotion = run.promotion
    decision = str(promotion.get("decision") or "")
    score = run.metrics.get("map50_95")
    figure = f" (mAP50-95 {score:.4f})" if isinstance(score, int | float) else ""
    model = promotion.get("model") or "the model"
    version = promotion.get("version")
    if decision in (NoticeKind.PROMOTED, NoticeKind.REJECTED, NoticeKind.REFUSED):
        kind = NoticeKind(decision)
        verb = {"promoted": "is the new champion", "rejected": "was rejected", "refused": "was refused"}[decision]
        title = f"{model} v{version} {verb}{figure}"
        body = f"Run {run.run_key} of rule {run.rule}: {promotion.get('reason', '')}"
    elif run.state is runs.RunState.SUCCEEDED:
        return None  # ended without a gate decision the daemon could read: said by the run's own record
    else:
        kind = NoticeKind.FAILED if run.state is runs.RunState.FAILED else NoticeKind.ABANDONED
        title = f"run {run.run_key} of rule {run.rule} {kind.value}"
        body = run.error or f"the run ended {kind.value} without an error message"
    if run.state is not runs.RunState.SUCCEEDED and decision:
        body += f" (ended {run.state.value}: {run.error or 'no error message'})"
    return Notice(
        id=f"run:{run.run_key}:{kind.value}",
        kind=kind,
        title=title,
        body=body,
        at=run.updated_at,
        rule=run.rule,
    )


def run_waiting(run: runs.RunRecord, *, since: datetime, at: datetime, reason: str) -> Notice:
    """A run that has waited to start since ``since``: told once per wait."""
    minutes = max(1, round((at - since).total_seconds() / 60))
    return Notice(
        id=f"run:{run.run_key}:waiting:{_digest(since.isoformat())}",
        kind=NoticeKind.WAITING,
        title=f"run {run.run_key} of rule {run.rule} has waited {minutes} min to start",
        body=reason,
        at=at,
        rule=run.rule,
    )


def source_down(name: str, *, since: datetime, at: datetime, error: str | None) -> Notice:
    """One notice per disconnection of a source (by the time it was first seen down)."""
    minutes = max(0, int((at - since).total_seconds() // 60))
    return Notice(
        id=f"source:{name}:{_digest(since.isoformat())}",
        kind=NoticeKind.SOURCE_DOWN,
        title=f"source {name} disconnected for {minutes} min",
        body=f"Down since {since.isoformat()}: {error or 'no error reported'}. Events meanwhile are caught up "
        f"by the next reconcile once it is back.",
        at=at,
    )


def rule_rejected(file: str, message: str, *, at: datetime) -> Notice:
    """One notice per refused version of a rule file (by its error), which keeps its last good version."""
    return Notice(
        id=f"rules:{_digest(file, message)}",
        kind=NoticeKind.RULE_REJECTED,
        title=f"rule file {file} refused",
        body=f"{message}. The file's last good version stays in force.",
        at=at,
    )
