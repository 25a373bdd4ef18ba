"""materialize_dataset: turn the daemon's snapshot manifest into a ready YOLO dataset folder.

- Reads each object from S3 or the mounted PV and checks it is still the version the snapshot recorded
  (etag for S3, size:mtime for files): data that changed after the snapshot fails the step clearly, and the
  daemon will decide again on the new data.
- Understands the layouts datasets come in: ``images/{train,val,valid,test}/`` with ``labels/`` beside
  (YOLO, Ultralytics' exports), ``{train,valid,test}/{images,labels}/`` (Roboflow's export), ``images/`` +
  ``labels/`` without split folders (the folder names as the rule sets them), and a flat folder (``layout:
  flat``: each image beside its label, in the root or in split folders). ``valid`` (or ``validation``) is
  the validation split; a ``test`` split is kept out of training (``data.yaml``'s ``test``).
- Class names come from the rule (``dataset.classes``), else the dataset's own ``data.yaml`` (``names``,
  a list or a mapping, or ``nc`` alone), else its ``classes.txt``, read from the dataset's root; when none
  says how many classes there are, the step refuses (guessing from the highest id seen shrinks the class
  list whenever the last class has no label yet).
- Keeps the dataset's own splits where it has them; otherwise splits by a hash of the image name, so an
  image never moves between splits as the dataset grows (stable holdout).
- Writes ``data.yaml`` and a copy of the manifest (lineage).
"""

from __future__ import annotations

import dataclasses
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
from daemon.model import events

SPLITS = ("train", "val")
#: Split folder names as datasets spell them, and the split each one is.
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
KINDS = ("images", "labels")


class DataChanged(RuntimeError):
    """An object no longer matches the snapshot."""


class ClassesUnknown(RuntimeError):
    """Neither the rule nor the dataset says what the classes are (or the dataset says it unreadably)."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    dataset: str
    source: str
    fingerprint: str
    items: list[tuple[str, str]]
    classes: list[str] | None = None
    layout: str = "yolo"
    labels_dir: str = "labels"
    images_dir: str = "images"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        return cls(
            dataset=data["dataset"],
            source=data["source"],
            fingerprint=data["fingerprint"],
            items=[(k, v) for k, v in data["items"]],
            classes=data.get("classes"),
            layout=data.get("layout") or "yolo",
            labels_dir=data.get("labels_dir") or "labels",
            images_dir=data.get("images_dir") or "images",
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "items": [list(item) for item in self.items],
            "classes": self.classes,
            "layout": self.layout,
            "labels_dir": self.labels_dir,
            "images_dir": self.images_dir,
        }

    def layout_of(self, key: str) -> tuple[str, str, str]:
        """(kind, declared split or "", stem) of a key: kind ``images``, ``labels``, or "" for other files."""
        item = events.classify(key, labels_dir=self.labels_dir, images_dir=self.images_dir, layout=self.layout)
        if item is events.ItemKind.OTHER:
            return "", "", ""
        kind = "images" if item is events.ItemKind.IMAGE else "labels"
        parts = key.split("/")
        if self.layout == "flat":  # [split/]name
            split = SPLIT_NAMES.get(parts[0], "") if len(parts) > 1 else ""
            inner = parts[1:] if split else parts
        else:
            folder = self.images_dir if kind == "images" else self.labels_dir
            at = parts.index(folder)
            before, after = parts[:at], parts[at + 1 : -1]
            # images/[split/]... , or split/images/... (Roboflow)
            split = SPLIT_NAMES.get(after[0], "") if after else ""
            split = split or (SPLIT_NAMES.get(before[-1], "") if before else "")
            inner = parts[at + 2 :] if after and SPLIT_NAMES.get(after[0]) else parts[at + 1 :]
        return kind, split, "/".join(inner).rsplit(".", 1)[0]


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
        kind, declared, stem = manifest.layout_of(key)
        if kind == "images" and not declared:
            image_split[stem] = hash_split(stem, val_fraction=val_fraction)
    for key, version in manifest.items:
        kind, declared, stem = manifest.layout_of(key)
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
    names, named_by = _class_names(manifest, client=client, bucket=bucket, prefix=prefix, root=root)
    data: dict[str, Any] = {"path": str(out_dir), "train": "images/train", "val": "images/val"}
    if counts.get("images/test"):
        data["test"] = "images/test"  # kept out of training and of the best-epoch choice
    data["names"] = dict(enumerate(names))
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (out_dir / "manifest.json").write_text(json.dumps(manifest.to_json()))
    return {"fingerprint": manifest.fingerprint, "counts": counts, "classes": names, "classes_from": named_by}


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


def _dataset_file(name: str, *, client: Any, bucket: str, prefix: str, root: Path | None) -> bytes | None:
    """A file at the dataset's root (its ``data.yaml``...), or None when it has none."""
    if client is None:
        assert root is not None
        path = root / name
        return path.read_bytes() if path.is_file() else None
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, prefix + name)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject"):
            return None
        raise
    try:
        return bytes(response.read())
    finally:
        response.close()
        response.release_conn()


