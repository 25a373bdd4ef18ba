"""Drift checks: class drift from journaled label counts, metric drift from a real MLflow server."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from daemon import settings
from daemon.engine import deciding, drift
from daemon.journal import base as journal_base
from daemon.model import decisions, outcomes, runs, tags
from daemon.registry import mlflow as registry
from daemon.sources import base, drifting
from tests.support import services
from tests.support.sim import T0, Simulation, label, make_rule

CLASS_DRIFT = "  - class_drift: {statistic: jensen_shannon, threshold: 0.15, min_labels: 4, check_every: 1h}\n"


def trained_simulation() -> Simulation:
    """A rule that trained on a cat-heavy dataset (class 0) and then received dog-heavy labels (class 1)."""
    sim = Simulation(rule=make_rule(min_new_labels=1000, quiet_period="0s", cooldown="0s", extra_triggers=CLASS_DRIFT))
    sim.drop([label(f"old{i}", class_counts={"0": 3, "1": 1}) for i in range(10)])
    # A manual request launches the first training run on the old data.
    sim.journal.request_manual("pets", reason="first model", actor="test", at=sim.now)
    assert sim.step().outcome == "launch"
    sim.finish(sim.launches[0].run_key, runs.RunState.SUCCEEDED)
    sim.advance(timedelta(minutes=5))
    sim.drop([label(f"new{i}", class_counts={"0": 1, "1": 3}, at=sim.now) for i in range(6)])
    return sim


def test_class_drift_measures_new_labels_against_the_training_data() -> None:
    sim = trained_simulation()
    checker = drifting.DriftChecker(journal=sim.journal, board=base.StatusBoard(), clock=lambda: sim.now)
    value = checker.class_drift(sim.rule, sim.rule.triggers[1].class_drift, now=sim.now)  # type: ignore[arg-type]
    assert value == pytest.approx(drift.jensen_shannon({"0": 30, "1": 10}, {"0": 6, "1": 18}))
    assert value > 0.15

    assert checker.run_due({"pets": sim.rule}) == 1
    assert checker.run_due({"pets": sim.rule}) == 0  # not due again before check_every
    decision = deciding.decide(sim.rule, sim.journal.rule_state(sim.rule, now=sim.now), sim.now)
    assert isinstance(decision, decisions.Launch)
    assert decision.trigger == "class_drift"
    assert "class drift: jensen_shannon" in decision.reason


def test_class_drift_uses_the_champions_training_data_when_promoted() -> None:
    sim = trained_simulation()
    champion_run = sim.launches[0].run_key
    sim.journal.record_promotion(
        journal_base.PromotionRecord(
            model="pets-detector",
            version="1",
            previous_version=None,
            run_key=champion_run,
            kind=outcomes.PromotionKind.PROMOTED,
            actor="daemon",
            reason="first model",
            metrics={},
            at=sim.now,
        )
    )
    checker = drifting.DriftChecker(journal=sim.journal, board=base.StatusBoard(), clock=lambda: sim.now)
    assert checker.reference_snapshot(sim.rule) == sim.launches[0].snapshot


def test_no_reference_no_observation() -> None:
    sim = Simulation(rule=make_rule(extra_triggers=CLASS_DRIFT))
    sim.drop([label("a", class_counts={"0": 1})])
    checker = drifting.DriftChecker(journal=sim.journal, board=base.StatusBoard(), clock=lambda: sim.now)
    assert checker.run_due({"pets": sim.rule}) == 0


@pytest.mark.services
def test_metric_drift_from_a_real_mlflow_server(mlflow_server: services.MlflowServer, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url)
    model = "drift-detector"
    # The champion: a registered version with its validation mAP as a tag.
    train_exp = client.create_experiment("drift-training")
    train_run = client.create_run(train_exp).info.run_id
    client.log_metric(train_run, "map50_95", 0.45)
    client.set_terminated(train_run)
    client.create_registered_model(model)
    version = client.create_model_version(model, source=f"runs:/{train_run}/model", run_id=train_run)
    client.set_model_version_tag(model, version.version, f"{tags.METRIC_PREFIX}map50_95", "0.45")
    client.set_registered_model_alias(model, tags.CHAMPION_ALIAS, version.version)
    # A monitor logs mAP measured on live traffic to the model's experiment.
    live_exp = client.create_experiment(model)
    monitor_run = client.create_run(live_exp).info.run_id
    client.log_metric(monitor_run, "live_map50_95", 0.31)
    client.set_terminated(monitor_run)

    rule = make_rule(
        name="drift",
        min_new_labels=1000,
        extra_triggers="  - metric_drift: {metric: live_map50_95, drop_from_champion: 0.05}\n",
    )
    rule = rule.model_copy(update={"model": rule.model.model_copy(update={"registered_name": model})})
    sim = Simulation(rule=rule)
    sim.drop([label("a", dataset="drift")])
    reader = registry.Mlflow(tracking_uri=mlflow_server.url)
    assert reader.champion_metric(model=model, metric="map50_95") == pytest.approx(0.45)
    assert reader.live_metric(experiment=model, metric="live_map50_95") == pytest.approx(0.31)
    assert reader.champion_metric(model="no-such-model", metric="map50_95") is None
    assert reader.live_metric(experiment="no-such-experiment", metric="x") is None

    checker = drifting.DriftChecker(
        journal=sim.journal, board=base.StatusBoard(), clock=lambda: sim.now, metrics=reader
    )
    assert checker.run_due({"drift": rule}) == 1
    [obs] = sim.journal.rule_state(rule, now=T0).observations
    assert obs.value == pytest.approx(0.14)
    decision = deciding.decide(rule, sim.journal.rule_state(rule, now=sim.now), sim.now)
    assert isinstance(decision, decisions.Launch)
    assert decision.trigger == "metric_drift"
    assert "live live_map50_95=0.3100, champion map50_95=0.4500" in decision.reason


def test_an_unreachable_mlflow_is_a_logged_skip_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)  # restored after the test: configure() writes them
    registry.configure(settings.MlflowSettings(max_retries=0, request_timeout_s=5))
    rule = make_rule(extra_triggers="  - metric_drift: {metric: live_map50_95, drop_from_champion: 0.05}\n")
    sim = Simulation(rule=rule)
    reader = registry.Mlflow(tracking_uri=f"http://127.0.0.1:{services.free_port()}")
    board = base.StatusBoard()
    checker = drifting.DriftChecker(journal=sim.journal, board=board, clock=lambda: sim.now, metrics=reader)
    assert checker.run_due({"pets": rule}) == 0
    assert "MLflow at http://127.0.0.1" in (board.get("drift").last_error or "")
