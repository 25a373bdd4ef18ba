"""The whole pipeline through kfp.local on CPU: real Ultralytics training, real MLflow and S3 servers.

Each run is a child process (``python -m pipelines.local_run``), as the daemon's local launcher runs it.
The child's environment points every HTTP proxy at a dead port (loopback excepted): anything that tried
to download weights, fonts or datasets would fail the run.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.engine import snapshots
from daemon.model import rules, tags
from daemon.rules import loading
from pipelines import arguments, synthetic
from tests.support import services
from tests.support.paths import COCO_MINI

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def make_rule(name: str, source: str, *, epochs: int, extra: str = "", classes: list[str] | None = None) -> rules.Rule:
    text = f"""
name: {name}
dataset: {{source: "{source}"{", classes: " + json.dumps(classes) if classes else ""}}}
model: {{registered_name: {name}-detector, base: yolov8n.yaml}}
triggers: [{{new_labels: {{}}}}]
training: {{epochs: {epochs}, imgsz: 128, batch: 16, gpus: 0{extra}}}
promotion: {{min_improvement: 0.01, first_model_min: 0.0}}
"""
    result = loading.parse_text(text, file="test.yaml")
    assert not result.errors, [e.render() for e in result.errors]
    return result.rules[0].rule


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RETRAIN_", "MLFLOW_", "AWS_"))}
    dead = "http://127.0.0.1:9"
    env.update(
        HTTP_PROXY=dead,
        HTTPS_PROXY=dead,
        http_proxy=dead,
        https_proxy=dead,
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="2",
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",
    )
    env.update(extra or {})
    return env


def run_pipeline(
    workdir: Path,
    *,
    rule: rules.Rule,
    run_key: str,
    manifest_uri: str,
    mlflow_uri: str,
    env: dict[str, str],
    s3_endpoint: str = "",
) -> dict[str, Any]:
    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        "pipeline_root": str(workdir / "kfp"),
        "shape": dataclasses.asdict(arguments.Shape.of(rule)),
        "pipeline": {"retries": 0},
        "arguments": arguments.arguments(
            rule=rule,
            run_key=run_key,
            manifest_uri=manifest_uri,
            mlflow_tracking_uri=mlflow_uri,
            s3_endpoint=s3_endpoint,
            s3_secure=False,
            code_version="test",
        ),
    }
    (workdir / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.local_run", str(workdir / "spec.json")],
        cwd=workdir,  # a local MLflow store writes ./mlruns: keep it out of the checkout
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    outcome = json.loads((workdir / "outcome.json").read_text())
    assert outcome["state"] == "succeeded", outcome.get("error", "") + "\n" + result.stderr[-3000:]
    return outcome["output"]  # type: ignore[no-any-return]


@pytest.mark.services
def test_champion_moves_only_on_improvement(
    s3_server: services.S3Server, s3_bucket: str, mlflow_server: services.MlflowServer, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    # The dataset lives in the S3 bucket; the manifest is the daemon's snapshot of it.
    data = tmp_path / "shapes"
    synthetic.generate(data, count=96, seed=1)
    client = s3_server.client()
    for path in sorted(data.rglob("*.*")):
        client.fput_object(s3_bucket, f"shapes/{path.relative_to(data).as_posix()}", str(path))
    items = [
        (o.object_name.removeprefix("shapes/"), o.etag.strip('"'))
        for o in client.list_objects(s3_bucket, prefix="shapes/", recursive=True)
    ]
    fingerprint = snapshots.fingerprint(items)
    manifest = {
        "dataset": "shapes",
        "source": f"s3://{s3_bucket}/shapes/",
        "fingerprint": fingerprint,
        "items": items,
        "classes": list(synthetic.CLASSES),
    }
    body = json.dumps(manifest).encode()
    client.put_object(s3_bucket, "manifests/shapes.json", io.BytesIO(body), length=len(body))
    env = offline_env({"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key})
    source = f"s3://{s3_bucket}/shapes/"

    def run(epochs: int, key: str) -> dict[str, Any]:
        return run_pipeline(
            tmp_path / key,
            rule=make_rule("shapes", source, epochs=epochs),
            run_key=key,
            manifest_uri=f"s3://{s3_bucket}/manifests/shapes.json",
            mlflow_uri=mlflow_server.url,
            env=env,
            s3_endpoint=s3_server.endpoint,
        )

    first = run(5, "shapes-r1")
    assert (first["version"], first["decision"]) == ("1", "promoted")
    assert first["reason"].startswith("first model")
    better = run(30, "shapes-r2")
    assert (better["version"], better["decision"], better["previous_champion"]) == ("2", "promoted", "1")
    assert better["candidate"]["map50_95"] > first["candidate"]["map50_95"] + 0.01
    worse = run(1, "shapes-r3")
    assert (worse["version"], worse["decision"]) == ("3", "rejected")
    assert "is not more than min_improvement" in worse["reason"]

    mlflow = MlflowClient(tracking_uri=mlflow_server.url)
    assert mlflow.get_model_version_by_alias("shapes-detector", tags.CHAMPION_ALIAS).version == "2"
    for version, decision in (("1", "promoted"), ("2", "promoted"), ("3", "rejected")):
        version_tags = mlflow.get_model_version("shapes-detector", version).tags
        assert version_tags[tags.RULE] == "shapes"
        assert len(version_tags[tags.DATASET_FINGERPRINT]) == 64
        assert version_tags[tags.GATE_DECISION] == decision
        assert version_tags[tags.GATE_REASON]
        assert float(version_tags[f"{tags.METRIC_PREFIX}map50_95"]) >= 0
    # The training run: named by its run key, tagged, with per-epoch metrics.
    [run2] = mlflow.search_runs(
        [mlflow.get_experiment_by_name("shapes-detector").experiment_id],
        filter_string="attributes.run_name = 'shapes-r2'",
    )
    assert run2.data.tags[tags.RUN_KEY] == "shapes-r2"
    assert run2.data.tags[tags.RULE] == "shapes"
    assert run2.data.tags[tags.DATASET_FINGERPRINT] == fingerprint
    history = mlflow.get_metric_history(run2.info.run_id, "metrics/mAP50-95B")
    assert {m.step for m in history} >= set(range(1, 31))  # every epoch (and the final validation)
    assert run2.data.params["epochs"] == "30"
    [snapshot] = run2.inputs.dataset_inputs  # the dataset lineage MLflow's UI shows
    assert snapshot.dataset.digest == fingerprint[:36] and snapshot.tags[0].value == "training"
    lineage = {Path(a.path).name for a in mlflow.list_artifacts(run2.info.run_id, "lineage")}
    assert lineage == {"manifest.json", "validation_report.json"}
    plots = {Path(a.path).name for a in mlflow.list_artifacts(run2.info.run_id, "plots")}
    assert {"results.csv", "confusion_matrix.png", "BoxPR_curve.png"} <= plots, plots  # pipeline.plots: on

    # The champion serves predictions through its pyfunc flavour.
    import mlflow as mlflow_module
    import pandas as pd

    mlflow_module.set_tracking_uri(mlflow_server.url)
    model = mlflow_module.pyfunc.load_model(f"models:/shapes-detector@{tags.CHAMPION_ALIAS}")
    image = sorted((data / "images").iterdir())[0]
    detections = model.predict(pd.DataFrame({"image": [image.read_bytes()]}))
    assert list(detections.columns) == ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
    # The image holds 1-3 coloured boxes: the champion (30 epochs) finds at least one of them,
    # of a class the label names, inside the image.
    truth = {int(line.split()[0]) for line in (data / "labels" / f"{image.stem}.txt").read_text().splitlines()}
    assert len(detections) >= 1
    best = detections.sort_values("confidence", ascending=False).iloc[0]
    assert int(best["class_id"]) in truth
    assert 0 <= best["x1"] < best["x2"] <= 128 and 0 <= best["y1"] < best["y2"] <= 128


def test_coco_mini_materialize_validate_and_train(tmp_path: Path) -> None:
    """Real COCO photos: explicit train/val folders, 80 classes, a one-epoch train."""
    from pipelines.steps import materializing

    coco = COCO_MINI
    names = list(yaml.safe_load((coco / "data.yaml").read_text())["names"].values())
    manifest = materializing.manifest_for_folder(coco, dataset="coco", classes=names)
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    rule = make_rule("coco", f"file://{coco}", epochs=1, classes=names)
    output = run_pipeline(
        tmp_path / "run",
        rule=rule,
        run_key="coco-r1",
        manifest_uri=f"file://{tmp_path / 'manifest.json'}",
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        env=offline_env(),
    )
    assert output["decision"] == "promoted"  # the first model, with first_model_min 0
    report = json.loads(next((tmp_path / "run" / "kfp").rglob("prepare-dataset/report")).read_text())
    assert report["items"] == 24
    assert report["per_split"] == {"train": 16, "val": 8}


def test_tuning_fans_out_trials_as_mlflow_child_runs_and_trains_with_the_best(tmp_path: Path) -> None:
    """Trials fan out (kfp.local), each an MLflow child run of the run's tuning run with its parameters and
    per-epoch metrics; the final training uses the parameters of the best trial by validation mAP, optimizer
    included; the next run's sampler sees these trials and asks new points."""
    data = tmp_path / "shapes"
    synthetic.generate(data, count=40, seed=3)
    from pipelines.steps import materializing

    manifest = materializing.manifest_for_folder(data, dataset="shapes", classes=list(synthetic.CLASSES))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    space = "{lr0: [0.001, 0.05, log], optimizer: {choices: [SGD, AdamW]}}"
    rule = make_rule(
        "tuned",
        f"file://{data}",
        epochs=2,
        extra=f", tune: {{trials: 3, parallelism: 2, epochs: 1, seed: 5, space: {space}}}",
    )
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    output = run_pipeline(
        tmp_path / "run",
        rule=rule,
        run_key="tuned-r1",
        manifest_uri=f"file://{tmp_path / 'manifest.json'}",
        mlflow_uri=mlflow_uri,
        env=offline_env(),
    )
    assert output["decision"] == "promoted"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    experiment = client.get_experiment_by_name("tuned-detector").experiment_id
    everything = client.search_runs([experiment])
    [search] = [r for r in everything if r.data.tags.get(tags.TUNING_ROLE) == "search"]
    trials = [r for r in everything if r.data.tags.get(tags.TUNING_ROLE) == "trial"]
    [trained] = [r for r in everything if r.data.tags.get(tags.RUN_KEY) == "tuned-r1"]
    assert len(trials) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {search.info.run_id}
    for trial in trials:
        assert set(json.loads(trial.data.tags[tags.TRIAL_PARAMS])) == {"lr0", "optimizer"}
        assert trial.data.params["optimizer"] in ("SGD", "AdamW")
        assert [m.step for m in client.get_metric_history(trial.info.run_id, "metrics/mAP50-95B")][0] == 1
    best = max(trials, key=lambda r: (r.data.metrics["map50_95"], -int(r.data.tags[tags.TRIAL_NUMBER])))
    best_params = json.loads(best.data.tags[tags.TRIAL_PARAMS])
    assert float(trained.data.params["lr0"]) == pytest.approx(best_params["lr0"], rel=1e-9)
    assert trained.data.params["optimizer"] == best_params["optimizer"]
    assert json.loads(search.data.tags["retrain.tuning.best_params"]) == best_params
    assert search.data.tags["retrain.tuning.best_trial"] == best.data.tags[tags.TRIAL_NUMBER]
    from pipelines.steps import searching, tuning

    assert rule.training.tune is not None
    space_ = {k: v.model_dump(mode="json") for k, v in rule.training.tune.space.items()}
    asked = [
        json.loads(t.data.tags[tags.TRIAL_PARAMS]) for t in sorted(trials, key=lambda r: r.data.tags[tags.TRIAL_NUMBER])
    ]
    assert tuning.suggest(space_, trials=3, seed=tuning.run_seed(5, "tuned-r1")) == asked  # TPE, nothing seen yet
    past = searching.history(tracking_uri=mlflow_uri, experiment="tuned-detector", rule="tuned")
    assert sorted(p.params["lr0"] for p in past) == sorted(a["lr0"] for a in asked)
    following = tuning.suggest(space_, trials=3, seed=tuning.run_seed(5, "tuned-r2"), history=past)
    assert not any(point in asked for point in following)  # the next run explores new points


