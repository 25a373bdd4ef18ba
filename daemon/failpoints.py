"""Failpoints: the named places where fault-injection tests kill the process with SIGKILL, as the OOM killer,
a node failure or ``kubectl delete --force`` would, to prove that every boundary is crash-safe.

Off unless ``RETRAIN_FAILPOINT`` names one, as ``NAME`` (the first pass) or ``NAME@N`` (the N-th pass);
nothing sets it outside ``tests/test_faults.py``. The places:

- ``event_received``: a source has events in hand, nothing is journaled yet;
- ``event_journaled``: the events are committed, the source has not acknowledged them (webhook reply);
- ``intent_written``: a launch's intent is committed, the launcher was not called;
- ``submitted``: the launcher started the run, the journal does not say so yet;
- ``run_finished``: the launcher reports the run's end, nothing of it is journaled yet;
- ``promotion_done``: in the pipeline, the champion alias moved, no outcome is written yet.
"""

from __future__ import annotations

import os
import signal
import threading

from daemon import constants

_lock = threading.Lock()
_passes: dict[str, int] = {}


def hit(name: str) -> None:
    """Die here when this failpoint is armed and its pass has come."""
    armed = os.environ.get(constants.ENV_FAILPOINT)
    if not armed:
        return
    target, _, nth = armed.partition("@")
    if target != name:
        return
    with _lock:
        _passes[name] = _passes.get(name, 0) + 1
        if _passes[name] >= int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
