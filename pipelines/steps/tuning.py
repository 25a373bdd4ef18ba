"""Hyperparameter trials: sampled deterministically from the rule's search space, picked by mAP."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any


def sample_trials(space: Mapping[str, Mapping[str, Any]], *, trials: int, seed: int) -> list[dict[str, float]]:
    """``trials`` hyperparameter sets; log-scale ranges are sampled uniformly in log space."""
    rng = random.Random(seed)
    found = []
    for _ in range(trials):
        params = {}
        for name in sorted(space):
            r = space[name]
            low, high = float(r["low"]), float(r["high"])
            if r.get("scale", "linear") == "log":
                params[name] = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                params[name] = rng.uniform(low, high)
        found.append(params)
    return found


def pick_best(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The trial with the highest ``map50_95`` (ties: the earlier trial)."""
    if not results:
        raise ValueError("no trial results to pick from")
    return dict(max(enumerate(results), key=lambda pair: (pair[1]["map50_95"], -pair[0]))[1])
