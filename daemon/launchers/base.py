"""The launcher contract: submit by run key, find by run key, never twice.

Every method takes the run key the journal committed before submission. ``submit`` is idempotent on it (a
second submit of the same key returns the first run), and ``find`` answers for a run key after a daemon
restart, so an intent left behind by a crash resolves to the run that exists instead of a second one.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon import errors
from daemon.model import ids, runs


@dataclass(frozen=True, kw_only=True)
class RunStatus:
    """What the launcher knows about one run."""

    run_key: ids.RunKey
    state: runs.RunState
    backend_run_id: str
    output: dict[str, Any] = field(default_factory=dict)
    """The pipeline's result (the promotion decision) once it succeeded."""
    error: str | None = None
    retryable: bool = False
    """The run failed and the backend can run its failed steps again within the retry budget."""
    pending_since: datetime | None = None
    """Since when the run (or one of its tasks) has been waiting to start: a pod Pending on a cluster."""
    pending_reason: str | None = None
    """What is waiting, and where to look (the daemon has no Kubernetes API to ask why)."""


class Launcher(abc.ABC):
    name: str

    @abc.abstractmethod
    def submit(self, run_key: ids.RunKey, spec: dict[str, Any]) -> RunStatus:
        """Start the run, or return the run already started under this key.

        Raises:
            errors.TemporaryError: no capacity or the backend is unreachable now (nothing was started).
        """

    @abc.abstractmethod
    def find(self, run_key: ids.RunKey) -> RunStatus | None:
        """The run started under this key, or None if none was."""

    def cancel(self, run_key: ids.RunKey, *, reason: str) -> RunStatus | None:
        """Stop the run started under this key (``retrain cancel``); returns its status after the request,
        or None if no run was started under it. A run that already ended is left as it is. Its end is then
        recorded like any other (failed, with ``reason`` where the backend keeps one).

        Raises:
            errors.PermanentError: this launcher cannot cancel runs.
            errors.TemporaryError: the backend is unreachable now.
        """
        raise errors.PermanentError(f"the {self.name} launcher cannot cancel runs")

    def retry(self, status: RunStatus) -> RunStatus:
        """Run the failed steps of a ``retryable`` run again, keeping what succeeded; returns its new status.

        Raises:
            errors.PermanentError: this launcher cannot retry runs, or the backend refused.
            errors.TemporaryError: the backend is unreachable now.
        """
        raise errors.PermanentError(f"the {self.name} launcher cannot retry runs")

    def close(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the launcher holds; runs in progress are left alone."""
