"""The promotion gate: table-driven cases and the property that a worse model never becomes champion."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.engine import gating
from daemon.model import outcomes, rules


def policy(**kwargs: object) -> rules.PromotionSpec:
    return rules.PromotionSpec(**kwargs)  # type: ignore[arg-type]


def scores(value: float, **per_class: float) -> outcomes.Evaluation:
    return outcomes.Evaluation(map50_95=value, map50=min(1.0, value + 0.2), per_class=per_class)


@pytest.mark.parametrize(
    ("candidate", "champion", "spec", "promote", "reason"),
    [
        (scores(0.30), None, policy(first_model_min=0.1), True, "first model: map50_95 0.3000 >= first_model_min 0.1"),
        (scores(0.05), None, policy(first_model_min=0.1), False, "first model: map50_95 0.0500 < first_model_min 0.1"),
        (scores(0.41), scores(0.40), policy(min_improvement=0.01), False, "is not more than min_improvement 0.01"),
        (scores(0.40), scores(0.40), policy(), False, "improvement +0.0000 is not more than min_improvement 0"),
        (scores(0.4101), scores(0.40), policy(min_improvement=0.01), True, "beats champion 0.4000 by +0.0101"),
        (
            scores(0.45, **{"0": 0.5, "1": 0.2}),
            scores(0.40, **{"0": 0.4, "1": 0.3}),
            policy(max_class_drop=0.05),
            False,
            "class 1 drops 0.1000 (> max_class_drop 0.05)",
        ),
        (
            scores(0.45, **{"0": 0.5, "1": 0.28}),
            scores(0.40, **{"0": 0.4, "1": 0.3}),
            policy(max_class_drop=0.05),
            True,
            "beats champion",
        ),
        (scores(0.30), scores(0.40), policy(metric="map50"), False, "map50 0.5000 vs champion 0.6000"),
    ],
)
def test_gate(
    candidate: outcomes.Evaluation,
    champion: outcomes.Evaluation | None,
    spec: rules.PromotionSpec,
    promote: bool,
    reason: str,
) -> None:
    verdict = gating.gate(candidate=candidate, champion=champion, policy=spec)
    assert verdict.promote is promote
    assert reason in verdict.reason


def test_float_rounding_never_lets_an_equal_model_through() -> None:
    """0.41 vs 0.40 + 0.01 is equal, not better (MLflow's own threshold check got this wrong)."""
    assert not gating.gate(candidate=scores(0.41), champion=scores(0.40), policy=policy(min_improvement=0.01)).promote


unit = st.floats(min_value=0, max_value=1, allow_nan=False)


@given(candidate=unit, champion=unit, margin=st.floats(min_value=0, max_value=0.5), drop=st.none() | unit.filter(bool))
def test_a_worse_model_never_becomes_champion(
    candidate: float, champion: float, margin: float, drop: float | None
) -> None:
    verdict = gating.gate(
        candidate=scores(candidate),
        champion=scores(champion),
        policy=policy(min_improvement=margin, max_class_drop=drop),
    )
    if verdict.promote:
        assert candidate > champion + margin
    if candidate <= champion:
        assert not verdict.promote


NAN = float("nan")


@pytest.mark.parametrize(
    ("candidate", "champion", "promote", "reason"),
    [
        # A NaN somewhere else must not switch the per-class guard off (class "dog" drops 0.8 -> 0.1).
        (scores(0.5, cat=NAN, dog=0.1), scores(0.4, cat=0.3, dog=0.8), False, "class dog drops 0.7000"),
        (scores(0.5, cat=0.3, dog=0.1), scores(0.4, cat=NAN, dog=0.8), False, "class dog drops 0.7000"),
        # A class the candidate no longer predicts is a drop to 0, not a class to skip.
        (scores(0.5, cat=0.4), scores(0.4, cat=0.3, dog=0.2), False, "class dog drops 0.2000"),
        # The candidate finding nothing for a class is a drop too.
        (scores(0.5, cat=0.4, dog=NAN), scores(0.4, cat=0.3, dog=0.2), False, "class dog drops 0.2000"),
        # A champion class without an AP cannot be compared: said, not fatal.
        (scores(0.5, cat=0.4, dog=0.2), scores(0.4, cat=0.3, dog=NAN), True, "not compared: dog"),
        (scores(NAN), scores(0.4), False, "not a number"),
        (scores(0.3), scores(NAN), True, "beats champion 0.0000"),
    ],
)
def test_nan_and_missing_classes(
    candidate: outcomes.Evaluation, champion: outcomes.Evaluation, promote: bool, reason: str
) -> None:
    verdict = gating.gate(candidate=candidate, champion=champion, policy=policy(max_class_drop=0.05))
    assert (verdict.promote, reason in verdict.reason) == (promote, True), verdict.reason
