"""Recording: a finished run's outcome becomes journal records, in one transaction.

The gate's outcome comes from the run's own output (the local launcher's ``outcome.json``) or, for a run
that left none (every cluster run; a local run whose process died after its promotion step), from the model
version it registered in MLflow, found by its run-key tag. A run that died is counted as promoted only if
the champion alias really points at its version. The run's final state and its promotion record are
written together, so a run is never final without its record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from daemon import errors, failpoints, logs
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base
from daemon.launchers import base as launcher_base
from daemon.model import outcomes, runs
from daemon.registry import mlflow as registry
from daemon.rules import loading
from daemon.sources import base as source_base

log = logs.get_logger(__name__)


class OutcomeRecorder:
    """Journals how runs ended.

    Args:
        journal: runs and promotions.
        mlflow: the registry, for runs that left no output.
        rules: the rules in force, by name (for a run launched without its model in its parameters).
        metrics: promotions are counted.
        backend: the launcher's name, recorded with the run.
        clock: the current time.
    """

    def __init__(
        self,
        *,
        journal: journal_base.Journal,
        mlflow: registry.Mlflow,
        rules: Callable[[], Mapping[str, loading.LoadedRule]],
        metrics: metrics_.Metrics,
        backend: str,
        clock: source_base.Clock,
    ) -> None:
        self.journal = journal
        self.mlflow = mlflow
        self.rules = rules
        self.metrics = metrics
        self.backend = backend
        self.clock = clock

    def outcome(self, run: runs.RunRecord, status: launcher_base.RunStatus) -> outcomes.GateOutcome | None:
        """The gate's outcome of a finished run, from its output or from MLflow (None: it reached no gate).

        Raises:
            errors.TemporaryError: MLflow cannot answer now (the run stays active and is asked again).
        """
        if status.output:
            try:
                return outcomes.GateOutcome.from_json(status.output)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("run_output_unreadable", error=errors.truncate(str(exc)), action="read from MLflow")
        model = self.model_of(run)
        if model is None:
            return None
        registered = self.mlflow.registered_by(model, run.run_key)
        if registered is None:
            return None
        version, found_tags = registered
        found = registry.outcome_from_tags(model, version, found_tags)
        if status.state is runs.RunState.SUCCEEDED:
            return found
        # The run died. Its version counts as promoted only if the alias points at it, whether or not the gate
        # got as far as tagging its decision (the step can die between moving the alias and the tag).
        champion = self.mlflow.champion(model)
        if champion is None or champion.version != version:
            return None
        earlier = f" {found.reason}" if found is not None else ""
        return outcomes.GateOutcome(
            model=model,
            version=version,
            decision=outcomes.GateDecision.PROMOTED,
            reason=(
                f"recovered from MLflow: v{version} is champion; the run ended before reporting "
                f"({status.error or status.state.value}).{earlier}"
            ),
            previous_champion=registry.champion_at_evaluation(found_tags),
            candidate=registry.evaluation_from_tags(found_tags),
            recovered=True,
        )

    def model_of(self, run: runs.RunRecord) -> str | None:
        """The registered model the run was launched for (its launch parameters), else its rule's today: a
        rule removed or edited while its run trained does not lose the run's outcome."""
        launched = run.params.get("model")
        if isinstance(launched, dict) and isinstance(launched.get("registered_name"), str):
            return str(launched["registered_name"])
        loaded = self.rules().get(run.rule)
        return loaded.rule.model.registered_name if loaded is not None else None

    def finish(self, run: runs.RunRecord, status: launcher_base.RunStatus) -> None:
        """Journal the run's end and its promotion record (one transaction)."""
        failpoints.hit("run_finished")
        now = self.clock()
        found = self.outcome(run, status)
        record = None
        if found is not None and (status.state is runs.RunState.SUCCEEDED or found.promoted):
            record = journal_base.PromotionRecord(
                model=found.model,
                version=found.version,
                previous_version=found.previous_champion,
                run_key=run.run_key,
                kind=outcomes.PromotionKind(found.decision.value),
                actor="daemon",
                reason=found.reason,
                metrics=found.candidate.to_json() if found.candidate else {},
                at=now,
            )
        self.journal.update_run(
            run.run_key,
            status.state,
            at=now,
            backend=self.backend,
            backend_run_id=status.backend_run_id,
            metrics=found.candidate.to_json() if found is not None and found.candidate else {},
            promotion=_promotion(found),
            error=status.error,
            record=record,
        )
        if record is None or found is None:
            log.warning("run_ended", state=status.state.value, error=errors.truncate(status.error or ""))
            return
        self.metrics.promotions.labels(found.model, found.decision.value).inc()
        succeeded = status.state is runs.RunState.SUCCEEDED
        (log.info if succeeded else log.warning)(
            "run_succeeded" if succeeded else "run_ended_after_promotion",
            state=status.state.value,
            model=found.model,
            version=found.version,
            decision=found.decision.value,
            reason=found.reason,
        )


def _promotion(found: outcomes.GateOutcome | None) -> dict[str, object]:
    if found is None:
        return {}
    return {
        "decision": found.decision.value,
        "reason": found.reason,
        "version": found.version,
        "previous_champion": found.previous_champion,
        "model": found.model,
        "champion": found.champion.to_json() if found.champion else None,
        "mlflow_run_id": found.run_id,
    }
