"""materialize_dataset: turn the daemon's snapshot manifest into a ready YOLO dataset folder.

- Reads each object from S3 or the mounted PV and checks it is still the version the snapshot recorded
  (etag for S3, size:mtime for files): data that changed after the snapshot fails the step clearly, and the
  daemon will decide again on the new data.
- Understands the layouts datasets come in: ``images/{train,val,valid,test}/`` with ``labels/`` beside
  (YOLO, Ultralytics' exports), ``{train,valid,test}/{images,labels}/`` (Roboflow's export), and
  ``images/`` + ``labels/`` without split folders. ``valid`` (or ``validation``) is the validation split;
  a ``test`` split is kept out of training (``data.yaml``'s ``test``).
- Keeps the dataset's own splits where it has them; otherwise splits by a hash of the image name, so an
  image never moves between splits as the dataset grows (stable holdout).
- Writes ``data.yaml`` and a copy of the manifest (lineage).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

from daemon.engine import snapshots

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val")
#: Split folder names as datasets spell them, and the split each one is.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
KINDS = ("images", "labels")


class DataChanged(RuntimeError):
    """An object no longer matches the snapshot."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    dataset: str
    source: str
    fingerprint: str
    items: list[tuple[str, str]]
    classes: list[str] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            dataset=data["dataset"],
            source=data["source"],
            fingerprint=data["fingerprint"],
            items=[(k, v) for k, v in data["items"]],
            classes=data.get("classes"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "items": [list(item) for item in self.items],
            "classes": self.classes,
        }


def hash_split(stem: str, *, val_fraction: float) -> str:
    """``val`` for a stable ``val_fraction`` of names, by a hash of the name alone."""
    bucket = int(hashlib.sha256(stem.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "val" if bucket < val_fraction else "train"


def _s3_client(endpoint: str, secure: bool) -> Any:
    from minio import Minio

    return Minio(
        endpoint,
        access_key=os.environ.get("AWS_ACCESS_KEY_ID"),
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        secure=secure,
    )


def read_manifest(uri: str, *, s3_endpoint: str = "", s3_secure: bool = True) -> Manifest:
    """Load a manifest from ``file:///...`` or ``s3://bucket/key``."""
    if uri.startswith("s3://"):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        response = _s3_client(s3_endpoint, s3_secure).get_object(bucket, key)
        try:
            data = json.loads(response.read())
        finally:
            response.close()
            response.release_conn()
    else:
        data = json.loads(Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri).read_text())
    return Manifest.from_json(data)


def _layout_of(key: str) -> tuple[str, str, str]:
    """(kind, declared split or "", stem) of a key in any understood layout; kind "" for other files."""
    parts = key.split("/")
    if parts[0] in KINDS:  # images/[split/]..., labels/[split/]...
        kind, rest = parts[0], parts[1:]
        split = SPLIT_NAMES.get(rest[0], "") if len(rest) > 1 else ""
        inner = rest[1:] if split else rest
    elif len(parts) > 2 and parts[0] in SPLIT_NAMES and parts[1] in KINDS:  # Roboflow: split/images/...
        kind, split, inner = parts[1], SPLIT_NAMES[parts[0]], parts[2:]
    else:
        return "", "", ""
    return kind, split, "/".join(inner).rsplit(".", 1)[0]


def _target(out: Path, kind: str, split: str, stem: str, suffix: str) -> Path:
    flat = stem.replace("/", "__")
    return out / kind / split / f"{flat}{suffix}"


def materialize(
    manifest: Manifest, *, out_dir: Path, s3_endpoint: str = "", s3_secure: bool = True, val_fraction: float = 0.2
) -> dict[str, Any]:
    """Build the dataset folder; returns a summary (counts per split).

    Raises:
        DataChanged: an object differs from the snapshot (or is gone).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    client = _s3_client(s3_endpoint, s3_secure) if manifest.source.startswith("s3://") else None
    bucket, _, prefix = manifest.source.removeprefix("s3://").partition("/")
    root = Path(unquote(urlparse(manifest.source).path)) if client is None else None
    counts: dict[str, int] = {}
    # Without split folders, images decide the split and labels follow their image (same stem).
    image_split: dict[str, str] = {}
    for key, _ in manifest.items:
        kind, declared, stem = _layout_of(key)
        if kind == "images" and not declared:
            image_split[stem] = hash_split(stem, val_fraction=val_fraction)
    for key, version in manifest.items:
        kind, declared, stem = _layout_of(key)
        if kind not in KINDS:
            continue
        split = declared or image_split.get(stem) or hash_split(stem, val_fraction=val_fraction)
        suffix = "." + key.rsplit(".", 1)[-1].lower()
        target = _target(out_dir, kind, split, stem, suffix)
        target.parent.mkdir(parents=True, exist_ok=True)
        if client is not None:
            _fetch_s3(client, bucket, prefix + key, version, target)
        else:
            assert root is not None
            _copy_file(root / key, version, target, key)
        counts[f"{kind}/{split}"] = counts.get(f"{kind}/{split}", 0) + 1
    names = manifest.classes or _infer_classes(out_dir)
    data: dict[str, Any] = {"path": str(out_dir), "train": "images/train", "val": "images/val"}
    if counts.get("images/test"):
        data["test"] = "images/test"  # kept out of training and of the best-epoch choice
    data["names"] = dict(enumerate(names))
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return {"fingerprint": manifest.fingerprint, "counts": counts, "classes": list(names)}


def _fetch_s3(client: Any, bucket: str, key: str, version: str, target: Path) -> None:
    from minio.error import S3Error

    try:
        stat = client.stat_object(bucket, key)
    except S3Error as exc:
        raise DataChanged(f"s3://{bucket}/{key} is gone since the snapshot ({exc.code})") from exc
    etag = (stat.etag or "").strip('"')
    if etag != version:
        raise DataChanged(f"s3://{bucket}/{key} changed after the snapshot: etag {etag}, snapshot {version}")
    client.fget_object(bucket, key, str(target))


def _copy_file(path: Path, version: str, target: Path, key: str) -> None:
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataChanged(f"{key} is gone since the snapshot") from exc
    now = f"{stat.st_size}:{stat.st_mtime_ns}"
    if now != version:
        raise DataChanged(f"{key} changed after the snapshot: now {now}, snapshot {version}")
    shutil.copyfile(path, target)


def _infer_classes(out_dir: Path) -> list[str]:
    highest = -1
    for label in out_dir.glob("labels/*/*.txt"):
        for line in label.read_text(errors="replace").splitlines():
            head = line.split()[:1]
            if head and head[0].isdigit():
                highest = max(highest, int(head[0]))
    return [f"class{i}" for i in range(highest + 1)]


def manifest_for_folder(root: Path, *, dataset: str, classes: list[str] | None = None) -> Manifest:
    """A manifest of a folder as it is now (for running the pipeline by hand, and for tests)."""
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and _layout_of(rel)[0] in KINDS and not path.name.startswith("."):
            stat = path.stat()
            items.append((rel, f"{stat.st_size}:{stat.st_mtime_ns}"))
    digest = snapshots.fingerprint(items) or ""
    return Manifest(dataset=dataset, source=f"file://{root}", fingerprint=digest, items=items, classes=classes)
