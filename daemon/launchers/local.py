"""The local launcher: one child process per run, running the pipeline with ``kfp.local``.

``kfp.local`` keeps its configuration in process-global state and a training run takes minutes, so each
run is ``python -m pipelines.local_run spec.json`` in its own process group, in its own folder under
``kfp.local_pipeline_root/RUN_KEY/``:

- ``spec.json`` (written before the child starts), ``pid.json`` (its process id and start time),
  ``log.txt`` (its output) and ``outcome.json`` (written by the child when it ends), every file that is read
  back written atomically (temporary file, fsync, rename): a crash leaves the old content or the new;
- the folder is the run's identity: a second submit of the same run key finds it and starts nothing;
- after a daemon restart, ``find`` re-attaches to a child that still runs (same pid *and* same start time,
  so a recycled pid is not mistaken for it) or reports the run abandoned if the child died without an
  outcome. Running children are left alone on shutdown.

Capacity is limited (``kfp.local_max_concurrent_runs``, one by default on a laptop).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from daemon import atomicfile, errors, logs
from daemon.launchers import base
from daemon.model import ids, runs

log = logs.get_logger(__name__)

#: Seconds a cancelled run's processes get to end after SIGTERM before SIGKILL.
CANCEL_GRACE_S = 10.0

#: Children this process started, by pid, so that finished ones are reaped (no zombies) whichever launcher
#: instance asks, and running ones are not garbage-collected while they run.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap() -> None:
    for pid, child in list(_CHILDREN.items()):
        if child.poll() is not None:
            del _CHILDREN[pid]


def _start_time(pid: int) -> str | None:
    """When a live process started (psutil, so not only on Linux), or None if it is gone or a zombie."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # it has finished
            return None
        return f"{process.create_time():.3f}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def _finishing(pid: int) -> bool:
    """True when the child wrote its outcome (into its working folder) and is only exiting."""
    try:
        return (Path(psutil.Process(pid).cwd()) / "outcome.json").exists()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class LocalLauncher(base.Launcher):
    """Runs pipelines as child processes on this machine.

    Args:
        root: folder holding one sub-folder per run.
        max_concurrent: children allowed at once.
        command: what runs a spec (the spec path is appended).
        env: the children's environment (credentials for S3 and MLflow come from here).
    """

    name = "local"

    def __init__(
        self,
        *,
        root: Path,
        max_concurrent: int = 1,
        command: Sequence[str] = (sys.executable, "-m", "pipelines.local_run"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root.resolve()  # children run in their own folders: relative paths would break
        self.max_concurrent = max_concurrent
        self.command = list(command)
        self.env = dict(env) if env is not None else None

    def close(self) -> None:
        """Reap children that have written their outcome and are exiting; running ones are left alone."""
        deadline = time.monotonic() + 5
        for pid, child in list(_CHILDREN.items()):
            if child.poll() is None and _finishing(pid):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(max(0.0, deadline - time.monotonic()))
        _reap()

    def folder(self, run_key: ids.RunKey) -> Path:
        return self.root / run_key

    def running(self) -> list[ids.RunKey]:
        """Run keys whose child process is alive."""
        if not self.root.is_dir():
            return []
        alive = []
        for folder in sorted(self.root.iterdir()):
            status = self.find(ids.RunKey(folder.name))
            if status is not None and status.state is runs.RunState.RUNNING:
                alive.append(status.run_key)
        return alive

    def submit(self, run_key: ids.RunKey, spec: dict[str, Any]) -> base.RunStatus:
        existing = self.find(run_key)
        if existing is not None:
            log.info("run_already_submitted", run_key=run_key, state=existing.state.value)
            return existing
        active = self.running()
        if len(active) >= self.max_concurrent:
            raise errors.TemporaryError(
                f"local launcher at capacity ({len(active)}/{self.max_concurrent} runs: {', '.join(active)}); "
                f"run {run_key} waits"
            )
        folder = self.folder(run_key)
        folder.mkdir(parents=True, exist_ok=True)
        spec_path = folder / "spec.json"
        atomicfile.write_json(spec_path, {**spec, "pipeline_root": str(folder / "kfp")})
        with (folder / "log.txt").open("ab") as out:
            child = subprocess.Popen(
                [*self.command, str(spec_path)],
                cwd=folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # SIGTERM to the daemon leaves the run alone
            )
        _CHILDREN[child.pid] = child
        started = _start_time(child.pid)
        atomicfile.write_json(folder / "pid.json", {"pid": child.pid, "start_time": started})
        log.info("run_started", run_key=run_key, pid=child.pid, folder=str(folder))
        return base.RunStatus(run_key=run_key, state=runs.RunState.RUNNING, backend_run_id=f"pid:{child.pid}")

    @staticmethod
    def _alive(pid_info: dict[str, Any]) -> bool:
        """The recorded child still runs (same pid and start time: a recycled pid is not it)."""
        pid, started = pid_info.get("pid"), pid_info.get("start_time")
        return pid is not None and started is not None and _start_time(pid) == started

    def cancel(self, run_key: ids.RunKey, *, reason: str) -> base.RunStatus | None:
        """Record why (``cancel.json``), then SIGTERM the run's process group, SIGKILL after 10 s."""
        status = self.find(run_key)
        if status is None or status.state.final:
            return status
        folder = self.folder(run_key)
        atomicfile.write_json(folder / "cancel.json", {"reason": reason})
        pid_info = atomicfile.read_json(folder / "pid.json")
        pid_info = pid_info if isinstance(pid_info, dict) else {}
        if self._alive(pid_info):
            pid = int(pid_info["pid"])
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + CANCEL_GRACE_S
            while self._alive(pid_info) and time.monotonic() < deadline:
                _reap()
                time.sleep(0.1)
            if self._alive(pid_info):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while self._alive(pid_info):
                    _reap()
                    time.sleep(0.05)
        log.info("run_cancelled", run_key=run_key, reason=reason)
        return self.find(run_key)

    def find(self, run_key: ids.RunKey) -> base.RunStatus | None:
        folder = self.folder(run_key)
        if not (folder / "spec.json").exists():
            return None
        _reap()
        pid_info = atomicfile.read_json(folder / "pid.json")
        if not isinstance(pid_info, dict):
            pid_info = {}  # missing, or torn by a daemon of an older version: the child was never recorded
        backend_id = f"pid:{pid_info.get('pid', '?')}"
        outcome = atomicfile.read_json(folder / "outcome.json")
        cancelled = atomicfile.read_json(folder / "cancel.json")
        if isinstance(cancelled, dict) and not isinstance(outcome, dict) and not self._alive(pid_info):
            return base.RunStatus(
                run_key=run_key,
                state=runs.RunState.FAILED,
                backend_run_id=backend_id,
                error=f"cancelled: {cancelled.get('reason', 'no reason given')}",
            )
        if isinstance(outcome, dict):
            state = runs.RunState.SUCCEEDED if outcome.get("state") == "succeeded" else runs.RunState.FAILED
            return base.RunStatus(
                run_key=run_key,
                state=state,
                backend_run_id=backend_id,
                output=outcome.get("output") or {},
                error=outcome.get("error"),
            )
        pid = pid_info.get("pid")
        if self._alive(pid_info):
            return base.RunStatus(run_key=run_key, state=runs.RunState.RUNNING, backend_run_id=backend_id)
        if pid is None:
            # Spec written but the child never recorded: a crash between the two. Treat as abandoned.
            return base.RunStatus(
                run_key=run_key,
                state=runs.RunState.ABANDONED,
                backend_run_id=backend_id,
                error="the run's process was never recorded (the daemon stopped while starting it)",
            )
        return base.RunStatus(
            run_key=run_key,
            state=runs.RunState.ABANDONED,
            backend_run_id=backend_id,
            error=f"process {pid} ended without an outcome (killed or crashed); see {folder / 'log.txt'}",
        )
