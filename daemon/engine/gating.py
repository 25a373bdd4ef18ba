"""The promotion gate: does a candidate replace the champion? A pure function, tested on its own.

Rules, all measured on the same validation images:

- no champion yet: the candidate becomes champion if its metric is at least ``first_model_min``;
- otherwise it must beat the champion **strictly by more than** ``min_improvement``
  (``candidate - champion > min_improvement``, compared with a small tolerance so that float rounding
  never lets an equal model through);
- with ``max_class_drop`` set, no class present in both evaluations may lose more AP than that.

A worse (or equal) model never becomes champion.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from daemon.model import rules

#: Differences smaller than this are float noise, not improvement.
EPSILON = 1e-9


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Validation results of one model on one validation split."""

    map50_95: float
    map50: float
    per_class: Mapping[str, float] = field(default_factory=dict)
    """AP50-95 by class id (as a string)."""

    def metric(self, name: str) -> float:
        return self.map50_95 if name == "map50_95" else self.map50


@dataclass(frozen=True, kw_only=True)
class Verdict:
    promote: bool
    reason: str


def gate(*, candidate: Scores, champion: Scores | None, policy: rules.PromotionSpec) -> Verdict:
    """Decide whether ``candidate`` becomes champion under ``policy``."""
    metric = policy.metric
    value = candidate.metric(metric)
    if champion is None:
        if value + EPSILON >= policy.first_model_min:
            return Verdict(
                promote=True, reason=f"first model: {metric} {value:.4f} >= first_model_min {policy.first_model_min:g}"
            )
        return Verdict(
            promote=False, reason=f"first model: {metric} {value:.4f} < first_model_min {policy.first_model_min:g}"
        )
    best = champion.metric(metric)
    gain = value - best
    if not gain > policy.min_improvement + EPSILON:
        return Verdict(
            promote=False,
            reason=(
                f"{metric} {value:.4f} vs champion {best:.4f}: improvement {gain:+.4f} is not more than "
                f"min_improvement {policy.min_improvement:g}"
            ),
        )
    if policy.max_class_drop is not None:
        drops = sorted(
            (
                (champion.per_class[c] - candidate.per_class[c], c)
                for c in champion.per_class
                if c in candidate.per_class
            ),
            reverse=True,
        )
        if drops and drops[0][0] > policy.max_class_drop + EPSILON:
            drop, cls = drops[0]
            return Verdict(
                promote=False,
                reason=(
                    f"{metric} improves {gain:+.4f} but class {cls} drops {drop:.4f} "
                    f"(> max_class_drop {policy.max_class_drop:g})"
                ),
            )
    return Verdict(
        promote=True,
        reason=f"{metric} {value:.4f} beats champion {best:.4f} by {gain:+.4f} (> {policy.min_improvement:g})",
    )
