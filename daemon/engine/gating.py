"""The promotion gate: does a candidate replace the champion? A pure function, tested on its own.

Rules, all measured on the same validation images:

- no champion yet: the candidate becomes champion if its metric is at least ``first_model_min``;
- otherwise it must beat the champion **strictly by more than** ``min_improvement``
  (``candidate - champion > min_improvement``, compared with a small tolerance so that float rounding
  never lets an equal model through);
- with ``max_class_drop`` set, no class of the champion may lose more AP than that. Classes are matched
  by name. A class the candidate has no AP for (missing, or NaN: it found nothing) counts as AP 0, a drop;
  a class whose champion AP is NaN cannot be compared and is left out (said in the reason).

A candidate whose metric is not a number is never promoted. A worse (or equal) model never becomes champion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from daemon.model import outcomes, rules

#: Differences smaller than this are float noise, not improvement.
EPSILON = 1e-9


@dataclass(frozen=True, kw_only=True)
class Verdict:
    promote: bool
    reason: str


def _class_drops(
    candidate: outcomes.Evaluation, champion: outcomes.Evaluation
) -> tuple[list[tuple[float, str]], list[str]]:
    """(drop, class) for every comparable class, largest first; and the classes that could not be compared."""
    drops: list[tuple[float, str]] = []
    incomparable: list[str] = []
    for name, before in champion.per_class.items():
        if math.isnan(before):
            incomparable.append(name)
            continue
        after = candidate.per_class.get(name, 0.0)
        drops.append((before - (0.0 if math.isnan(after) else after), name))
    return sorted(drops, reverse=True), sorted(incomparable)


def gate(
    *, candidate: outcomes.Evaluation, champion: outcomes.Evaluation | None, policy: rules.PromotionSpec
) -> Verdict:
    """Decide whether ``candidate`` becomes champion under ``policy``."""
    metric = policy.metric
    value = candidate.metric(metric)
    if math.isnan(value):
        return Verdict(promote=False, reason=f"candidate {metric} is not a number (the evaluation found nothing)")
    if champion is None:
        if value + EPSILON >= policy.first_model_min:
            return Verdict(
                promote=True, reason=f"first model: {metric} {value:.4f} >= first_model_min {policy.first_model_min:g}"
            )
        return Verdict(
            promote=False, reason=f"first model: {metric} {value:.4f} < first_model_min {policy.first_model_min:g}"
        )
    best = champion.metric(metric)
    best = 0.0 if math.isnan(best) else best
    gain = value - best
    if not gain > policy.min_improvement + EPSILON:
        return Verdict(
            promote=False,
            reason=(
                f"{metric} {value:.4f} vs champion {best:.4f}: improvement {gain:+.4f} is not more than "
                f"min_improvement {policy.min_improvement:g}"
            ),
        )
    note = ""
    if policy.max_class_drop is not None:
        drops, incomparable = _class_drops(candidate, champion)
        if drops and drops[0][0] > policy.max_class_drop + EPSILON:
            drop, name = drops[0]
            return Verdict(
                promote=False,
                reason=(
                    f"{metric} improves {gain:+.4f} but class {name} drops {drop:.4f} "
                    f"(> max_class_drop {policy.max_class_drop:g})"
                ),
            )
        if incomparable:
            note = f"; classes without a champion AP, not compared: {', '.join(incomparable)}"
    return Verdict(
        promote=True,
        reason=f"{metric} {value:.4f} beats champion {best:.4f} by {gain:+.4f} (> {policy.min_improvement:g}){note}",
    )
