"""`make run`'s demo: a full cycle on the embedded set-up, then it keeps running; the README describes it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.waiting import stays

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


RETRAIN = str(Path(sys.executable).with_name("retrain"))


def retrain(*args: str, config: str) -> subprocess.CompletedProcess[str]:
    """A ``retrain`` command run the way the demo tells the user to: from elsewhere, with RETRAIN_CONFIG."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env["RETRAIN_CONFIG"] = config
    return subprocess.run([RETRAIN, *args], cwd="/", env=env, capture_output=True, text=True, timeout=120, check=False)


def test_demo_shows_a_full_cycle_then_keeps_running(tmp_path: Path) -> None:
    """The real demo (30 epochs): the first model learns enough to pass a first_model_min above zero, the
    second is gated on the same images, and the ordinary commands find the demo's state."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env.update(PYTHONUNBUFFERED="1", DEMO_HTTP_PORT="0")
    log_path = tmp_path / "demo.log"
    with log_path.open("wb") as log:
        demo = subprocess.Popen(
            [sys.executable, "-m", "daemon.demo"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 600
        while "the daemon keeps running" not in log_path.read_text() and time.monotonic() < deadline:
            assert demo.poll() is None, log_path.read_text()[-3000:]
            time.sleep(1)
        text = log_path.read_text()
        assert "the daemon keeps running" in text, text[-3000:]
        for expected in (
            "=== batch 1: 96 labelled images arrive in 3 bursts",
            "reason='32/40 new labels'",
            "code=quiet_period",
            "rule_fired",
            "reason='96 new labels (need 40), quiet for",
            "run_started",
            "training_progress",
            "epoch=1 epochs=30",
            "decision=promoted",
            "first model: map50_95",
            "=== batch 2: 48 more images",
            "=== model version 1: promoted",
            "=== model version 2:",
        ):
            assert expected in text, expected
        # The HTTP line names the real port; the JSON API shows the champion the log announced.
        url = re.search(r"HTTP: (http://127\.0\.0\.1:\d+)/api/v1/status", text)
        assert url is not None, text[-3000:]
        status = httpx.get(url.group(1) + "/api/v1/status", timeout=10).json()
        [champion] = status["champions"]
        assert champion["model"] == "demo-detector"
        assert champion["champion"]["version"] in ("1", "2")
        assert httpx.get(url.group(1) + "/healthz", timeout=10).status_code == 200
        # The dashboard's address is printed, and its document holds both judged versions of the model.
        assert f"dashboard: {url.group(1)}/ " in text
        assert "retrain-daemon" in httpx.get(url.group(1) + "/", timeout=10).text
        [model] = httpx.get(url.group(1) + "/api/v1/dashboard", timeout=30).json()["models"]
        assert [v["version"] for v in model["versions"]] == ["1", "2"]
        # The first model learned: its mAP50-95 clears the rule's first_model_min, which is above zero.
        first = re.search(r"first model: map50_95 ([0-9.]+) >= first_model_min ([0-9.]+)", text)
        assert first is not None, text[-3000:]
        assert float(first.group(1)) > float(first.group(2)) > 0
        # The second run is gated against the champion on the same images, with the numbers.
        second = re.search(r"=== model version 2: (promoted|rejected) \((.+)\)", text)
        assert second is not None and "champion" in second.group(2), text[-3000:]
        # The one printed line points every command at the demo's state.
        exported = re.search(r"export RETRAIN_CONFIG=(\S+)", text)
        assert exported is not None, text[-3000:]
        config = exported.group(1)
        run_keys = re.findall(r"rule_fired .* run_key=(demo-[0-9a-f]+)", text)
        assert len(run_keys) == 2
        status = retrain("status", config=config)
        assert status.returncode == 0, status.stderr
        for run_key in run_keys:
            assert f"{run_key} succeeded" in status.stdout, status.stdout
        assert f"demo-detector: v{champion['champion']['version']} " in status.stdout, status.stdout
        explained = retrain("explain", "demo", config=config)
        assert explained.returncode == 0 and "rule demo (" in explained.stdout, explained.stdout + explained.stderr
        rolled = retrain("rollback", "demo-detector", "--reason", "test", config=config)
        if second.group(1) == "promoted":
            assert rolled.returncode == 0, rolled.stderr
            assert "champion moved from v2 to v1" in rolled.stdout
            assert "demo-detector: v1 (rollback" in retrain("status", config=config).stdout
        else:
            assert rolled.returncode == 1 and "demo-detector" in rolled.stderr, rolled.stdout + rolled.stderr
        stays(lambda: demo.poll() is None, 2, "the demo running on as a daemon")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
        assert "daemon_stopped" in log_path.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
