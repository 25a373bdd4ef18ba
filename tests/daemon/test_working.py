"""Workers: a pass, then a wait of the interval, stretched after a long pass; a wake-up cuts the wait short."""

from __future__ import annotations

import threading
import time

import pytest

from daemon.runtime import working
from tests.support.waiting import wait_until


def test_a_long_pass_stretches_the_wait_and_a_wake_up_still_runs_at_once() -> None:
    starts: list[float] = []
    ends: list[float] = []

    def slow_pass() -> None:
        starts.append(time.monotonic())
        time.sleep(0.3)
        ends.append(time.monotonic())

    worker = working.Worker(name="reconcile", work=slow_pass, interval_s=0.05, stretch=10.0)
    worker.start()
    try:
        wait_until(lambda: len(ends) == 1, 10, "the first pass")
        assert worker.last_duration_s >= 0.3
        assert worker.wait_s() == 10.0 * worker.last_duration_s >= 3.0
        time.sleep(1.0)
        assert len(starts) == 1  # not listed back to back: the wait is ten times the pass, not 0.05 s
        woken = time.monotonic()
        worker.wake()  # a gap in a notification stream asks for a reconcile now
        wait_until(lambda: len(starts) == 2, 2.5, "the pass a wake-up asked for")
        assert starts[1] - woken < 2.5 < worker.wait_s()
    finally:
        worker.stop()
        worker.join(5)


def test_without_a_stretch_the_interval_alone_counts() -> None:
    done = threading.Event()
    worker = working.Worker(name="tracking", work=lambda: time.sleep(0.2) or done.set(), interval_s=0.05)
    worker.run_once()
    assert done.is_set() and worker.last_duration_s >= 0.2 and worker.wait_s() == 0.05


def test_a_pass_with_more_to_do_is_followed_after_its_stretch_not_the_interval() -> None:
    """A reconcile shard that did not end its cycle: the next shard comes after a few times the pass (the
    listing is never back to back), the next cycle after the whole interval."""
    more = True

    def shard() -> object:
        time.sleep(0.05)
        return working.MORE if more else None

    worker = working.Worker(name="reconcile", work=shard, interval_s=300.0, stretch=3.0)
    worker.run_once()
    assert worker.wait_s() == 3.0 * worker.last_duration_s < 1.0
    more = False
    worker.run_once()
    assert worker.wait_s() == 300.0


def test_the_loop_passes_at_once_when_woken_after_a_quiet_spell_and_keeps_its_gap_in_a_burst() -> None:
    from daemon import reactor

    gap = reactor.MIN_PASS_GAP_S
    # Woken long after the last pass (a webhook on an idle daemon): no wait at all.
    assert reactor.pass_delay(since_last_pass_s=1.0, took_s=0.002) == 0.0
    # Woken right after a pass (a burst of deliveries): the rest of the gap, then the next pass.
    assert reactor.pass_delay(since_last_pass_s=0.01, took_s=0.002) == pytest.approx(gap - 0.01)
    # A long pass: the gap is as long as the pass, counted from its end.
    assert reactor.pass_delay(since_last_pass_s=0.1, took_s=0.5) == pytest.approx(0.4)
