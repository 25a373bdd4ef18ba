"""Backoff delays for loops that keep their own schedule, from tenacity's wait strategies.

The listen stream reconnects forever and the run tracker polls each run on its own clock: neither is one
call to retry, so they ask tenacity's strategies for the delay of attempt N instead of wrapping a call.
"""

from __future__ import annotations

from collections.abc import Callable

import tenacity


def _state(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt + 1
    return state


def full_jitter(*, base_s: float, cap_s: float) -> Callable[[int], float]:
    """Delay before retry ``attempt`` (0-based): uniform in ``[0, min(cap, base * 2**attempt)]`` ("full
    jitter"), so that many clients reconnecting after one outage spread out."""
    wait = tenacity.wait_random_exponential(multiplier=base_s, max=cap_s)
    return lambda attempt: float(wait(_state(attempt)))


def exponential(*, base_s: float, cap_s: float) -> Callable[[int], float]:
    """Delay before retry ``attempt`` (0-based): ``min(cap, base * 2**attempt)``."""
    wait = tenacity.wait_exponential(multiplier=base_s, max=cap_s)
    return lambda attempt: float(wait(_state(attempt)))
