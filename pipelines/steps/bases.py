"""Where training starts: the rule's ``model.base``, resolved once per run into a file the training reads.

A base is one of:

- a model config (``yolov8n.yaml``): random initialisation, nothing to fetch;
- weights in S3 (``s3://models/yolov8n.pt``): downloaded with the task's S3 credentials;
- weights on a mounted volume (``file:///data/weights/yolov8n.pt``): the dataset PVC the task mounts;
- a registered model (``models:/NAME@champion`` or ``models:/NAME/3``): its weights, from MLflow. Before a
  first champion exists, ``model.base_if_no_champion`` (any of the kinds above) is used instead, and without
  it the run fails with a message saying so.

Nothing is downloaded from the internet: a bare ``yolov8n.pt`` must be a file the image or the volume
provides. The result is a folder holding ``weights.pt`` or ``config.txt`` (the model config's name), plus
``source.txt`` saying where it came from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from daemon.registry import mlflow as registry


class BaseUnavailable(RuntimeError):
    """The base weights cannot be had (missing file, object or champion); the message says what to set."""


def _s3(uri: str, target: Path, *, endpoint: str, secure: bool) -> None:
    from minio import Minio
    from minio.error import S3Error

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not endpoint:
        raise BaseUnavailable(f"base {uri} is in S3 but the run has no S3 endpoint (sources.s3.endpoint)")
    client = Minio(
        endpoint,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        secure=secure,
    )
    try:
        client.fget_object(bucket, key, str(target))
    except S3Error as exc:
        raise BaseUnavailable(f"base weights {uri} cannot be read ({exc.code}): upload them there first") from exc


def _registered(uri: str, target: Path, *, tracking_uri: str) -> bool:
    """Download a registered model's weights; False when it does not exist (no champion yet)."""
    import mlflow

    name, _, ref = uri.removeprefix("models:/").partition("@")
    if ref and registry.Mlflow(tracking_uri=tracking_uri).champion(name) is None and ref == "champion":
        return False
    registry.use_globally(tracking_uri)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(target.parent / "registered")))
    weights = sorted(local.rglob("*.pt"))
    if not weights:
        raise BaseUnavailable(f"{uri} holds no .pt weights")
    shutil.copyfile(weights[0], target)
    return True


def resolve(base: str, *, fallback: str | None, out: Path, tracking_uri: str, s3_endpoint: str, s3_secure: bool) -> str:
    """Resolve ``base`` (or ``fallback`` for a champion that does not exist yet) into ``out``; returns a line
    saying what was used."""
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    if base.startswith("models:/"):
        if _registered(base, weights, tracking_uri=tracking_uri):
            return _record(out, f"{base} (registered model)")
        if fallback is None:
            raise BaseUnavailable(
                f"{base} does not exist yet (no champion): set model.base_if_no_champion in the rule for the "
                "first run (a .yaml config, s3://.../x.pt or file:///.../x.pt)"
            )
        used = resolve(
            fallback, fallback=None, out=out, tracking_uri=tracking_uri, s3_endpoint=s3_endpoint, s3_secure=s3_secure
        )
        return _record(out, f"{used}, as {base} has no champion yet")
    if base.startswith("s3://"):
        _s3(base, weights, endpoint=s3_endpoint, secure=s3_secure)
        return _record(out, base)
    if base.endswith((".yaml", ".yml")) and not base.startswith("file://"):
        (out / "config.txt").write_text(base)
        return _record(out, f"{base} (random initialisation)")
    path = Path(unquote(urlparse(base).path)) if base.startswith("file://") else Path(base)
    if not path.is_file():
        raise BaseUnavailable(
            f"base weights {base} not found: nothing is downloaded at run time; put the file on the mounted "
            "volume (file:///...), in S3 (s3://...), or start from a .yaml config"
        )
    shutil.copyfile(path, weights)
    return _record(out, base)


def _record(out: Path, used: str) -> str:
    (out / "source.txt").write_text(used)
    return used


def model_argument(folder: Path) -> str:
    """What to hand ``YOLO(...)`` for a resolved base folder: the weights file or the config name."""
    weights = folder / "weights.pt"
    if weights.is_file():
        return str(weights)
    return (folder / "config.txt").read_text().strip()
