"""The local launcher: child processes per run, idempotent by run key, re-attached after a restart."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from daemon import errors
from daemon.launchers import local
from daemon.model import ids, runs
from tests.support.waiting import wait_until

SLEEPER = (sys.executable, "-c", "import sys, time; time.sleep(float(open(sys.argv[1]).read() and 30))")


def wait_state(launcher: local.LocalLauncher, key: ids.RunKey, state: runs.RunState, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = launcher.find(key)
        if found is not None and found.state is state:
            return
        time.sleep(0.1)
    raise AssertionError(f"{key} never reached {state}: {launcher.find(key)}")


def test_submit_is_idempotent_and_a_restarted_daemon_reattaches(tmp_path: Path) -> None:
    launcher = local.LocalLauncher(root=tmp_path, command=SLEEPER)
    key = ids.RunKey("pets-d1")
    first = launcher.submit(key, {"arguments": {}})
    assert first.state is runs.RunState.RUNNING
    again = launcher.submit(key, {"arguments": {}})
    assert again.backend_run_id == first.backend_run_id  # no second process
    pid = int(first.backend_run_id.removeprefix("pid:"))

    restarted = local.LocalLauncher(root=tmp_path, command=SLEEPER)  # a new daemon process
    found = restarted.find(key)
    assert found is not None and found.state is runs.RunState.RUNNING
    assert restarted.running() == [key]

    os.kill(pid, signal.SIGKILL)  # the run dies without an outcome
    wait_state(restarted, key, runs.RunState.ABANDONED)
    assert "ended without an outcome" in (restarted.find(key).error or "")  # type: ignore[union-attr]


def test_capacity_is_limited(tmp_path: Path) -> None:
    launcher = local.LocalLauncher(root=tmp_path, command=SLEEPER, max_concurrent=1)
    first = launcher.submit(ids.RunKey("a"), {})
    with pytest.raises(errors.TemporaryError, match=r"local launcher at capacity \(1/1 runs: a\); run b waits"):
        launcher.submit(ids.RunKey("b"), {})
    assert launcher.find(ids.RunKey("b")) is None
    os.kill(int(first.backend_run_id.removeprefix("pid:")), signal.SIGKILL)
    wait_state(launcher, ids.RunKey("a"), runs.RunState.ABANDONED)


def test_unknown_run_key(tmp_path: Path) -> None:
    assert local.LocalLauncher(root=tmp_path).find(ids.RunKey("nope")) is None


@pytest.mark.slow
def test_a_real_pipeline_child_reports_its_failure(tmp_path: Path) -> None:
    """The real `python -m pipelines.local_run`, with a manifest that does not exist: a clear failed outcome."""
    launcher = local.LocalLauncher(root=tmp_path)
    key = ids.RunKey("pets-dmissing")
    spec = {
        "pipeline": {"retries": 0},
        "shape": {"tune": False, "parallelism": 1, "gpus": 0},
        "arguments": {
            "run_key": key,
            "rule": "pets",
            "manifest_uri": f"file://{tmp_path}/missing.json",
            "registered_name": "pets-detector",
            "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        },
    }
    launcher.submit(key, spec)
    wait_state(launcher, key, runs.RunState.FAILED, timeout_s=180)
    status = launcher.find(key)
    assert status is not None and "prepare-dataset" in (status.error or "")
    outcome = json.loads((tmp_path / key / "outcome.json").read_text())
    assert outcome["state"] == "failed"
    assert "missing.json" in (tmp_path / key / "log.txt").read_text()


def test_cancel_stops_the_whole_process_group_and_the_run_ends_failed_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A child that ignores SIGTERM and starts a grandchild: SIGKILL after the grace, and the group goes.
    stubborn = (
        sys.executable,
        "-c",
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)",
    )
    launcher = local.LocalLauncher(root=tmp_path, command=stubborn)
    key = ids.RunKey("pets-d9")
    started = launcher.submit(key, {})
    pid = int(started.backend_run_id.removeprefix("pid:"))
    time.sleep(0.5)  # the grandchild is up
    members = [p.pid for p in psutil.process_iter() if _group_of(p.pid) == pid]
    assert len(members) >= 2
    monkeypatch.setattr(local, "CANCEL_GRACE_S", 1.0)
    done = launcher.cancel(key, reason="by ops: wrong data")
    assert done is not None and done.state is runs.RunState.FAILED
    assert done.error == "cancelled: by ops: wrong data"
    wait_until(lambda: not [p for p in members if _running(p) and _group_of(p) == pid], 10, "the group to end")
    assert local.LocalLauncher(root=tmp_path).find(key) == done  # as a restarted daemon reads it
    assert launcher.cancel(key, reason="again") == done  # an ended run is left as it is
    assert launcher.cancel(ids.RunKey("nope"), reason="x") is None


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
