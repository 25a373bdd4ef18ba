"""The rendered HA overlay in the harness: two daemon pods of deploy/overlays/ha on one PostgreSQL journal,
each naming itself lease holder through the downward API (``fieldRef: metadata.name``); the leader's pod is
killed, the other takes over and launches a run through the KFP stand-in."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support import apps, kubelet, pods, services
from tests.support.kfp_standin import KfpStandIn
from tests.support.minio import TOKEN, body_of
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.timeout(600)]

RULE = """name: shelves
dataset: {source: "s3://BUCKET/shelves/"}
model: {registered_name: shelves-ha}
triggers: [{new_labels: {min_new_labels: 2, quiet_period: 1s}}]
limits: {cooldown: 0s}
"""


def tcp_service(socket_path: str) -> tuple[int, socket.socket]:
    """PostgreSQL as a cluster Service would offer it: a TCP port (the test server listens on a Unix socket in
    a folder the pods cannot see), each connection relayed to the socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                outer, _ = listener.accept()
                inner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                inner.connect(socket_path)
                threading.Thread(target=pods._splice, args=(outer, inner), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], listener


def leadership(pod: kubelet.DaemonPod) -> dict[str, Any]:
    try:
        found: dict[str, Any] = httpx.get(f"{pod.url}/api/v1/status", timeout=5).json()["leadership"]
    except (httpx.TransportError, ValueError, KeyError):
        return {}
    return found


def test_the_ha_overlay_runs_two_pods_and_the_survivor_of_a_killed_leader_launches(
    tmp_path: Path,
    s3_server: services.S3Server,
    s3_bucket: str,
    postgres_server: services.PostgresServer,
) -> None:
    docs = kubelet.render("overlays/ha")
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    local = urlsplit(postgres_server.create_database())
    socket_dir = parse_qs(local.query)["host"][0]
    port, relay = tcp_service(f"{socket_dir}/.s.PGSQL.5432")
    url = f"postgresql://postgres@127.0.0.1:{port}{local.path}"
    standin = KfpStandIn().start()  # records the runs it is asked for; nothing needs to execute here

    def replica(name: str) -> kubelet.DaemonPod:
        return kubelet.DaemonPod(
            docs=docs,
            workdir=tmp_path / name,
            name=name,
            secrets={
                "retrain-daemon": {"webhook_token": TOKEN, "api_token": apps.API_TOKEN},
                "retrain-s3": {"access_key": s3_server.access_key, "secret_key": s3_server.secret_key},
                "retrain-journal": {"url": url},
            },
            settings={
                "kfp.host": standin.url,
                "kfp.poll_interval_s": 1,
                "kfp.inputs_uri": f"s3://{s3_bucket}/inputs/",
                "sources.s3.endpoint": s3_server.endpoint,
                "leader.poll_interval_s": 1,
            },
            rules={"shelves.yaml": RULE.replace("BUCKET", s3_bucket)},
        )

    first, second = replica("retrain-daemon-6b8f7d9c5-aaaaa"), replica("retrain-daemon-6b8f7d9c5-bbbbb")
    assert first.pod_spec().env["RETRAIN_LEADER__HOLDER"] == "retrain-daemon-6b8f7d9c5-aaaaa"  # the downward API
    try:
        first.start()
        wait_until(
            lambda: leadership(first).get("role") == "leader", 60, "the first pod to lead", explain=first.log_tail
        )
        second.start()
        wait_until(lambda: leadership(second).get("role") == "standby", 60, "the second pod to stand by")
        assert leadership(second)["leader"] == first.name
        first.kill()  # the leader's pod dies without a word (its node is gone)
        wait_until(
            lambda: leadership(second).get("role") == "leader",
            90,
            "the standby to take over",
            explain=second.log_tail,
        )
        assert leadership(second)["holder"] == second.name
        # Labels arrive; the new leader launches a run through the KFP API.
        client = s3_server.client()
        objects = {}
        for name in ("a", "b"):
            key = f"shelves/labels/train/{name}.txt"
            result = client.put_object(s3_bucket, key, io.BytesIO(b"0 0.5 0.5 0.1 0.1\n"), 18)
            objects[key] = (result.etag, 18)
        reply = httpx.post(
            f"{second.url}/events/minio",
            json=body_of(objects, bucket=s3_bucket),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert reply.status_code == 200, reply.text
        wait_until(lambda: bool(standin.runs), 60, "a run created in KFP", explain=second.log_tail)
        [run] = standin.runs.values()
        journaled = httpx.get(f"{second.url}/api/v1/runs", timeout=5).json()["runs"]
        assert [r["run_key"] for r in journaled] == [run["display_name"]]
        assert second.stop() == 0
    finally:
        first.kill()
        second.kill()
        standin.close()
        relay.close()
