"""Capped exponential backoff with full jitter: a pure function of the attempt and a random draw.

``delay = uniform(0, min(cap, base * 2**attempt))`` (the "full jitter" of the AWS architecture blog): many
daemons reconnecting after one outage spread out instead of arriving together.
"""

from __future__ import annotations


def delay_s(attempt: int, *, base_s: float, cap_s: float, draw: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based); ``draw`` is a random number in [0, 1)."""
    if attempt < 0 or base_s <= 0 or cap_s <= 0 or not 0 <= draw < 1:
        raise ValueError("attempt >= 0, base_s > 0, cap_s > 0 and 0 <= draw < 1")
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt, 62))
    return ceiling * draw
