"""A standby replica (another holds the lease of the shared PostgreSQL journal) serves everything: probes and
status say who leads, webhook deliveries and manual triggers are journaled, rollback and cancel are refused
naming the leader; when the leader gives the lease up, the standby takes it within a poll and starts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from daemon import reactor, settings
from daemon.journal import postgres
from tests.support import apps, minio, services
from tests.support.waiting import wait_until


@pytest.fixture
def standby(
    tmp_path: Path, s3_server: services.S3Server, s3_bucket: str, postgres_server: services.PostgresServer
) -> Iterator[tuple[reactor.Reactor, postgres.PostgresJournal, str]]:
    url = postgres_server.create_database()
    leader = postgres.PostgresJournal(url)  # the leader, on another node
    assert leader.leadership().acquire("pod-a", ttl_s=60) == 1
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "pets.yaml").write_text(
        f"""name: pets
dataset: {{source: "s3://{s3_bucket}/pets/"}}
model: {{registered_name: pets-detector}}
triggers:
  - new_labels: {{min_new_labels: 100}}
"""
    )
    config = settings.load(
        environ={**s3_server.daemon_env(), "RETRAIN_JOURNAL__URL": url},
        overrides=[
            f"rules.path={rules_dir}",
            *s3_server.daemon_overrides(),
            f"sources.webhook_token={minio.TOKEN}",
            f"http.api_token={apps.API_TOKEN}",
            "http.port=0",
            "leader.holder=pod-b",
            "leader.poll_interval_s=0.2",
            f"kfp.local_pipeline_root={tmp_path / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    daemon = reactor.Reactor(config, dry_run=True)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: daemon.http_port is not None, 30, "the standby's HTTP server")
        yield daemon, leader, s3_bucket
    finally:
        daemon.stop()
        thread.join(30)
        leader.close()


def test_a_standby_serves_journals_and_refuses_what_only_the_leader_does(
    standby: tuple[reactor.Reactor, postgres.PostgresJournal, str],
) -> None:
    daemon, leader, bucket = standby
    base = f"http://127.0.0.1:{daemon.http_port}"
    auth = {"Authorization": f"Bearer {apps.API_TOKEN}"}
    ready = httpx.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text  # in the Service: it takes webhook deliveries
    assert ready.json()["leadership"] | {"lease_expires_in_s": None} == {
        "role": "standby",
        "holder": "pod-b",
        "leader": "pod-a",
        "epoch": 1,
        "lease_expires_in_s": None,
    }
    assert httpx.get(f"{base}/api/v1/status", timeout=10).json()["leadership"]["leader"] == "pod-a"
    assert not daemon.started.is_set()  # no source, no decision, no launch on a standby

    objects = {f"pets/labels/train/{i}.txt": (f"etag{i}", 20) for i in range(3)}
    reply = httpx.post(
        f"{base}/events/minio",
        json=minio.body_of(objects, bucket=bucket),
        headers={"Authorization": f"Bearer {minio.TOKEN}"},
        timeout=10,
    )
    assert reply.status_code == 200 and reply.json()["journaled"] == 3, reply.text
    assert leader.event_count() == 3  # in the shared journal: the leader decides on them
    trigger = httpx.post(f"{base}/api/v1/rules/pets/trigger", headers=auth, json={"reason": "ops"}, timeout=10)
    assert trigger.status_code == 202, trigger.text
    [loaded] = daemon.rulebook.rules.values()
    assert [m.reason for m in leader.rule_state(loaded.rule, now=datetime.now(UTC)).manual] == ["ops"]

    for path in ("/api/v1/models/pets-detector/rollback", "/api/v1/runs/pets-d1/cancel"):
        refused = httpx.post(f"{base}{path}", headers=auth, timeout=10)
        assert refused.status_code == 503, refused.text
        assert "standby; the leader is pod-a" in refused.json()["detail"]
    assert leader.promotions() == []
    metrics = httpx.get(f"{base}/metrics", timeout=10).text
    assert "\nretrain_leader 0.0" in metrics

    # The leader stops cleanly and gives the lease up: the standby takes it within a poll and starts.
    leader.leadership().release("pod-a", epoch=1)
    assert daemon.started.wait(30)
    now_ready = httpx.get(f"{base}/readyz", timeout=10).json()["leadership"]
    assert (now_ready["role"], now_ready["leader"], now_ready["epoch"]) == ("leader", "pod-b", 2)
    assert "\nretrain_leader 1.0" in httpx.get(f"{base}/metrics", timeout=10).text
    wait_until(lambda: len(leader.decisions("pets")) > 0, 30, "the new leader's first decision")
    assert leader.decisions("pets")[0].outcome in ("launch", "skip")
