"""Workers: background threads that do the daemon's slow, external work, so the loop never waits on a service.

The loop (deciding) only reads and writes the journal. Everything that talks to S3, MLflow or KFP runs in a
worker: launching intents, tracking runs, drift checks, reconciles, keeping sources watched. A hung
service stalls its worker, never the loop, so ``/healthz`` keeps telling the truth about the loop and the
worker's own status says what it waits for.

A worker runs :meth:`Worker.work` every ``interval_s`` seconds, or at once when woken. ``work`` returns
normally or raises; a :class:`~daemon.errors.RetrainError` is logged as a warning, anything else (a bug)
is logged with its traceback and counted in ``retrain_loop_errors_total{part=...}``; the worker goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from daemon import errors, logs

log = logs.get_logger(__name__)

#: What a pass returns when it left work for the next one (a reconcile shard short of its cycle's end): with a
#: stretch, the next pass comes after the stretched pause alone, not after the whole interval.
MORE = "more"


class Worker:
    """One background thread around a ``work`` function.

    Args:
        name: the worker's name in logs, metrics and thread listings.
        work: what one pass does.
        interval_s: seconds between passes when nobody wakes the worker.
        on_crash: called with the worker's name when a pass raised something unexpected (counts it).
        stretch: the wait after a pass is at least this many times the pass's duration (None: the interval
            alone): a reconcile of a bucket that takes minutes to list does not list back to back.
    """

    def __init__(
        self,
        *,
        name: str,
        work: Callable[[], object],
        interval_s: float,
        on_crash: Callable[[str], None] = lambda name: None,
        stretch: float | None = None,
    ) -> None:
        self.name = name
        self.stretch = stretch
        self.last_duration_s = 0.0
        """How long the last pass took, in seconds."""
        self.work = work
        self.interval_s = interval_s
        self.on_crash = on_crash
        self.last_pass_at: float | None = None
        """Monotonic time the last pass ended (whatever its result)."""
        self.last_error: str | None = None
        self.more = False
        """The last pass returned :data:`MORE`."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass now instead of at the end of the interval."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_s(self) -> float:
        """Seconds to wait before the next pass unless woken: the interval, stretched after a long pass."""
        if self.stretch is None:
            return self.interval_s
        if self.more:
            return self.stretch * self.last_duration_s
        return max(self.interval_s, self.stretch * self.last_duration_s)

    def run_once(self) -> None:
        """One pass, with failures turned into log lines (what the thread calls; tests call it too)."""
        started = time.monotonic()
        self.more = False
        try:
            self.more = self.work() == MORE
            self.last_error = None
        except errors.RetrainError as exc:
            self.last_error = str(exc)
            log.warning("worker_pass_failed", worker=self.name, error=str(exc), action="retried next pass")
        except Exception as exc:  # a bug must not end the worker; it is logged with its traceback and counted
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            self.on_crash(self.name)
            log.exception("worker_pass_crashed", worker=self.name, action="retried next pass")
        finally:
            self.last_pass_at = time.monotonic()
            self.last_duration_s = self.last_pass_at - started
            if not self.more and self.wait_s() > self.interval_s:
                log.info(
                    "worker_interval_stretched",
                    worker=self.name,
                    pass_s=round(self.last_duration_s, 1),
                    next_in_s=round(self.wait_s(), 1),
                    interval_s=self.interval_s,
                )

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            self.run_once()
            self._wake.wait(self.wait_s())
