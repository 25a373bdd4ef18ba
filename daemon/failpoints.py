"""Failpoints: the named places where fault-injection tests kill the process with SIGKILL, as the OOM killer,
a node failure or ``kubectl delete --force`` would, to prove that every boundary is crash-safe.

Off unless ``RETRAIN_FAILPOINT`` names one, as ``NAME`` (the first pass), ``NAME@N`` (the N-th pass) or
``NAME!once`` (the first pass of any process, once: for a task that its orchestrator retries); nothing sets
it outside the fault and cluster tests. With ``RETRAIN_FAILPOINT_MARKERS=DIR``, a failpoint that fires
first leaves ``DIR/NAME.PID`` behind, so that a test can prove its kill point was reached (and ``!once``
knows it already fired). The places:

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
from pathlib import Path

from daemon import constants

_lock = threading.Lock()
_passes: dict[str, int] = {}


def hit(name: str) -> None:
    """Die here when this failpoint is armed and its pass has come."""
    armed = os.environ.get(constants.ENV_FAILPOINT)
    if not armed:
        return
    target, once, _ = armed.partition("!once")
    target, _, nth = target.partition("@")
    if target != name:
        return
    markers = os.environ.get(constants.ENV_FAILPOINT_MARKERS)
    with _lock:
        _passes[name] = _passes.get(name, 0) + 1
        if _passes[name] < int(nth or 1):
            return
        if markers:
            folder = Path(markers)
            if once and any(folder.glob(f"{name}.*")):
                return
            marker = folder / f"{name}.{os.getpid()}"
            marker.write_text(str(_passes[name]))
            fd = os.open(marker, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
