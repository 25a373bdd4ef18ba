"""What operators do by hand, shared by the command line and the HTTP API: trigger a rule, roll a model back.

Both go through the same records as the daemon's own work: a manual trigger is a journaled request the
daemon answers on its next pass (same dedupe, concurrency and snapshot checks as any trigger); a rollback
moves MLflow's ``champion`` alias (who and why in the version's tags) and journals the move.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from daemon import errors
from daemon.journal import base
from daemon.launchers import base as launcher_base
from daemon.model import ids, outcomes, state
from daemon.registry import mlflow as registry
from daemon.rules import loading


class TriggerRefused(errors.PermanentError):
    """A manual trigger that could not do anything: the rule is disabled, or its data cannot be read."""


class UnknownRule(TriggerRefused):
    """The named rule is not among the valid rules."""


class NothingToRollBackTo(errors.PermanentError):
    """The model has no earlier promoted version."""


def known_rule(loaded_rules: Mapping[str, loading.LoadedRule], rule: str) -> loading.LoadedRule:
    """The rule of that name. Raises :class:`UnknownRule` (with the closest name suggested)."""
    found = loaded_rules.get(rule)
    if found is None:
        known = ", ".join(sorted(loaded_rules)) or "none"
        close = difflib.get_close_matches(rule, list(loaded_rules), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownRule(f"no valid rule {rule!r}{hint} (valid rules: {known})")
    return found


def check_trigger(
    loaded_rules: Mapping[str, loading.LoadedRule],
    rule: str,
    *,
    s3_configured: bool = True,
    paused: state.Pause | None = None,
) -> None:
    """Refuse a manual trigger that could do nothing.

    Raises:
        UnknownRule: no valid rule of that name (the closest name is suggested).
        TriggerRefused: the rule is disabled or ``paused``, or it reads a bucket and no S3 endpoint is set
            (``s3_configured`` false): journaling it would end in "dataset is empty".
    """
    found = known_rule(loaded_rules, rule)
    if paused is not None:
        raise TriggerRefused(
            f"rule {rule!r} is paused (by {paused.actor}: {paused.reason}): `retrain resume {rule}` first"
        )
    where = f"{found.file}:{found.line}" if found.line else found.file
    if not found.rule.enabled:
        raise TriggerRefused(f"rule {rule!r} is disabled (enabled: false in {where}): enable it to trigger it")
    if found.rule.dataset.scheme == "s3" and not s3_configured:
        raise TriggerRefused(
            f"rule {rule!r} reads {found.rule.dataset.source} but sources.s3.endpoint is not set: "
            f"the daemon cannot read its data"
        )


def request_trigger(
    journal: base.Journal,
    loaded_rules: Mapping[str, loading.LoadedRule],
    rule: str,
    *,
    reason: str,
    actor: str,
    at: datetime,
    s3_configured: bool = True,
) -> str:
    """Journal a manual trigger of ``rule`` (after :func:`check_trigger`); returns the request id."""
    check_trigger(loaded_rules, rule, s3_configured=s3_configured, paused=journal.pause_of(rule))
    return journal.request_manual(rule, reason=reason, actor=actor, at=at)


def set_paused(
    journal: base.Journal,
    loaded_rules: Mapping[str, loading.LoadedRule],
    rule: str,
    *,
    paused: bool,
    reason: str,
    actor: str,
    at: datetime,
) -> bool:
    """Pause ``rule`` (it decides nothing, manual triggers are refused) or resume it; journaled, so it survives
    restarts. Returns whether that changed anything (pausing a paused rule keeps the first pause).

    Raises:
        UnknownRule: no valid rule of that name.
    """
    known_rule(loaded_rules, rule)
    return journal.set_pause(rule, state.Pause(actor=actor, reason=reason, at=at) if paused else None)


def cancel_run(
    journal: base.Journal, launcher: launcher_base.Launcher, run_key: str, *, reason: str, actor: str
) -> launcher_base.RunStatus:
    """Ask the launcher to stop an active run; the daemon records its end (failed) on its next poll.

    Raises:
        errors.NotFound: the journal has no such run.
        errors.PermanentError: the run already ended, or another launcher started it.
        errors.TemporaryError: the backend is unreachable now.
    """
    run = journal.get_run(ids.RunKey(run_key))
    if run is None:
        raise errors.NotFound(f"no run {run_key!r} in the journal")
    if run.state.final:
        raise errors.PermanentError(f"run {run_key} already ended ({run.state.value}): nothing to cancel")
    if run.backend is not None and run.backend != launcher.name:
        raise errors.PermanentError(
            f"run {run_key} was started by the {run.backend} launcher; this daemon is set up with {launcher.name}"
        )
    status = launcher.cancel(ids.RunKey(run_key), reason=f"by {actor}: {reason}")
    if status is None:
        raise errors.NotFound(f"the {launcher.name} launcher has no run {run_key} (it was never submitted)")
    return status


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