def names_from_data_yaml(text: bytes, *, where: str) -> list[str] | None:
    """The class names a ``data.yaml`` declares (``names`` as a list or an id mapping, or ``nc`` alone: generic
    names), or None when it declares neither.

    Raises:
        ClassesUnknown: the file is not YAML, or its names are not a list or a mapping of ids 0..N-1.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ClassesUnknown(f"{where} is not YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        return None
    names = data.get("names")
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            ids = []
        if ids != list(range(len(names))):
            raise ClassesUnknown(f"{where}: class ids must be 0..N-1 without gaps, got {sorted(names, key=str)}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    if names is not None:
        raise ClassesUnknown(f"{where}: names must be a list or a mapping of class ids, got {type(names).__name__}")
    count = data.get("nc")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return [f"class{i}" for i in range(count)]
    return None


def _class_names(
    manifest: Manifest, *, client: Any, bucket: str, prefix: str, root: Path | None
) -> tuple[list[str], str]:
    """The class names and where they came from: the rule, ``data.yaml`` or ``classes.txt``.

    Raises:
        ClassesUnknown: none of them says what the classes are.
    """
    if manifest.classes:
        return list(manifest.classes), "rule"
    where = f"dataset {manifest.dataset} at {manifest.source}"
    for name in ("data.yaml", "data.yml"):
        text = _dataset_file(name, client=client, bucket=bucket, prefix=prefix, root=root)
        found = names_from_data_yaml(text, where=f"{name} of {where}") if text is not None else None
        if found:
            return found, "data.yaml"
    text = _dataset_file("classes.txt", client=client, bucket=bucket, prefix=prefix, root=root)
    if text is not None:
        found = [line.strip() for line in text.decode("utf-8", "replace").splitlines() if line.strip()]
        if found:
            return found, "classes.txt"
    raise ClassesUnknown(
        f"the classes of {where} are unknown: list them in the rule (dataset.classes: [name, ...], by id), "
        f"or put a data.yaml with names: (or a classes.txt, one name per line) at the dataset's root"
    )


def manifest_for_folder(
    root: Path,
    *,
    dataset: str,
    classes: list[str] | None = None,
    layout: str = "yolo",
    labels_dir: str = "labels",
    images_dir: str = "images",
) -> Manifest:
    """A manifest of a folder as it is now (for running the pipeline by hand, and for tests)."""
    shape = Manifest(
        dataset=dataset,
        source=f"file://{root}",
        fingerprint="",
        items=[],
        classes=classes,
        layout=layout,
        labels_dir=labels_dir,
        images_dir=images_dir,
    )
    items = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and shape.layout_of(rel)[0] in KINDS:
            stat = path.stat()
            items.append((rel, f"{stat.st_size}:{stat.st_mtime_ns}"))
    return dataclasses.replace(shape, items=items, fingerprint=snapshots.fingerprint(items) or "")
