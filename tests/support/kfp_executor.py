"""One run of the KFP stand-in: the uploaded IR executed under the KFP backend's rules, every task a pod.

``python -m tests.support.kfp_executor RUN_DIR`` reads ``RUN_DIR/run.json`` (the package path, the run's
parameters, the cluster: Secrets, claims, quota, the pods' user) and runs the pipeline exactly as compiled.
kfp.local walks the DAG (its ``ParallelFor`` fan-out and ``dsl.Collected`` fan-in, the caching flags); every
rule of a real backend that kfp.local does not have is applied here (:mod:`tests.support.kfp_backend` cites
where each comes from):

- each task is a pod (:mod:`tests.support.pods`) as the image's user, with only the image's environment, the
  container's ``env``, the ``secretAsEnv`` variables, its ``pvcMount`` claims and memory ``emptyDir`` volumes,
  a 64 MiB ``/dev/shm`` unless one is mounted there, in its own PID and network namespaces;
- a pod whose Secret or claim does not exist stays **Pending** (``CreateContainerConfigError``, unschedulable)
  and the run waits, as on a cluster, until the object appears or the run is cancelled; the task's state is
  reported in ``RUN_DIR/tasks/`` for the stand-in's ``run_details``;
- in a namespace with a quota, a pod without cpu and memory requests is refused;
- retries are **Argo's**: the IR's ``retryPolicy`` is taken out of kfp.local's hands; ``maxDuration`` bounds
  the whole retry window, only failures of the main container are retried (``OnFailure``), not lost pods;
- the executor's output is parsed strictly (protojson): a ``NaN`` fails the task;
- a run retried through the API (``:retry``) re-runs only what did not succeed, as Argo's workflow retry does.

The stand-in's clock can be moved (a node lost "after 3 hours" advances it by 3 hours) so that retry windows
are tested without waiting them out.

What it is not: there is no scheduler, no node, no GPU; node selectors and tolerations are read but not
enforced.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tests.support import kfp_backend, pods


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
    """Turns each task's command into pod attempts with the IR's Kubernetes settings and Argo's retries."""

    def __init__(self, run: dict[str, Any], run_dir: Path, documents: list[dict[str, Any]]) -> None:
        package = Path(run["package"])
        self.run = run
        self.run_dir = run_dir
        self.platform = _platform(package)
        self.by_function = _executors_by_function(package)
        self.executors = dict(documents[0]["deploymentSpec"]["executors"])
        self.retries = _retry_strategies(documents[0])
        self.count = 0
        self.skew = float(run.get("clock_skew_s", 0.0))
        """Seconds the stand-in's clock is ahead of this machine's (moved by simulated node losses)."""
        self.lost: set[str] = set()
        (run_dir / "tasks").mkdir(exist_ok=True)

    def now(self) -> float:
        return time.time() + self.skew

    def _cluster(self) -> dict[str, Any]:
        """What the cluster holds now (the test may create a Secret while a pod is Pending)."""
        path = self.run_dir / "cluster.json"
        return dict(json.loads(path.read_text())) if path.exists() else dict(self.run)

    def _report(self, label: str, state: str, **fields: Any) -> None:
        """The task's state for the stand-in's run_details (KFP's task details come from Argo's nodes)."""
        path = self.run_dir / "tasks" / f"{label}.json"
        known = json.loads(path.read_text()) if path.exists() else {"display_name": label.removeprefix("exec-")}
        known.update(state=state, **fields)
        known.setdefault("create_time", _stamp(self.now()))
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(known))
        partial.replace(path)  # the stand-in reads it while the task runs

    def _env(self, label: str, task_env: dict[str, str], home: Path, cluster: dict[str, Any]) -> dict[str, str]:
        env = dict(self.run["image_env"])
        env.update(task_env)
        env.update({"HOME": str(home), "TMPDIR": str(home), "MPLCONFIGDIR": str(home / "matplotlib")})
        for item in self.platform.get(label, {}).get("secretAsEnv", []):
            name = item.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant") or item.get("secretName")
            secret = cluster["secrets"].get(name)
            if secret is None:
                raise _Pending(f'CreateContainerConfigError: secret "{name}" not found')
            for pair in item.get("keyToEnv", []):
                if pair["secretKey"] not in secret:
                    key = pair["secretKey"]
                    raise _Pending(f"CreateContainerConfigError: couldn't find key {key} in Secret {name}")
                env[pair["envVar"]] = secret[pair["secretKey"]]
        env.update(self.run["inject"].get(label, {}))
        return env

    def _mounts(self, label: str, cluster: dict[str, Any]) -> list[pods.Mount]:
        mounts = []
        for item in self.platform.get(label, {}).get("pvcMount", []):
            claim = item.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant") or item.get("constant")
            source = cluster["volumes"].get(claim)
            if source is None:
                raise _Pending(f'Unschedulable: persistentvolumeclaim "{claim}" not found')
            mounts.append(pods.Mount(target=item["mountPath"], source=source, read_only=True))
        mounts += [
            pods.Mount(target=item["mountPath"], size=item.get("sizeLimit"))
            for item in self.platform.get(label, {}).get("emptyDirMounts", [])
        ]
        if not any(m.target == "/dev/shm" for m in mounts):
            mounts.append(pods.Mount(target="/dev/shm", size=kfp_backend.DEFAULT_SHM))  # the runtime's default
        mounts += [pods.Mount(**m) for m in self.run.get("image_mounts", [])]
        return mounts

    def _spec(self, label: str, full_command: list[str], env_vars: dict[str, str], home: Path) -> pods.PodSpec:
        """The pod, once everything it needs exists; waits Pending (as kubelet does) until then."""
        reported = ""
        while True:
            cluster = self._cluster()
            try:
                return pods.PodSpec(
                    argv=full_command,
                    env=self._env(label, env_vars, home, cluster),
                    uid=self.run["uid"],
                    gid=self.run["gid"],
                    groups=[self.run["gid"]],
                    cwd=str(home),
                    mounts=self._mounts(label, cluster),
                    expose=pods.interpreter_paths(),
                    passwd=self.run["passwd"],
                    isolated=True,
                    reach=self.run.get("reach", []),
                )
            except _Pending as pending:
                if str(pending) != reported:  # kubelet's events: one per reason, not one per retry
                    reported = str(pending)
                    self._report(label, "PENDING", reason=reported, pod_name=home.name)
                    print(f"[kfp-standin] task {label} pod {home.name} Pending: {pending}", flush=True)
                time.sleep(0.5)

    def _attempt(
        self, label: str, full_command: list[str], env_vars: dict[str, str], deadline: float | None
    ) -> kfp_backend.Attempt:
        self.count += 1
        home = self.run_dir / "pods" / f"{self.run.get('attempt', 0)}-{self.count:03d}-{label}"
        home.mkdir(parents=True)
        os.chown(home, self.run["uid"], self.run["gid"])
        refused = kfp_backend.quota_refusal(self.executors[label]) if self.run.get("quota") else None
        started = self.now()
        if refused:
            print(f"[kfp-standin] task {label}: {refused}", flush=True)
            self._report(label, "FAILED", reason=refused)
            return kfp_backend.Attempt(started=started, finished=started, phase="Error", message=refused)
        spec = self._spec(label, full_command, env_vars, home)
        started = self.now()
        self._report(label, "RUNNING", start_time=_stamp(started), pod_name=home.name)
        print(f"[kfp-standin] task {label} as pod {home.name}", flush=True)
        pod = pods.Pod(spec, workdir=self.run_dir / "pods", log=home / "log.txt")
        lose_after = self.run.get("node_loss", {}).get(label)
        crash_after = self.run.get("crash", {}).get(label)
        interrupt = lose_after if lose_after is not None else crash_after
        if interrupt is not None and label not in self.lost:
            self.lost.add(label)  # only the task's first pod: the node goes away, or the container dies
            time.sleep(1.0)
            pod.kill()
            self.skew += float(interrupt)
            if lose_after is not None:
                print(f"[kfp-standin] task {label}: node lost after {interrupt:.0f} s: pod deleted", flush=True)
                phase, message, code = "Error", "pod deleted", -9
            else:
                print(f"[kfp-standin] task {label}: container killed after {interrupt:.0f} s", flush=True)
                phase, message, code = "Failed", f"{label} exited with 137", 137
        else:
            timeout = 24 * 3600.0 if deadline is None else max(0.0, deadline - self.now())
            try:
                code = pod.wait(timeout)
            except subprocess.TimeoutExpired:
                pod.kill()
                code = -9
            phase = "Succeeded" if code == 0 else "Failed"
            message = "" if code == 0 else f"{label} exited with {code}"
            if code == 0 and (problem := _strict_outputs(full_command)):
                phase, message = "Failed", problem  # the launcher cannot read what the task wrote
        print((home / "log.txt").read_text(errors="replace"), end="", flush=True)
        print(f"[kfp-standin] task {label} ended {phase} ({code}) {message}", flush=True)
        return kfp_backend.Attempt(started=started, finished=self.now(), phase=phase, message=message)

    def run_task(self, full_command: list[str], env_vars: dict[str, str] | None) -> int:
        # A lightweight component's args end with `--function_to_execute NAME`.
        marker = full_command.index("--function_to_execute")
        label = self.by_function[full_command[marker + 1]]
        done = self.run_dir / "succeeded" / _task_key(full_command)
        if done.exists():  # a retried run: this task succeeded in an earlier attempt, its outputs are in place
            print(f"[kfp-standin] task {label} succeeded before: kept (Argo's retry keeps succeeded nodes)", flush=True)
            return 0
        code = self._run_with_retries(label, full_command, env_vars)
        if code == 0:
            done.parent.mkdir(exist_ok=True)
            done.write_text(label)
        return code

    def _run_with_retries(self, label: str, full_command: list[str], env_vars: dict[str, str] | None) -> int:
        strategy = self.retries.get(label)
        attempts: list[kfp_backend.Attempt] = []
        while True:
            deadline = kfp_backend.retried_deadline(strategy, attempts)
            attempts.append(self._attempt(label, full_command, dict(env_vars or {}), deadline))
            wait, reason = kfp_backend.next_attempt(strategy, attempts, self.now())
            if wait is None:
                break
            print(f"[kfp-standin] task {label}: retry {len(attempts)} in {wait:.0f} s (Argo backoff)", flush=True)
            scaled = wait * float(self.run.get("time_scale", 1.0))
            time.sleep(scaled)
            self.skew += wait - scaled
        last = attempts[-1]
        if last.phase != "Succeeded":
            self._report(label, "FAILED", reason=reason or last.message, end_time=_stamp(self.now()))
            print(f"[kfp-standin] task {label} failed: {reason or last.message}", flush=True)
            (self.run_dir / "failure.txt").write_text(f"task {label}: {reason or last.message}")
            return 1
        self._report(label, "SUCCEEDED", end_time=_stamp(self.now()))
        return 0