def test_a_trial_behind_the_earlier_trials_is_pruned_and_a_retried_trial_is_not_trained_again(tmp_path: Path) -> None:
    """Three earlier trials of the rule reached mAP 0.9 at every epoch; a real trial of 4 epochs on a new
    model is far below that median at epoch 2 and stops there (Optuna's median pruner), recorded as pruned.
    Its task retried returns the recorded result without training."""
    from mlflow.tracking import MlflowClient

    from pipelines.steps import searching, tuning

    data = tmp_path / "ds"
    for split in ("train", "val"):
        synthetic.generate(data, count=8, seed=1 if split == "train" else 2, split=split)
    (data / "data.yaml").write_text(f"path: {data}\ntrain: images/train\nval: images/val\nnames: [r, g, b]\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = searching.experiment_id(uri, "pruned-detector")
    client = MlflowClient(tracking_uri=uri)
    space = {"lr0": {"low": 0.001, "high": 0.1, "scale": "log"}}
    for number in range(3):  # the earlier run's trials, as the pipeline records them
        run = client.create_run(
            experiment,
            tags={
                tags.TUNING_RUN_KEY: "pruned-r0",
                tags.TUNING_ROLE: "trial",
                tags.TRIAL_NUMBER: str(number),
                tags.RULE: "pruned",
                tags.TRIAL_PARAMS: json.dumps({"lr0": 0.01 * (number + 1)}),
                tags.TRIAL_STATE: "complete",
            },
        )
        for epoch in range(1, 5):
            client.log_metric(run.info.run_id, tuning.EPOCH_METRIC, 0.9, step=epoch)
        client.log_metric(run.info.run_id, "map50_95", 0.9)
        client.set_terminated(run.info.run_id)
    parent = searching.tuning_run(
        tracking_uri=uri, experiment="pruned-detector", run_key="pruned-r1", rule="pruned", space=space, trials=1
    )
    trial = {"number": 0, "params": {"lr0": 0.01}, "tuning_run_id": parent}
    arguments_: dict[str, Any] = {
        "tracking_uri": uri,
        "experiment": "pruned-detector",
        "run_key": "pruned-r1",
        "rule": "pruned",
        "trial": trial,
        "space": space,
        "fixed": {},
        "data_yaml": data / "data.yaml",
        "base": "yolov8n.yaml",
        "epochs": 4,
        "imgsz": 64,
        "batch": 4,
        "device": "cpu",
        "out_dir": tmp_path / "trial",
    }
    result = searching.run_trial(**arguments_)
    assert result["pruned"] is True
    found = searching.finished_trial(tracking_uri=uri, experiment="pruned-detector", run_key="pruned-r1", number=0)
    assert found.data.tags[tags.TRIAL_STATE] == "pruned"
    assert found.data.tags["retrain.trial.pruned_at"] == "2"
    assert found.data.tags["mlflow.parentRunId"] == parent
    trained = (tmp_path / "trial" / "train" / "results.csv").read_text().splitlines()[1:]
    assert len(trained) == 2  # epochs trained: 2 of 4
    runs_before = len(client.search_runs([experiment]))
    assert searching.run_trial(**{**arguments_, "out_dir": tmp_path / "retry"}) == result
    assert len(client.search_runs([experiment])) == runs_before
    assert not (tmp_path / "retry").exists()  # nothing trained again
