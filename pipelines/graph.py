"""The retraining pipeline (KFP v2): [check accelerator] -> prepare dataset (materialize and validate) ->
[tune] -> train -> evaluate and promote, compiled to IR YAML.

One definition runs on a cluster through Kubeflow Pipelines and on a laptop through ``kfp.local``. The
pipeline's shape follows the rule at compile time (:class:`pipelines.arguments.Shape`): with tuning,
trials fan out in a ``ParallelFor`` with the rule's parallelism (one GPU each on the cluster) and the best
one is trained in full; without, training starts from the rule's hyperparameters. A rule that trains on
GPUs starts with the accelerator check on a GPU node, so a node without a usable GPU fails the run before
any data is downloaded; a CPU rule has no such task (its training step prints the same report). Each task
is a process (a pod on the cluster) whose start-up costs seconds: materializing and validating are one
task, which also spares a copy of the dataset between them. Cluster settings (GPU
type and count, ``/dev/shm``, the dataset PVC, secrets as environment, retries, timeouts, node selector,
tolerations, the image) come from ``settings.pipeline`` and are ignored by ``kfp.local``.
"""

import json
from pathlib import Path
from typing import Any

from kfp import compiler, dsl, kubernetes

from daemon import settings as settings_mod
from pipelines import components
from pipelines.arguments import PIPELINE_NAME, Shape


def _components(image: str) -> dict[str, Any]:
    wrap = dsl.component(base_image=image, install_kfp_package=False)
    return {
        name: wrap(func)
        for name, func in {
            "check_accelerator": components.check_accelerator,
            "prepare_dataset": components.prepare_dataset,
            "sample_trials": components.sample_trials,
            "run_trial": components.run_trial,
            "pick_best": components.pick_best,
            "train_model": components.train_model,
            "evaluate_and_promote": components.evaluate_and_promote,
        }.items()
    }


def _cluster(task: Any, config: settings_mod.PipelineSettings, *, gpus: int, data: bool, heavy: bool) -> Any:
    """Apply the cluster settings to one task (kfp.local ignores all of them).

    Caching is off for every task: KFP keeps the compiled flag for runs of an uploaded pipeline version, and a
    cached task would skip real work (a training, a promotion) that must happen once per run key. Every task
    has cpu and memory requests and a memory limit (a namespace with a ResourceQuota refuses a pod without
    them): ``heavy`` tasks (training, trials, evaluation) the training sizes, the others the light ones. The
    retry window is Argo's ``maxDuration`` over all attempts (:meth:`PipelineSettings.retry_window`)."""
    task.set_caching_options(False)
    task.set_retry(
        num_retries=config.retries,
        backoff_duration=f"{config.retry_backoff_s}s",
        backoff_factor=2.0,
        backoff_max_duration=f"{config.retry_window()}s",
    )
    kubernetes.set_timeout(task, seconds=config.task_timeout_s)
    if heavy:
        task.set_cpu_request(config.cpu_request).set_memory_request(config.memory_request)
        task.set_memory_limit(config.memory_limit)
    else:
        task.set_cpu_request(config.light_cpu_request).set_memory_request(config.light_memory_request)
        task.set_memory_limit(config.light_memory_limit)
    if config.s3_secret:
        kubernetes.use_secret_as_env(
            task,
            secret_name=config.s3_secret,
            secret_key_to_env={"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"},
        )
    if config.mlflow_secret:
        kubernetes.use_secret_as_env(
            task, secret_name=config.mlflow_secret, secret_key_to_env={"token": "MLFLOW_TRACKING_TOKEN"}
        )
    if data and config.dataset_pvc:
        kubernetes.mount_pvc(task, pvc_name=config.dataset_pvc, mount_path=config.dataset_mount_path)
    if heavy:
        # DataLoader workers share batches through /dev/shm: 64Mi by default in a container.
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=config.shm_size
        )
    if gpus > 0:
        task.set_accelerator_type(config.accelerator_type).set_accelerator_limit(gpus)
        for key, value in config.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for toleration in config.tolerations:
            kubernetes.add_toleration(
                task,
                key=toleration.get("key"),
                operator=toleration.get("operator", "Equal"),
                value=toleration.get("value"),
                effect=toleration.get("effect"),
            )
    return task


