"""Training progress for the dashboard: from a local run's output, and from the MLflow run of a run that
executes elsewhere (a real MLflow server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon import constants, settings
from daemon.http import metrics as metrics_
from daemon.journal import sqlite as journal_sqlite
from daemon.launchers import local
from daemon.model import ids, progress, runs, tags
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.runtime import recording, tracking
from daemon.sources import base as source_base
from tests.support import services

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def tracker_for(tmp_path: Path, tracking_uri: str) -> tracking.RunTracker:
    journal = journal_sqlite.SqliteJournal(tmp_path / "journal.db")
    config = settings.load(environ={}, overrides=[f"kfp.local_pipeline_root={tmp_path / 'runs'}"])
    recorder = recording.OutcomeRecorder(
        journal=journal,
        mlflow=registry.Mlflow(tracking_uri=tracking_uri),
        rules=lambda: {},
        metrics=metrics_.Metrics(
            board=source_base.StatusBoard(),
            journal=journal,
            rulebook=reloading.RuleBook(tmp_path / "rules"),
            clock=lambda: NOW,
            since_last_pass=lambda: 0.0,
        ),
        backend="kfp",
        clock=lambda: NOW,
    )
    launcher = local.LocalLauncher(root=tmp_path / "runs", max_concurrent=1, env={})
    return tracking.RunTracker(
        config=config, journal=journal, launcher=launcher, recorder=recorder, clock=lambda: NOW, curves_from_mlflow=True
    )


def record(key: str) -> runs.RunRecord:
    return runs.RunRecord(
        run_key=ids.RunKey(key),
        rule="parcels",
        state=runs.RunState.RUNNING,
        trigger="new_labels",
        reason="test",
        snapshot=None,
        params={"model": {"registered_name": "parcels-detector"}},
        created_at=NOW,
        updated_at=NOW,
    )


def progress_line(**fields: object) -> str:
    """A line as the training step prints it (``pipelines.steps.training.epoch_logger``)."""
    return constants.PROGRESS_MARK + json.dumps(fields)


def test_the_final_trainings_epochs_reach_the_board_and_tuning_trials_do_not(tmp_path: Path) -> None:
    tracker = tracker_for(tmp_path, "http://127.0.0.1:9")
    log = tmp_path / "runs" / "parcels-1" / "log.txt"
    log.parent.mkdir(parents=True)
    lines = [
        "some task output",
        progress_line(epoch=1, epochs=2, map50_95=0.9, map50=0.95, trial=0),  # a tuning trial: not the curve
        progress_line(epoch=1, epochs=3, map50_95=0.1, map50=0.2),
        progress_line(epoch=2, epochs=3, map50_95=0.2, map50=0.3),
        constants.PROGRESS_MARK + "{not json",
    ]
    log.write_text("\n".join(lines) + "\n")
    assert tracker.report_progress("parcels-1")
    found = tracker.progress.get("parcels-1")
    assert found is not None
    assert [(p.epoch, p.map50_95, p.map50) for p in found.points] == [(1, 0.1, 0.2), (2, 0.2, 0.3)]
    assert (found.epochs, found.epoch, found.final, found.source) == (3, 2, False, "log")
    # Later lines are read from where the last pass stopped; the final validation marks the end.
    with log.open("a") as out:
        out.write(progress_line(epoch=3, epochs=3, map50_95=0.3, map50=0.4) + "\n")
        out.write(progress_line(final="best.pt", map50_95=0.3, map50=0.4) + "\n")
    assert tracker.report_progress("parcels-1")
    found = tracker.progress.get("parcels-1")
    assert found is not None and [p.epoch for p in found.points] == [1, 2, 3] and found.final
    # A run with no local output says so (its curve is read from MLflow instead).
    assert not tracker.report_progress("elsewhere-1")


@pytest.mark.services
def test_a_run_in_other_pods_has_its_curve_read_from_its_mlflow_run(
    mlflow_server: services.MlflowServer, tmp_path: Path
) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment = client.create_experiment("parcels-detector")
    other = client.create_run(experiment, tags={tags.RUN_KEY: "parcels-other"})
    client.log_batch(other.info.run_id, metrics=[Metric(registry.EPOCH_MAP50_95, 0.99, 0, 1)])
    trained = client.create_run(experiment, tags={tags.RUN_KEY: "parcels-2"})
    run_id = trained.info.run_id
    client.log_param(run_id, "epochs", "3")
    values = [(1, 0.11, 0.21), (2, 0.12, 0.22), (3, 0.13, 0.23), (4, 0.13, 0.23)]  # step 4: the final check
    client.log_batch(
        run_id,
        metrics=[Metric(registry.EPOCH_MAP50_95, v, 0, step) for step, v, _ in values]
        + [Metric(registry.EPOCH_MAP50, v, 0, step) for step, _, v in values],
    )
    tracker = tracker_for(tmp_path, mlflow_server.url)
    assert tracker.progress.get("parcels-2") is None
    tracker.read_curve(record("parcels-2"))
    found = tracker.progress.get("parcels-2")
    assert found is not None
    assert [(p.epoch, p.map50_95, p.map50) for p in found.points] == [(s, a, b) for s, a, b in values[:3]]
    assert (found.epochs, found.mlflow_run_id, found.source) == (3, run_id, "mlflow")
    # No MLflow run yet for a run that has not started training: nothing, and no error.
    tracker.read_curve(record("parcels-3"))
    assert tracker.progress.get("parcels-3") is None


def test_an_unreachable_mlflow_leaves_the_board_as_it_was_and_is_not_asked_again_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    tracker = tracker_for(tmp_path, "http://127.0.0.1:9")
    tracker.progress.replace_points(
        "parcels-4", [progress.EpochPoint(epoch=1, map50_95=0.5)], epochs=3, mlflow_run_id="r", source="mlflow"
    )
    asked: list[str] = []
    curve_of = tracker.recorder.mlflow.training_curve

    def counted(*, experiment: str, run_key: str) -> registry.TrainingCurve | None:
        asked.append(run_key)
        return curve_of(experiment=experiment, run_key=run_key)

    monkeypatch.setattr(tracker.recorder.mlflow, "training_curve", counted)
    tracker.read_curve(record("parcels-4"))
    tracker.read_curve(record("parcels-4"))
    assert asked == ["parcels-4"]  # the second pass waits for the retry interval
    found = tracker.progress.get("parcels-4")
    assert found is not None and [p.epoch for p in found.points] == [1]
