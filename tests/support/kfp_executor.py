"""One run of the KFP stand-in: the uploaded IR executed by ``kfp.local``, every task in a pod of its own.

``python -m tests.support.kfp_executor RUN_DIR`` reads ``RUN_DIR/run.json`` (the package path, the run's
parameters, the Secrets and volumes the cluster has, the pods' user) and runs the pipeline exactly as
compiled, the way KFP's backend would:

- the DAG, its ``ParallelFor`` fan-out and ``dsl.Collected`` fan-in, each task's retry policy (with its
  backoff) and its caching flag are kfp.local's own handling of the IR (``enable_caching=True``, as KFP
  caches by default; a task compiled with caching off always runs);
- the Kubernetes part of the IR, which kfp.local ignores, is applied here per task: the task runs as a pod
  (:mod:`tests.support.pods`) as the image's user, with only the image's environment, the container's
  ``env`` and the ``secretAsEnv`` variables of Secrets that exist (a missing Secret fails the task, as
  kubelet would), its ``pvcMount`` volumes at their mount paths (a missing claim fails it), its memory
  ``emptyDir`` as a tmpfs, its own HOME and temp folder, and nothing of the daemon's folders;
- the outcome lands in ``RUN_DIR/result.json``: the pipeline's output or the error.

What it is not: there is no scheduler, no node, no GPU, no Argo; resource requests, node selectors and
tolerations are read but not enforced, and every task pod shares this machine's network.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from tests.support import pods


def _platform(package: Path) -> dict[str, Any]:
    """The kfp-kubernetes settings of each executor, from the IR's second YAML document."""
    documents = [d for d in yaml.safe_load_all(package.read_text()) if d]
    for document in documents[1:]:
        kubernetes = document.get("platforms", {}).get("kubernetes", {})
        if kubernetes:
            return dict(kubernetes.get("deploymentSpec", {}).get("executors", {}))
    return {}


def _executors_by_function(package: Path) -> dict[str, str]:
    """Executor label of each component function (``--function_to_execute NAME`` in its container args)."""
    spec = next(d for d in yaml.safe_load_all(package.read_text()) if d)
    found = {}
    for label, executor in spec["deploymentSpec"]["executors"].items():
        args = executor.get("container", {}).get("args", [])
        if "--function_to_execute" in args:
            found[args[args.index("--function_to_execute") + 1]] = label
    return found


class TaskPods:
    """Turns each task's command into a pod with the IR's Kubernetes settings."""

    def __init__(self, run: dict[str, Any], run_dir: Path) -> None:
        package = Path(run["package"])
        self.run = run
        self.run_dir = run_dir
        self.platform = _platform(package)
        self.by_function = _executors_by_function(package)
        self.count = 0

    def _env(self, label: str, task_env: dict[str, str], home: Path) -> dict[str, str]:
        env = dict(self.run["image_env"])
        env.update(task_env)
        env.update({"HOME": str(home), "TMPDIR": str(home), "MPLCONFIGDIR": str(home / "matplotlib")})
        for item in self.platform.get(label, {}).get("secretAsEnv", []):
            name = item.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant") or item.get("secretName")
            secret = self.run["secrets"].get(name)
            if secret is None:
                raise RuntimeError(f"task {label}: secret {name!r} not found (CreateContainerConfigError)")
            for pair in item.get("keyToEnv", []):
                if pair["secretKey"] not in secret:
                    raise RuntimeError(f"task {label}: key {pair['secretKey']!r} not in secret {name!r}")
                env[pair["envVar"]] = secret[pair["secretKey"]]
        env.update(self.run["inject"].get(label, {}))
        return env

    def _mounts(self, label: str) -> list[pods.Mount]:
        mounts = []
        for item in self.platform.get(label, {}).get("pvcMount", []):
            claim = item.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant") or item.get("constant")
            source = self.run["volumes"].get(claim)
            if source is None:
                raise RuntimeError(f"task {label}: persistentvolumeclaim {claim!r} not found (pod unschedulable)")
            mounts.append(pods.Mount(target=item["mountPath"], source=source, read_only=True))
        mounts += [
            pods.Mount(target=item["mountPath"], size=item.get("sizeLimit"))
            for item in self.platform.get(label, {}).get("emptyDirMounts", [])
        ]
        mounts += [pods.Mount(**m) for m in self.run.get("image_mounts", [])]
        return mounts

    def run_task(self, full_command: list[str], env_vars: dict[str, str] | None) -> int:
        # A lightweight component's args end with `--function_to_execute NAME`.
        marker = full_command.index("--function_to_execute")
        label = self.by_function[full_command[marker + 1]]
        self.count += 1
        home = self.run_dir / "pods" / f"{self.count:03d}-{label}"
        home.mkdir(parents=True)
        os.chown(home, self.run["uid"], self.run["gid"])
        try:
            spec = pods.PodSpec(
                argv=full_command,
                env=self._env(label, dict(env_vars or {}), home),
                uid=self.run["uid"],
                gid=self.run["gid"],
                groups=[self.run["gid"]],
                cwd=str(home),
                mounts=self._mounts(label),
                expose=pods.interpreter_paths(),
                passwd=self.run["passwd"],
            )
        except RuntimeError as exc:
            print(f"[kfp-standin] {exc}", flush=True)
            return 1
        print(f"[kfp-standin] task {label} as pod {home.name}", flush=True)
        pod = pods.Pod(spec, workdir=self.run_dir / "pods", log=home / "log.txt")
        code = pod.wait(24 * 3600)
        print((home / "log.txt").read_text(errors="replace"), end="", flush=True)
        print(f"[kfp-standin] task {label} ended with {code}", flush=True)
        return code


def main(run_dir: Path) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    result: dict[str, Any]
    try:
        from kfp import components, local
        from kfp.local import subprocess_task_handler

        tasks = TaskPods(run, run_dir)
        subprocess_task_handler.run_local_subprocess = tasks.run_task  # every task becomes a pod
        root = run_dir / "root"
        root.mkdir()
        os.chown(root, run["uid"], run["gid"])
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            enable_caching=True,
            cache_root=run["cache_root"],
        )
        pipeline = components.load_component_from_file(run["package"])
        task = pipeline(**run["parameters"])
        result = {"state": "SUCCEEDED", "output": task.output}
    except Exception as exc:  # any failure is the run's failure, reported like KFP's state
        result = {
            "state": "FAILED",
            "error": f"{exc.__class__.__name__}: {exc}"[:2000],
            "trace": traceback.format_exc(),
        }
    (run_dir / "result.json").write_text(json.dumps(result))
    sys.exit(0 if result["state"] == "SUCCEEDED" else 1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