def build(*, image: str, config: settings_mod.PipelineSettings, shape: Shape) -> Any:
    """The pipeline for one shape, its tasks configured for the cluster."""
    c = _components(image)
    gpus = shape.gpus

    @dsl.pipeline(name=PIPELINE_NAME, description="Validate, tune, train, evaluate and promote a YOLO detector")
    def retrain(
        run_key: str,
        rule: str,
        manifest_uri: str,
        registered_name: str,
        base_model: str = "yolov8n.yaml",
        base_if_no_champion: str = "",
        epochs: int = 100,
        imgsz: int = 640,
        batch: int = 16,
        hyperparameters_json: str = "{}",
        promotion_json: str = "{}",
        tune_space_json: str = "{}",
        tune_trials: int = 0,
        tune_epochs: int = 10,
        tune_seed: int = 0,
        mlflow_tracking_uri: str = "",
        experiment: str = "",
        s3_endpoint: str = "",
        s3_secure: bool = True,
        val_fraction: float = config.val_fraction,
        max_bad_fraction: float = config.max_bad_fraction,
        max_background_fraction: float = config.max_background_fraction,
        trainer_json: str = json.dumps(config.trainer_options()),
        require_gpu: bool = False,
        code_version: str = "",
    ) -> str:
        prep = c["prepare_dataset"](
            manifest_uri=manifest_uri,
            s3_endpoint=s3_endpoint,
            s3_secure=s3_secure,
            val_fraction=val_fraction,
            base_model=base_model,
            base_if_no_champion=base_if_no_champion,
            mlflow_tracking_uri=mlflow_tracking_uri,
            max_bad_fraction=max_bad_fraction,
            max_background_fraction=max_background_fraction,
        )
        accel = None
        if gpus > 0:
            accel = _cluster(
                c["check_accelerator"](require_gpu=require_gpu), config, gpus=gpus, data=False, heavy=False
            )
            prep.after(accel)
        prep = _cluster(prep, config, gpus=0, data=True, heavy=False)
        hyperparameters = hyperparameters_json
        if shape.tune:
            sampled = _cluster(
                c["sample_trials"](
                    space_json=tune_space_json,
                    trials=tune_trials,
                    seed=tune_seed,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                    experiment=experiment,
                    run_key=run_key,
                    rule=rule,
                ),
                config,
                gpus=0,
                data=False,
                heavy=False,
            )
            if accel is not None:  # nothing starts before the GPU node is known to be usable
                sampled.after(accel)
            with dsl.ParallelFor(sampled.output, parallelism=shape.parallelism) as asked:
                trial = _cluster(
                    c["run_trial"](
                        dataset=prep.outputs["dataset"],
                        trial=asked,
                        space_json=tune_space_json,
                        base_json=hyperparameters_json,
                        base=prep.outputs["base"],
                        epochs=tune_epochs,
                        imgsz=imgsz,
                        batch=batch,
                        gpus=min(gpus, 1),
                        mlflow_tracking_uri=mlflow_tracking_uri,
                        experiment=experiment,
                        run_key=run_key,
                        rule=rule,
                        trainer_json=trainer_json,
                    ),
                    config,
                    gpus=min(gpus, 1),
                    data=False,
                    heavy=True,
                )
            best = _cluster(
                c["pick_best"](
                    results=dsl.Collected(trial.outputs["Output"]),
                    base_json=hyperparameters_json,
                    mlflow_tracking_uri=mlflow_tracking_uri,
                ),
                config,
                gpus=0,
                data=False,
                heavy=False,
            )
            hyperparameters = best.output
        train = _cluster(
            c["train_model"](
                dataset=prep.outputs["dataset"],
                hyperparameters_json=hyperparameters,
                base=prep.outputs["base"],
                epochs=epochs,
                imgsz=imgsz,
                batch=batch,
                gpus=gpus,
                mlflow_tracking_uri=mlflow_tracking_uri,
                experiment=experiment,
                run_key=run_key,
                rule=rule,
                code_version=code_version,
                trainer_json=trainer_json,
            ),
            config,
            gpus=gpus,
            data=False,
            heavy=True,
        )
        promote = _cluster(
            c["evaluate_and_promote"](
                dataset=prep.outputs["dataset"],
                model=train.outputs["model"],
                train_info=train.outputs["Output"],
                registered_name=registered_name,
                promotion_json=promotion_json,
                imgsz=imgsz,
                gpus=gpus,
                mlflow_tracking_uri=mlflow_tracking_uri,
                run_key=run_key,
                batch=batch,
                trainer_json=trainer_json,
            ),
            config,
            gpus=gpus,
            data=False,
            heavy=True,
        )
        return promote.output

    return retrain


def compile_to(path: Path, *, image: str, config: settings_mod.PipelineSettings, shape: Shape) -> Path:
    """Write the IR YAML that the KFP UI accepts."""
    compiler.Compiler().compile(build(image=image, config=config, shape=shape), package_path=str(path))
    return path
