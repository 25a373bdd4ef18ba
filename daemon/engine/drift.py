"""Drift statistics between class histograms: pure functions over counts.

Histograms are mappings from class id to count. Both sides are normalised to probabilities over the union
of their classes; a class missing on one side has probability 0 there.

- Jensen-Shannon divergence, base 2: symmetric, 0 for identical mixes, 1 for disjoint ones.
- Population stability index: sum over classes of (p - q) * ln(p / q), with empty bins smoothed by
  ``epsilon`` so a class that appears only on one side gives a large finite value instead of infinity.
  Rule of thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

Histogram = Mapping[str, float]

#: Probability given to an empty bin by PSI, so that log(p / 0) stays finite.
PSI_EPSILON = 1e-4


def _probabilities(reference: Histogram, current: Histogram) -> tuple[list[float], list[float]]:
    classes = sorted(set(reference) | set(current))
    total_p = float(sum(reference.values()))
    total_q = float(sum(current.values()))
    if total_p <= 0 or total_q <= 0:
        raise ValueError("both histograms need at least one count")
    if any(v < 0 for v in (*reference.values(), *current.values())):
        raise ValueError("histogram counts cannot be negative")
    return (
        [reference.get(c, 0) / total_p for c in classes],
        [current.get(c, 0) / total_q for c in classes],
    )


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log2(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def jensen_shannon(reference: Histogram, current: Histogram) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two class histograms."""
    p, q = _probabilities(reference, current)
    m = [(pi + qi) / 2 for pi, qi in zip(p, q, strict=True)]
    return max(0.0, min(1.0, (_kl(p, m) + _kl(q, m)) / 2))


def psi(reference: Histogram, current: Histogram, *, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index of ``current`` against ``reference``."""
    p, q = _probabilities(reference, current)
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        a, b = max(pi, epsilon), max(qi, epsilon)
        total += (b - a) * math.log(b / a)
    return total


STATISTICS = {"jensen_shannon": jensen_shannon, "psi": psi}


def divergence(statistic: str, reference: Histogram, current: Histogram) -> float:
    """Compute the named statistic (``jensen_shannon`` or ``psi``)."""
    try:
        function = STATISTICS[statistic]
    except KeyError:
        raise ValueError(f"unknown statistic {statistic!r}: use one of {', '.join(STATISTICS)}") from None
    return function(reference, current)
