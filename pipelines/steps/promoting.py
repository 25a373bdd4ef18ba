"""evaluate_and_promote: candidate and champion on the same images and classes, the gate, the registry.

Both models are scored on the dataset's ``test`` split when it has one (``val`` picked the best epoch and
trial), else on ``val``; each in its own class ids, on the classes they share by name (see
:mod:`pipelines.steps.classviews`). When the class names changed since the champion, ``promotion.class_change``
decides: refuse the candidate, or compare on the shared classes. The split and the classes compared are in
the reason and on the version (``retrain.gate.split``, ``retrain.gate.classes``).

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from daemon import failpoints
from daemon.engine import gating
from daemon.model import outcomes, rules, tags
from daemon.registry import mlflow as registry
from pipelines.steps import classviews, training


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
            run_id=getattr(version, "run_id", None) or None,
        )
    return recorded


def _tag(registry_: registry.Mlflow, name: str, version: str, decision: outcomes.GateDecision, reason: str) -> None:
    client = registry_.client
    with registry_.calling(f"tagging {name} v{version} with the gate's decision"):
        client.set_model_version_tag(name, version, tags.GATE_DECISION, decision.value)
        client.set_model_version_tag(name, version, tags.GATE_REASON, reason)


@dataclass(frozen=True, kw_only=True)
class Judged:
    """The evaluations and the verdict, with the split and the class names they were made on."""

    candidate: outcomes.Evaluation
    champion: outcomes.Evaluation | None
    verdict: gating.Verdict
    compared: list[str]
    split: str


def _scored(
    weights: Path,
    keep: list[str],
    split: str,
    *,
    data_yaml: Path,
    imgsz: int,
    device: str,
    out_dir: Path,
    batch: int,
    options: training.TrainerOptions,
) -> outcomes.Evaluation:
    """A model scored on ``split``, counting the ``keep`` classes (by name), in its own class ids."""
    view, images = classviews.view(
        data_yaml, split=split, model_names=training.class_names(weights), keep=keep, out_dir=out_dir
    )
    return training.evaluate(
        weights=weights,
        data_yaml=view,
        imgsz=imgsz,
        device=device,
        out_dir=out_dir,
        batch=batch,
        options=options,
        split=split,
        images=images,
    )


def _judge(
    *,
    candidate_weights: Path,
    champion: registry.Champion | None,
    data_yaml: Path,
    policy: rules.PromotionSpec,
    scorer: Callable[[Path, str, list[str], str], outcomes.Evaluation],
    champion_weights: Callable[[str], Path],
) -> Judged:
    """Candidate and champion on the same images and classes; the gate, or a refusal when the class names
    changed and ``promotion.class_change`` says so. The reason ends with the split and classes compared."""
    data = yaml.safe_load(data_yaml.read_text())
    split = classviews.decision_split(data)
    dataset_names = classviews.names_of(data)
    champion_eval = None
    verdict: gating.Verdict | None = None
    compared = dataset_names
    if champion is not None:
        weights = champion_weights(champion.version)
        comparison = classviews.compare(dataset_names, training.class_names(weights))
        if comparison.changed and policy.class_change == "refuse":
            verdict = gating.Verdict(
                promote=False,
                reason=(
                    f"the class names changed since champion v{champion.version} ({comparison.describe()}) and "
                    f"promotion.class_change is refuse: promote by hand, or set class_change: shared to compare "
                    f"on the {len(comparison.shared)} shared classes"
                ),
            )
        elif not comparison.shared:
            verdict = gating.Verdict(
                promote=False, reason=f"champion v{champion.version} shares no class name with the candidate"
            )
        else:
            compared = comparison.shared
            champion_eval = scorer(weights, "champion", compared, split)
    candidate_eval = scorer(candidate_weights, "candidate", compared, split)
    if verdict is None:
        verdict = gating.gate(candidate=candidate_eval, champion=champion_eval, policy=policy)
    scope = f"decided on the {split} split ({candidate_eval.images} images"
    if compared != dataset_names and champion is not None:
        scope += f", the {len(compared)} classes shared with champion v{champion.version}"
    return Judged(
        candidate=candidate_eval,
        champion=champion_eval,
        verdict=gating.Verdict(promote=verdict.promote, reason=f"{verdict.reason} [{scope})]"),
        compared=compared,
        split=split,
    )


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
    judged = _judge(
        candidate_weights=candidate_weights,
        champion=champion,
        data_yaml=data_yaml,
        policy=policy,
        scorer=lambda weights, folder, keep, split: _scored(
            weights,
            keep,
            split,
            data_yaml=data_yaml,
            imgsz=imgsz,
            device=device,
            out_dir=workdir / folder,
            batch=batch,
            options=options,
        ),  # fmt: skip
        champion_weights=lambda version: _champion_weights(registered_name, version, workdir=workdir),
    )
    candidate_eval, champion_eval, verdict = judged.candidate, judged.champion, judged.verdict
    compared, split = judged.compared, judged.split
    metrics = {f"{split}_{k}": candidate_eval.to_json()[k] for k in ("map50_95", "map50")}
    if champion_eval is not None:
        metrics |= {f"champion_{split}_{k}": champion_eval.to_json()[k] for k in ("map50_95", "map50")}
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
        tags.GATE_SPLIT: split,
        tags.GATE_CLASSES: json.dumps(compared),
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
        run_id=run_id,
    )
