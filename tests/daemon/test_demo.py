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


def test_demo_shows_a_full_cycle_then_keeps_running(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env.update(DEMO_EPOCHS="2", PYTHONUNBUFFERED="1", DEMO_HTTP_PORT="0")
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
            "=== batch 1: 48 labelled images arrive in 3 bursts",
            "reason='16/40 new labels'",
            "code=quiet_period",
            "rule_fired",
            "reason='48 new labels (need 40), quiet for",
            "run_started",
            "training_progress",
            "epoch=1 epochs=2",
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
        stays(lambda: demo.poll() is None, 2, "the demo running on as a daemon")
        demo.send_signal(signal.SIGINT)
        assert demo.wait(60) == 0
        assert "daemon_stopped" in log_path.read_text()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)
