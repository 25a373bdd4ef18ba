"""The daemon as the shipped Deployment runs it: kubelet's environment (service links included), the
ConfigMaps as kubelet mounts them, the pod's user, a read-only root filesystem and the manifest's volumes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support import apps, kubelet, services
from tests.support.minio import TOKEN
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.services, pytest.mark.timeout(600)]


def daemon_pod(
    tmp_path: Path, s3: services.S3Server, docs: list[dict[str, object]], **kwargs: object
) -> kubelet.DaemonPod:
    journal = tmp_path / "journal-volume"
    journal.mkdir()
    return kubelet.DaemonPod(
        docs=docs,  # type: ignore[arg-type]
        workdir=tmp_path / "pod",
        secrets={
            "retrain-daemon": {"webhook_token": TOKEN, "api_token": apps.API_TOKEN},
            "retrain-s3": {"access_key": s3.access_key, "secret_key": s3.secret_key},
        },
        claims={"retrain-journal": journal},
        settings={
            "sources.s3.endpoint": s3.endpoint,
            "kfp.host": f"http://127.0.0.1:{services.free_port()}",  # no KFP needed here
        },
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
def buckets(s3_server: services.S3Server) -> Iterator[None]:
    """The buckets the shipped rules and settings name (datasets, retrain), empty."""
    client = s3_server.client()
    for bucket in ("datasets", "retrain"):
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
    yield


@pytest.mark.parametrize("links", [None, True], ids=["as-shipped", "service-links-on"])
def test_the_rendered_deployment_starts_as_kubelet_starts_it(
    tmp_path: Path, s3_server: services.S3Server, buckets: None, links: bool | None
) -> None:
    docs = kubelet.render("base")
    pod = daemon_pod(tmp_path, s3_server, docs, service_links=links)
    spec = pod.pod_spec()
    assert spec.read_only_root and spec.uid == 10001
    if links:
        assert "RETRAIN_DAEMON_SERVICE_HOST" in spec.env  # kubelet's service links, which are not settings
    else:
        assert not any(name.endswith("_SERVICE_HOST") for name in spec.env)  # enableServiceLinks: false
    pod.start()
    try:
        wait_until(lambda: httpx.get(f"{pod.url}/readyz", timeout=5).status_code == 200, 60, "readiness")
        rules = httpx.get(f"{pod.url}/api/v1/rules", timeout=5).json()
        assert sorted(r["name"] for r in rules["rules"]) == ["pets", "traffic-nightly", "traffic-weekly"]
        log = pod.log.read_text()
        assert "Read-only file system" not in log and "Traceback" not in log, pod.log_tail()
        assert pod.stop() == 0
    finally:
        pod.kill()
    # It wrote where the manifest mounts a volume, and nowhere else (the root filesystem is read-only).
    assert (tmp_path / "journal-volume" / "journal.db").exists()
    assert list((tmp_path / "pod" / "image-workdir").iterdir()) == []


def test_a_rule_edit_arrives_by_kubelet_s_symlink_swap(
    tmp_path: Path, s3_server: services.S3Server, buckets: None
) -> None:
    docs = kubelet.render("base")
    pod = daemon_pod(tmp_path, s3_server, docs).start()
    try:
        rules_map = pod.configmap("retrain-rules")["data"]
        edited = yaml.safe_load(rules_map["pets.yaml"])
        edited["limits"]["cooldown"] = "2h"
        pod.update_configmap("rules", {**rules_map, "pets.yaml": yaml.safe_dump(edited)})

        def cooldown() -> str:
            found = httpx.get(f"{pod.url}/api/v1/rules", timeout=5).json()["rules"]
            return str(next(r for r in found if r["name"] == "pets")["rule"]["limits"]["cooldown"])

        wait_until(lambda: cooldown() == "2h", 30, "the edited rule to be in force")
        # A broken edit keeps the last good version and is reported.
        pod.update_configmap("rules", {**rules_map, "pets.yaml": "name: pets\nnot: [valid"})
        wait_until(lambda: httpx.get(f"{pod.url}/api/v1/rules", timeout=5).json()["errors"] != [], 30, "the error")
        assert cooldown() == "2h"
        assert pod.stop() == 0
    finally:
        pod.kill()
