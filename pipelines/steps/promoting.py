"""evaluate_and_promote: candidate and champion on the same validation images, the gate, the registry.

The candidate is always registered as a new version carrying its metrics and the gate's decision and
reason as tags. The ``champion`` alias moves only when the gate says so, with a compare-and-set: right
before moving it, the alias is read again, and if another run moved it since this evaluation began the
promotion is refused (and recorded as such). MLflow has no atomic compare-and-set on aliases, so a window of
a few milliseconds remains between the re-read and the move; the daemon runs one promotion per model at a
time, which closes it in practice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon import constants, failpoints
from daemon.engine import gating
from daemon.model import rules
from pipelines.steps import training


@dataclass(frozen=True, kw_only=True)
class Champion:
    version: str
    weights: Path


def current_champion(client: Any, name: str, *, workdir: Path) -> Champion | None:
    """The champion version and its weights, downloaded; None when the model has none."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, constants.CHAMPION_ALIAS)
    except MlflowException as exc:
        if str(exc.error_code) in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version.version}", dst_path=str(workdir / f"champion-v{version.version}")
        )
    )
    weights = sorted(local.rglob("*.pt"))
    if not weights:
        raise FileNotFoundError(f"champion {name} v{version.version} holds no .pt weights")
    return Champion(version=str(version.version), weights=weights[0])


def _scores(evaluation: training.Evaluation) -> gating.Scores:
    return gating.Scores(map50_95=evaluation.map50_95, map50=evaluation.map50, per_class=evaluation.per_class)


def evaluate_and_promote(
    *,
    client: Any,
    registered_name: str,
    model_uri: str,
    run_id: str,
    candidate_weights: Path,
    data_yaml: Path,
    imgsz: int,
    device: str,
    policy: rules.PromotionSpec,
    run_key: str,
    workdir: Path,
) -> dict[str, Any]:
    """Evaluate, gate, register and maybe promote. Returns the decision with its numbers."""
    import mlflow

    champion = current_champion(client, registered_name, workdir=workdir)
    candidate_eval = training.evaluate(weights=candidate_weights, data_yaml=data_yaml, imgsz=imgsz, device=device)
    champion_eval = (
        training.evaluate(weights=champion.weights, data_yaml=data_yaml, imgsz=imgsz, device=device)
        if champion is not None
        else None
    )
    verdict = gating.gate(
        candidate=_scores(candidate_eval),
        champion=_scores(champion_eval) if champion_eval is not None else None,
        policy=policy,
    )
    metrics = {f"val_{k}": v for k, v in candidate_eval.to_json().items() if k != "per_class"}
    if champion_eval is not None:
        metrics |= {f"champion_val_{k}": v for k, v in champion_eval.to_json().items() if k != "per_class"}
    client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    tags = {
        constants.TAG_RUN_KEY: run_key,
        f"{constants.TAG_METRIC_PREFIX}map50_95": f"{candidate_eval.map50_95:.6f}",
        f"{constants.TAG_METRIC_PREFIX}map50": f"{candidate_eval.map50:.6f}",
        "retrain.per_class_ap": json.dumps(candidate_eval.per_class),
        "retrain.champion_at_evaluation": champion.version if champion else "none",
    }
    version = mlflow.register_model(model_uri, registered_name, tags=tags)
    decision = "promoted" if verdict.promote else "rejected"
    reason = verdict.reason
    if verdict.promote:
        now = current_version(client, registered_name)
        expected = champion.version if champion else None
        if now != expected:
            decision = "refused"
            reason = f"champion moved from v{expected} to v{now} during evaluation; {verdict.reason}"
        else:
            client.set_registered_model_alias(registered_name, constants.CHAMPION_ALIAS, version.version)
            failpoints.hit("promotion_done")
    client.set_model_version_tag(registered_name, version.version, constants.TAG_GATE_DECISION, decision)
    client.set_model_version_tag(registered_name, version.version, constants.TAG_GATE_REASON, reason)
    client.set_tag(run_id, constants.TAG_GATE_DECISION, decision)
    return {
        "model": registered_name,
        "version": str(version.version),
        "decision": decision,
        "reason": reason,
        "previous_champion": champion.version if champion else None,
        "candidate": candidate_eval.to_json(),
        "champion": champion_eval.to_json() if champion_eval else None,
    }


def current_version(client: Any, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, constants.CHAMPION_ALIAS).version)
    except MlflowException:
        return None
