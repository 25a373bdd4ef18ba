"""SIGKILL the daemon at several points and restart it: no lost event, no duplicate run, the right champion."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon import reactor, settings
from daemon.engine import deciding
from daemon.model import decisions, ids, runs
from daemon.rules import loading
from pipelines import synthetic
from tests.support.processes import Daemon, count
from tests.support.waiting import stays, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


RULE = """
name: crash
dataset: {{source: "file://{data}", classes: [red-box, green-box, blue-box]}}
model: {{registered_name: crash-detector, base: yolov8n.yaml}}
triggers:
  - new_labels: {{min_new_labels: 10, quiet_period: 4s, max_wait: 10m}}
training: {{epochs: 2, imgsz: 128, batch: 16, gpus: 0}}
promotion: {{first_model_min: 0.0}}
limits: {{cooldown: 0s}}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "rules" / "crash.yaml").write_text(RULE.format(data=tmp_path / "data"))
    d = Daemon(tmp_path)
    yield d
    if d.process is not None and d.process.poll() is None:
        d.kill()


def test_killed_after_events_journaled_and_during_a_run(daemon: Daemon) -> None:
    daemon.start()
    synthetic.generate(daemon.tmp / "data", count=16, seed=1)
    # 1. Killed after the events are journaled, before the quiet period ends: nothing is lost.
    wait_until(lambda: count(daemon, lambda j: j.event_count()) == 32, 60, "32 journaled events")
    daemon.kill()
    assert count(daemon, lambda j: len(j.runs())) == 0
    daemon.start()
    # 2. Killed while the pipeline child trains: the child goes on, the restart re-attaches.
    wait_until(lambda: count(daemon, lambda j: len(j.runs())) == 1, 120, "the run's intent")
    wait_until(lambda: any((daemon.tmp / "runs").glob("*/pid.json")), 60, "the run's process")
    daemon.kill()
    daemon.start()
    wait_until(lambda: count(daemon, lambda j: sum(r.state.final for r in j.runs())) == 1, 600, "the run's outcome")
    stays(lambda: count(daemon, lambda j: len(j.runs())) == 1, 6, "one run (the data was consumed by it)")
    journal = daemon.journal()
    try:
        [run] = journal.runs()
        assert run.state is runs.RunState.SUCCEEDED
        assert journal.event_count() == 32
        [promotion] = journal.promotions("crash-detector")
        assert (promotion.kind, promotion.version, promotion.run_key) == ("promoted", "1", run.run_key)
    finally:
        journal.close()
    assert len(list((daemon.tmp / "runs").iterdir())) == 1
    assert daemon.terminate() == 0  # SIGTERM: a clean stop


def settings_of(d: Daemon) -> settings.Settings:
    return settings.load(environ={k: v for k, v in d.env.items() if k.startswith("RETRAIN_")})


def intend_run(d: Daemon) -> str:
    """Leave the journal as a daemon killed right after committing an intent leaves it; return the run key."""
    config = settings_of(d)
    [loaded] = loading.load_paths([config.rules.path]).rules.values()
    journal = d.journal()
    try:
        now = datetime.now(UTC) + timedelta(seconds=30)  # past the quiet period
        launch = deciding.decide(loaded.rule, journal.rule_state(loaded.rule, now=now), now)
        assert isinstance(launch, decisions.Launch), launch
        assert journal.record_intent(launch, at=now)
        return launch.run_key
    finally:
        journal.close()


def test_killed_after_the_intent_and_after_submitting_before_recording(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)  # the in-process Reactor below sets them; restored afterwards
    # Events journaled by a daemon that is then killed.
    daemon.start()
    synthetic.generate(daemon.tmp / "data", count=16, seed=1)
    wait_until(lambda: count(daemon, lambda j: j.event_count()) == 32, 60, "32 journaled events")
    daemon.kill()

    # 1. Killed after the intent was committed, before anything was submitted: the restart submits it.
    first = intend_run(daemon)
    daemon.start()
    wait_until(lambda: count(daemon, lambda j: sum(r.state.final for r in j.runs())) == 1, 600, "the first outcome")
    daemon.kill()

    # 2. Killed after the launcher started the run, before the journal recorded it: the restart finds it.
    synthetic.generate(daemon.tmp / "data", count=16, seed=2)
    from daemon.sources import base as source_base
    from daemon.sources import datasets, watching

    journal = daemon.journal()
    [loaded] = loading.load_paths([settings_of(daemon).rules.path]).rules.values()
    sink = source_base.EventSink(journal=journal, board=source_base.StatusBoard(), clock=lambda: datetime.now(UTC))
    location = datasets.location_of(loaded.rule)
    watching.FolderSource(location=location, sink=sink, clock=lambda: datetime.now(UTC), settle_s=0).rescan()
    journal.close()
    second = intend_run(daemon)
    builder = reactor.Reactor(settings_of(daemon))  # the same spec and launcher the daemon would use
    run = builder.journal.get_run(ids.RunKey(second))
    assert run is not None
    builder.launcher.submit(ids.RunKey(second), builder.launching.spec(loaded.rule, run))
    builder.journal.close()
    daemon.start()
    wait_until(lambda: count(daemon, lambda j: sum(r.state.final for r in j.runs())) == 2, 600, "the second outcome")
    stays(lambda: count(daemon, lambda j: len(j.runs())) == 2, 6, "two runs, no third")
    journal = daemon.journal()
    try:
        all_runs = journal.runs()
        assert sorted(r.run_key for r in all_runs) == sorted([first, second])  # no duplicate run
        assert all(r.state is runs.RunState.SUCCEEDED for r in all_runs)
        assert journal.event_count() == 64
        assert len(journal.promotions("crash-detector")) == 2
    finally:
        journal.close()
    assert sorted(p.name for p in (daemon.tmp / "runs").iterdir()) == sorted([first, second])
    assert daemon.terminate() == 0
    builder.launcher.close()  # reap the run process this test started
