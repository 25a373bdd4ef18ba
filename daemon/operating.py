"""What operators do by hand, shared by the command line and the HTTP API: trigger a rule, roll a model back.

Both go through the same records as the daemon's own work: a manual trigger is a journaled request the
daemon answers on its next pass (same dedupe, concurrency and snapshot checks as any trigger); a rollback
moves MLflow's ``champion`` alias (who and why in the version's tags) and journals the move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from daemon import errors
from daemon.journal import base
from daemon.model import outcomes
from daemon.registry import mlflow as registry
from daemon.rules import loading


class UnknownRule(errors.PermanentError):
    """The named rule is not among the valid rules."""


class NothingToRollBackTo(errors.PermanentError):
    """The model has no earlier promoted version."""


def request_trigger(
    journal: base.Journal,
    loaded_rules: Mapping[str, loading.LoadedRule],
    rule: str,
    *,
    reason: str,
    actor: str,
    at: datetime,
) -> str:
    """Journal a manual trigger of ``rule``; returns the request id. Raises :class:`UnknownRule`."""
    if rule not in loaded_rules:
        known = ", ".join(sorted(loaded_rules)) or "none"
        raise UnknownRule(f"no valid rule {rule!r} (valid rules: {known})")
    return journal.request_manual(rule, reason=reason, actor=actor, at=at)


@dataclass(frozen=True, kw_only=True)
class Rollback:
    model: str
    previous: str | None
    target: str
    actor: str
    reason: str


def rollback(
    mlflow: registry.Mlflow,
    journal: base.Journal,
    model: str,
    *,
    to_version: str | None,
    reason: str,
    actor: str,
    at: datetime,
) -> Rollback:
    """Move ``model``'s champion alias to ``to_version`` (default: the promoted version before the current
    champion) and journal the move.

    Raises:
        NothingToRollBackTo: no earlier promoted version exists.
        errors.RetrainError: what the registry raised (unknown version, MLflow unreachable); nothing moved.
    """
    champion = mlflow.champion(model)
    current = champion.version if champion is not None else None
    target = to_version
    if target is None:
        earlier = [v for v in mlflow.promoted_versions(model) if current is None or int(v) < int(current)]
        if not earlier:
            if current is None and not mlflow.model_exists(model):
                raise errors.NotFound(f"unknown model {model!r}: MLflow has no registered model of that name")
            before = f" before v{current}" if current else ""
            raise NothingToRollBackTo(f"{model} has no promoted version to roll back to{before}")
        target = earlier[-1]
    mlflow.move_champion(model, target, actor=actor, reason=reason)
    journal.record_promotion(
        base.PromotionRecord(
            model=model,
            version=target,
            previous_version=current,
            run_key=None,
            kind=outcomes.PromotionKind.ROLLBACK,
            actor=actor,
            reason=reason,
            metrics={},
            at=at,
        )
    )
    return Rollback(model=model, previous=current, target=target, actor=actor, reason=reason)
