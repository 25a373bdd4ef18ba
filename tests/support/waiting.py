"""Waiting in tests: poll a condition with a deadline, never sleep a fixed time and hope."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float,
    what: str,
    *,
    every_s: float = 0.1,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll ``predicate`` until it is true; fail naming ``what`` after ``timeout_s`` seconds, with what
    ``explain`` says about the state it was stuck in (so that a timeout in CI can be understood afterwards)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            details = f"\n{explain()}" if explain is not None else ""
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}{details}")
        time.sleep(every_s)


def stays(predicate: Callable[[], bool], for_s: float, what: str, *, every_s: float = 0.2) -> None:
    """Check that ``predicate`` holds for the whole of ``for_s`` seconds (something must *not* happen)."""
    deadline = time.monotonic() + for_s
    while time.monotonic() < deadline:
        assert predicate(), f"{what} stopped holding"
        time.sleep(every_s)
