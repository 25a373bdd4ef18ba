"""End to end: the daemon with the real S3 server, the real MLflow server and the local launcher.

Label batches uploaded to the bucket trigger exactly the runs the rule implies (quiet period, one follow-up
for data that arrived during a run), and the champion moves only on improvement. Each run needs all 30 labels
of its batches (min_new_labels 30): an upload that stalls past the 3 s quiet period on a loaded machine cannot
fire a run on part of a batch, so the counts asserted are the rule's, not the machine's timing.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon import reactor, settings
from daemon.model import runs, tags
from pipelines import synthetic
from tests.support import services
from tests.support.waiting import stays, wait_until

pytestmark = [pytest.mark.services, pytest.mark.slow, pytest.mark.timeout(900)]

RULE = """
name: shapes
dataset: {{source: "s3://{bucket}/shapes/", classes: [red-box, green-box, blue-box]}}
model: {{registered_name: e2e-detector, base: yolov8n.yaml}}
triggers:
  - new_labels: {{min_new_labels: 30, quiet_period: 3s, max_wait: 10m}}
training: {{epochs: 3, imgsz: 128, batch: 16, gpus: 0}}
promotion: {{min_improvement: 0.005, first_model_min: 0.0}}
limits: {{cooldown: 0s, max_concurrent_runs: 1}}
"""


def upload_batch(server: services.S3Server, bucket: str, tmp: Path, *, seed: int, count: int) -> None:
    folder = tmp / f"batch{seed}"
    synthetic.generate(folder, count=count, seed=seed, prefix=f"b{seed}")
    client = server.client()
    for path in sorted(folder.rglob("*.*")):
        client.fput_object(bucket, f"shapes/{path.relative_to(folder).as_posix()}", str(path))


def test_batches_trigger_exactly_the_implied_runs_and_the_champion_moves_only_up(
    s3_server: services.S3Server, s3_bucket: str, mlflow_server: services.MlflowServer, tmp_path: Path
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "shapes.yaml").write_text(RULE.format(bucket=s3_bucket))
    config = settings.load(
        environ=s3_server.daemon_env(),
        overrides=[
            f"journal.path={tmp_path / 'journal.db'}",
            f"rules.path={rules_dir}",
            f"mlflow.tracking_uri={mlflow_server.url}",
            f"kfp.local_pipeline_root={tmp_path / 'runs'}",
            *s3_server.daemon_overrides(),
            "sources.reconcile_interval_s=1",
            "http.port=0",
        ],
    )
    daemon = reactor.Reactor(config, tick_s=0.5)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        upload_batch(s3_server, s3_bucket, tmp_path, seed=1, count=30)
        wait_until(lambda: len(daemon.journal.runs(limit=10)) == 1, 120, "the first run")
        [first] = daemon.journal.runs(limit=10)
        assert "30 new labels" in first.reason
        # More data lands while the first run trains: exactly one follow-up after it.
        upload_batch(s3_server, s3_bucket, tmp_path, seed=2, count=15)
        upload_batch(s3_server, s3_bucket, tmp_path, seed=3, count=15)
        wait_until(lambda: (daemon.journal.get_run(first.run_key) or first).state.final, 600, "the first run's end")
        wait_until(lambda: len(daemon.journal.runs(limit=10)) == 2, 120, "the follow-up run")
        wait_until(lambda: all(r.state.final for r in daemon.journal.runs(limit=10)), 600, "the follow-up's end")
        stays(lambda: len(daemon.journal.runs(limit=10)) == 2, 8, "two runs (nothing else may start)")
        all_runs = daemon.journal.runs(limit=10)
        assert len(all_runs) == 2
        assert [r.state for r in all_runs] == [runs.RunState.SUCCEEDED, runs.RunState.SUCCEEDED]
        follow_up = all_runs[0]
        assert "30 new labels" in follow_up.reason
        assert daemon.journal.event_count() == 120  # 60 images + 60 labels, each journaled once

        promotions = daemon.journal.promotions("e2e-detector")[::-1]
        assert [p.kind for p in promotions][0] == "promoted"
        first_score = promotions[0].metrics["map50_95"]
        second = promotions[1]
        expected = "promoted" if second.metrics["map50_95"] > first_score + 0.005 else "rejected"
        assert second.kind == expected
        from mlflow.tracking import MlflowClient

        champion = MlflowClient(tracking_uri=mlflow_server.url).get_model_version_by_alias(
            "e2e-detector", tags.CHAMPION_ALIAS
        )
        assert champion.version == (second.version if expected == "promoted" else promotions[0].version)

        # What Prometheus scrapes says the same: two launches timed from their newest event, two gate outcomes.
        metrics = httpx.get(f"http://127.0.0.1:{daemon.http_port}/metrics", timeout=10).text
        found = {
            (m.name, tuple(sorted(m.labels.items()))): m.value
            for f in text_string_to_metric_families(metrics)
            for m in f.samples
        }
        assert found["retrain_event_to_launch_seconds_count", (("trigger", "new_labels"),)] == 2
        assert found["retrain_runs", (("state", "succeeded"),)] == 2
        outcomes = {labels: v for (name, labels), v in found.items() if name == "retrain_promotions_total"}
        assert sum(outcomes.values()) == 2
        assert sum(v for (name, _), v in found.items() if name == "retrain_events_new_total") == 120
    finally:
        daemon.stop()
        thread.join(30)