def _task_key(full_command: list[str]) -> str:
    """The same task with the same inputs and outputs, whatever order kfp.local wrote its executor input in."""
    canonical = list(full_command)
    at = canonical.index("--executor_input") + 1
    canonical[at] = json.dumps(json.loads(canonical[at]), sort_keys=True)
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


class _Pending(Exception):
    """The pod cannot start yet."""


def _stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _retry_strategies(spec: dict[str, Any]) -> dict[str, kfp_backend.RetryStrategy]:
    """Argo's retry strategy of each executor, from its task's ``retryPolicy``."""
    components = spec.get("components") or {}
    found = {}
    dags = [spec.get("root", {}).get("dag", {})] + [c["dag"] for c in components.values() if "dag" in c]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            label = components.get(task["componentRef"]["name"], {}).get("executorLabel")
            strategy = kfp_backend.RetryStrategy.of(task.get("retryPolicy"))
            if label and strategy:
                found[label] = strategy
    return found


def _for_kfp_local(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The IR kfp.local walks: retries taken out (Argo's are applied per pod here)."""
    spec = documents[0]
    components = spec.get("components") or {}
    dags = [spec.get("root", {}).get("dag", {})] + [c["dag"] for c in components.values() if "dag" in c]
    for dag in dags:
        for task in (dag.get("tasks") or {}).values():
            task.pop("retryPolicy", None)
    return documents


def _strict_outputs(full_command: list[str]) -> str | None:
    """What Go's protojson says of the task's executor output file, or None when it parses."""
    executor_input = json.loads(full_command[full_command.index("--executor_input") + 1])
    output = Path(executor_input.get("outputs", {}).get("outputFile", ""))
    if not output.is_file():
        return None
    try:
        kfp_backend.parse_strict(output.read_text())
    except ValueError as exc:
        return f"failed to parse the executor output {output.name}: {exc}"
    return None


def main(run_dir: Path) -> None:
    run = json.loads((run_dir / "run.json").read_text())
    result: dict[str, Any]
    try:
        from kfp import components, local
        from kfp.local import executor_input_utils, placeholder_utils, subprocess_task_handler

        documents = [d for d in yaml.safe_load_all(Path(run["package"]).read_text()) if d]
        tasks = TaskPods(run, run_dir, documents)
        subprocess_task_handler.run_local_subprocess = tasks.run_task  # every task becomes a pod
        attempt = int(run.get("attempt", 0))
        local_package = run_dir / f"kfp-local-{attempt}.yaml"
        local_package.write_text(yaml.safe_dump_all(_for_kfp_local(documents), sort_keys=False))
        root = run_dir / "root"
        root.mkdir(exist_ok=True)
        os.chown(root, run["uid"], run["gid"])
        # The same output paths at every attempt of the run (kfp.local would stamp them with the time), so a
        # retried run finds what its succeeded tasks wrote, as Argo's workflow retry keeps succeeded nodes.
        executor_input_utils.get_local_pipeline_resource_name = lambda name: f"{name}-{run_dir.name}"
        placeholder_utils.make_random_id = lambda: run_dir.name.replace("-", "")[:8]
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            enable_caching=True,
            cache_root=run["cache_root"],
        )
        pipeline = components.load_component_from_file(str(local_package))
        task = pipeline(**run["parameters"])
        result = {"state": "SUCCEEDED", "output": task.output}
    except Exception as exc:  # any failure is the run's failure, reported like KFP's state
        failure = run_dir / "failure.txt"
        cause = failure.read_text() if failure.exists() else f"{exc.__class__.__name__}: {exc}"
        result = {"state": "FAILED", "error": cause[:2000], "trace": traceback.format_exc()}
    (run_dir / "result.json").write_text(json.dumps(result))
    sys.exit(0 if result["state"] == "SUCCEEDED" else 1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
