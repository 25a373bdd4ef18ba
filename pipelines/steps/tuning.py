"""Hyperparameter search with Optuna, across the pipeline's ``ParallelFor`` trials and across runs.

- **Ask**: ``sample-trials`` builds an Optuna study in memory, adds the rule's earlier trials (MLflow child
  runs of earlier runs' tuning runs, read back by their tags) as finished trials, and asks TPE for this
  run's trials. TPE learns from those earlier trials, so each retrain explores new points instead of
  sampling the same ones; ``constant_liar`` keeps the trials asked together apart from each other. The
  sampler's seed is the rule's seed and the run key: a retried task asks the same trials again. As in
  Optuna's default, TPE models the history once it holds 10 trials; before that, points are random.
- **Tell**: each trial is an MLflow child run of the run's tuning run, with its parameters, per-epoch
  metrics, its parameters as JSON (typed) and how it ended; the next run's study reads them back.
- **Prune**: a trial reports its validation mAP after each epoch to a study holding the earlier trials'
  per-epoch values (of earlier runs, and of this run's trials that already finished); Optuna's median
  pruner stops it when it falls below the median of those trials at the same epoch.
- **Pick**: the best complete trial by validation mAP (a pruned trial only when every trial was pruned).
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The per-epoch metric a trial's pruner watches (logged by :func:`pipelines.steps.training.epoch_logger`).
EPOCH_METRIC = "metrics/mAP50-95B"
#: Earlier trials read back per run: enough for TPE, bounded for MLflow.
MAX_HISTORY = 200
#: The median pruner waits for this many earlier trials with per-epoch values, and judges a trial from its
#: second epoch on (the first is mostly warm-up).
PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_EPOCHS = 2


@dataclass(frozen=True, kw_only=True)
class PastTrial:
    """A finished trial: its parameters, its final validation mAP, its per-epoch values, how it ended."""

    params: dict[str, Any]
    value: float
    intermediate: dict[int, float] = field(default_factory=dict)
    pruned: bool = False


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def distributions(space: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Optuna distributions of the rule's search space (ranges and choices)."""
    optuna = _optuna()
    found: dict[str, Any] = {}
    for name in sorted(space):
        spec = space[name]
        if "choices" in spec:
            found[name] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        else:
            low, high = float(spec["low"]), float(spec["high"])
            found[name] = optuna.distributions.FloatDistribution(low, high, log=spec.get("scale") == "log")
    return found


def _fits(params: Mapping[str, Any], dists: Mapping[str, Any]) -> bool:
    """Whether an earlier trial lies inside today's space (the rule's space may have changed since)."""
    if set(params) != set(dists):
        return False
    for name, dist in dists.items():
        value = params[name]
        if hasattr(dist, "choices"):
            if value not in dist.choices:
                return False
        elif not (isinstance(value, int | float) and dist.low <= value <= dist.high):
            return False
    return True


def study_of(space: Mapping[str, Mapping[str, Any]], *, seed: int, history: Sequence[PastTrial]) -> Any:
    """A study in memory holding the earlier trials that fit the space: TPE asks from it, the pruner judges
    against it."""
    optuna = _optuna()
    dists = distributions(space)
    with warnings.catch_warnings():  # both options are marked experimental in Optuna 4 (stable since 2.x)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EPOCHS)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for past in history:
        if not _fits(past.params, dists) or not math.isfinite(past.value):
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=dict(past.params),
                distributions=dists,
                value=None if past.pruned else past.value,
                intermediate_values=dict(past.intermediate),
                state=optuna.trial.TrialState.PRUNED if past.pruned else optuna.trial.TrialState.COMPLETE,
            )
        )
    return study


def run_seed(seed: int, run_key: str) -> int:
    """The sampler's seed for one run: the rule's seed and the run key (a retried task asks the same)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{run_key}".encode()).digest()[:4], "big")


def suggest(
    space: Mapping[str, Mapping[str, Any]], *, trials: int, seed: int, history: Sequence[PastTrial] = ()
) -> list[dict[str, Any]]:
    """``trials`` parameter sets asked from TPE, which has seen ``history``."""
    study = study_of(space, seed=seed, history=history)
    dists = distributions(space)
    return [dict(study.ask(dists).params) for _ in range(trials)]


class Pruner:
    """Judges one running trial, epoch by epoch, against the earlier trials' values at the same epoch."""

    def __init__(self, space: Mapping[str, Mapping[str, Any]], *, history: Sequence[PastTrial]) -> None:
        self.study = study_of(space, seed=0, history=history)
        self.trial = self.study.ask()
        self.pruned_at: int | None = None

    def should_stop(self, epoch: int, value: float) -> bool:
        """Report the epoch's value; True when the trial falls below the median and should stop now."""
        if not math.isfinite(value):
            return False
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False


def pick_best(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The complete trial with the highest ``map50_95`` (ties: the earlier trial); pruned trials only when
    no trial completed."""
    if not results:
        raise ValueError("no trial results to pick from")
    complete = [r for r in results if not r.get("pruned")] or list(results)
    return dict(max(enumerate(complete), key=lambda pair: (_score(pair[1]), -pair[0]))[1])


def _score(result: Mapping[str, Any]) -> float:
    if result.get("map50_95") is None:
        return -math.inf  # a trial without a finite metric (see searching._result)
    value = float(result["map50_95"])
    return value if math.isfinite(value) else -math.inf


def params_json(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True)
