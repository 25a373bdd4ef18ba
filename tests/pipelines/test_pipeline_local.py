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
from tests.support.paths import SHARED

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

    # The champion serves predictions through its pyfunc flavour.
    import mlflow as mlflow_module
    import pandas as pd

    mlflow_module.set_tracking_uri(mlflow_server.url)
    model = mlflow_module.pyfunc.load_model(f"models:/shapes-detector@{tags.CHAMPION_ALIAS}")
    image = sorted((data / "images").iterdir())[0]
    detections = model.predict(pd.DataFrame({"path": [str(image)]}))
    assert list(detections.columns) == ["path", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
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

    coco = SHARED / "datasets" / "coco-mini"
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
    report = json.loads(next((tmp_path / "run" / "kfp").rglob("validate-dataset/report")).read_text())
    assert report["items"] == 24
    assert report["per_split"] == {"train": 16, "val": 8}


def test_tuning_fans_out_trials_and_trains_with_the_best(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    synthetic.generate(data, count=40, seed=3)
    from pipelines.steps import materializing

    manifest = materializing.manifest_for_folder(data, dataset="shapes", classes=list(synthetic.CLASSES))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest.to_json()))
    rule = make_rule(
        "tuned",
        f"file://{data}",
        epochs=2,
        extra=", tune: {trials: 3, parallelism: 2, epochs: 1, seed: 5, space: {lr0: [0.001, 0.05, log]}}",
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
    trials = sorted((tmp_path / "run" / "kfp").rglob("for-loop-1-iteration-*/run-trial/executor_output.json"))
    assert len(trials) == 3
    from pipelines.steps import tuning

    sampled = tuning.sample_trials({"lr0": {"low": 0.001, "high": 0.05, "scale": "log"}}, trials=3, seed=5)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri)
    [run] = client.search_runs([client.get_experiment_by_name("tuned-detector").experiment_id])
    trained_lr0 = float(run.data.params["lr0"])
    results = [json.loads(p.read_text()) for p in trials]
    maps = [r["parameterValues"]["Output"]["map50_95"] for r in results]
    best = max(results, key=lambda r: r["parameterValues"]["Output"]["map50_95"])["parameterValues"]["Output"]
    assert any(abs(trained_lr0 - t["lr0"]) < 1e-9 for t in sampled)
    assert abs(trained_lr0 - best["params"]["lr0"]) < 1e-9, maps
