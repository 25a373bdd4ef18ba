"""evaluate_and_promote: candidate and champion on the same validation images, the gate, the registry.

The candidate is registered as a new version carrying its metrics and the gate's decision and reason as
tags. The ``champion`` alias moves only when the gate says so, with a compare-and-set: right before moving
it, the alias is read again, and if another run moved it since this evaluation began the promotion is
refused (and recorded as such). MLflow has no atomic compare-and-set on aliases, so a window of a few
milliseconds remains between the re-read and the move; the daemon runs one promotion per model at a time,
which closes it in practice.

Idempotent by run key, because KFP retries a failed task: a version this run already registered is found by
its ``retrain.run_key`` tag and never registered twice; if the alias already points at it (an attempt died
after moving it), the outcome is "promoted" without gating the version against itself; if the gate already
tagged it, that decision stands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from daemon import failpoints
from daemon.engine import gating
from daemon.model import outcomes, rules, tags
from daemon.registry import mlflow as registry
from pipelines.steps import training


def _champion_weights(name: str, version: str, *, workdir: Path) -> Path:
    import mlflow

    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(workdir / f"champion-v{version}")
        )
    )
    weights = sorted(local.rglob("*.pt"))
    if not weights:
        raise FileNotFoundError(f"champion {name} v{version} holds no .pt weights")
    return weights[0]


def _already_done(registry_: registry.Mlflow, name: str, version: Any) -> outcomes.GateOutcome | None:
    """The outcome of an earlier attempt of this run, if it got as far as a decision or a move."""
    found = dict(version.tags or {})
    recorded = registry.outcome_from_tags(name, str(version.version), found)
    champion = registry_.champion(name)
    if champion is not None and champion.version == str(version.version):
        if recorded is not None and recorded.promoted:
            return recorded
        reason = "an earlier attempt of this run moved the alias to this version and died before reporting"
        _tag(registry_, name, str(version.version), outcomes.GateDecision.PROMOTED, reason)
        return outcomes.GateOutcome(
            model=name,
            version=str(version.version),
            decision=outcomes.GateDecision.PROMOTED,
            reason=reason,
            previous_champion=registry.champion_at_evaluation(found),
            candidate=registry.evaluation_from_tags(found),
            recovered=True,
        )
    return recorded


def _tag(registry_: registry.Mlflow, name: str, version: str, decision: outcomes.GateDecision, reason: str) -> None:
    client = registry_.client
    with registry_.calling(f"tagging {name} v{version} with the gate's decision"):
        client.set_model_version_tag(name, version, tags.GATE_DECISION, decision.value)
        client.set_model_version_tag(name, version, tags.GATE_REASON, reason)


def evaluate_and_promote(
    *,
    registry_: registry.Mlflow,
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
    batch: int = 16,
    options: training.TrainerOptions = training.DEFAULT_OPTIONS,
) -> outcomes.GateOutcome:
    """Evaluate, gate, register (once per run key) and maybe promote. Returns the gate's outcome."""
    import mlflow

    registry.use_globally(registry_.tracking_uri)  # artifact downloads and register_model use the global URI
    registered = registry_.versions(registered_name, **{tags.RUN_KEY: run_key})
    if registered:
        done = _already_done(registry_, registered_name, registered[-1])
        if done is not None:
            print(f"run {run_key} already has a gate decision for v{done.version}: {done.decision} (a retried task)")
            return done
    champion = registry_.champion(registered_name)

    def evaluated(weights: Path, folder: str) -> outcomes.Evaluation:  # both on the same images, the same way
        return training.evaluate(
            weights=weights,
            data_yaml=data_yaml,
            imgsz=imgsz,
            device=device,
            out_dir=workdir / folder,
            batch=batch,
            options=options,
        )

    candidate_eval = evaluated(candidate_weights, "candidate")
    champion_eval = None
    if champion is not None:
        weights = _champion_weights(registered_name, champion.version, workdir=workdir)
        champion_eval = evaluated(weights, "champion")
    verdict = gating.gate(candidate=candidate_eval, champion=champion_eval, policy=policy)
    metrics = {f"val_{k}": v for k, v in candidate_eval.to_json().items() if k != "per_class"}
    if champion_eval is not None:
        metrics |= {f"champion_val_{k}": v for k, v in champion_eval.to_json().items() if k != "per_class"}
    client = registry_.client
    with registry_.calling(f"logging the evaluation of {run_key}"):
        client.log_batch(run_id, metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in metrics.items()])
    with registry_.calling(f"reading the lineage of run {run_id}"):
        run_tags: dict[str, str] = dict(client.get_run(run_id).data.tags)
    lineage: dict[str, str] = {
        k: run_tags[k] for k in (tags.RULE, tags.DATASET_FINGERPRINT, tags.CODE_VERSION) if k in run_tags
    }
    version_tags = {
        **lineage,  # the rule, the data and the code the version came from
        tags.RUN_KEY: run_key,
        f"{tags.METRIC_PREFIX}map50_95": f"{candidate_eval.map50_95:.6f}",
        f"{tags.METRIC_PREFIX}map50": f"{candidate_eval.map50:.6f}",
        tags.PER_CLASS_AP: json.dumps(candidate_eval.to_json()["per_class"]),
        tags.CHAMPION_AT_EVALUATION: champion.version if champion else "none",
    }
    if registered:
        version = str(registered[-1].version)
        with registry_.calling(f"tagging {registered_name} v{version}"):
            for key, value in version_tags.items():
                client.set_model_version_tag(registered_name, version, key, value)
    else:
        version = str(mlflow.register_model(model_uri, registered_name, tags=version_tags).version)
    decision = outcomes.GateDecision.PROMOTED if verdict.promote else outcomes.GateDecision.REJECTED
    reason = verdict.reason
    if verdict.promote:
        now = registry_.champion(registered_name)
        expected = champion.version if champion else None
        moved_to = now.version if now else None
        if moved_to != expected:
            decision = outcomes.GateDecision.REFUSED
            reason = f"champion moved from v{expected} to v{moved_to} during evaluation; {verdict.reason}"
        else:
            with registry_.calling(f"moving the champion of {registered_name} to v{version}"):
                client.set_registered_model_alias(registered_name, tags.CHAMPION_ALIAS, version)
            failpoints.hit("promotion_done")
    _tag(registry_, registered_name, version, decision, reason)
    with registry_.calling(f"tagging run {run_id}"):
        client.set_tag(run_id, tags.GATE_DECISION, decision.value)
    return outcomes.GateOutcome(
        model=registered_name,
        version=version,
        decision=decision,
        reason=reason,
        previous_champion=champion.version if champion else None,
        candidate=candidate_eval,
        champion=champion_eval,
    )
