"""Like with like for the gate: which split it decides on, and each model's view of that split in its own
class ids.

A YOLO model predicts class *ids*; what an id means is the model's ``names``. Scoring a model on labels
written with other ids (a champion trained when the class list was ``[cat, dog]``, a dataset now
``[dog, cat, bird]``) compares cats with dogs, and Ultralytics silently skips labels of ids the model does
not have. So each model is scored on a copy of the split whose labels are rewritten into that model's ids,
keeping only the classes both models are compared on (matched by name). When the model's ids already are
the dataset's and every class is kept, the dataset is used as it is.

The best epoch (Ultralytics' fitness) and the best trial are chosen on ``val``; when the dataset has a
``test`` split the gate decides on it, so the numbers it compares were never used for a choice.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def names_of(data: dict[str, Any]) -> list[str]:
    """Class names by id of a ``data.yaml`` (``names`` as a list or an id mapping)."""
    names = data["names"]
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def decision_split(data: dict[str, Any]) -> str:
    """``test`` when the dataset has a test split, else ``val``."""
    return "test" if data.get("test") else "val"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """How the dataset's class names (the candidate's) stand against the champion's."""

    shared: list[str]
    """Names both know, in the dataset's order."""
    added: list[str]
    """Names the dataset has and the champion does not."""
    removed: list[str]
    """Names the champion has and the dataset no longer does."""

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append(f"added {', '.join(self.added)}")
        if self.removed:
            parts.append(f"removed {', '.join(self.removed)}")
        return "; ".join(parts) or "unchanged"


def compare(dataset_names: list[str], champion_names: list[str]) -> Comparison:
    champion = set(champion_names)
    dataset = set(dataset_names)
    return Comparison(
        shared=[n for n in dataset_names if n in champion],
        added=[n for n in dataset_names if n not in champion],
        removed=[n for n in champion_names if n not in dataset],
    )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(source, target)


def _rewritten(text: str, ids: dict[int, int]) -> str:
    """A label file's lines with their class ids mapped (lines of other classes dropped)."""
    lines = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and int(parts[0]) in ids:
            lines.append(" ".join([str(ids[int(parts[0])]), *parts[1:]]))
    return "".join(f"{line}\n" for line in lines)


def view(data_yaml: Path, *, split: str, model_names: list[str], keep: list[str], out_dir: Path) -> tuple[Path, int]:
    """The ``data.yaml`` to score a model with ``model_names`` on ``split``, counting only the ``keep`` classes;
    and the number of images in the split.

    Returns the dataset's own ``data.yaml`` when the model's ids are the dataset's and every class is kept;
    otherwise writes a copy of the split (images linked, labels rewritten into the model's ids) to ``out_dir``.
    """
    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data.get("path") or data_yaml.parent)
    images = root / data[split]
    # Where Ultralytics looks for the labels: the last ``images`` folder of the path becomes ``labels``.
    head, _, tail = f"{images}{os.sep}".rpartition(f"{os.sep}images{os.sep}")
    labels = Path(f"{head}{os.sep}labels{os.sep}{tail}")
    image_files = sorted(p for p in images.iterdir() if p.is_file())
    dataset_names = names_of(data)
    if model_names == dataset_names and keep == dataset_names:
        return data_yaml, len(image_files)
    model_ids = {name: i for i, name in enumerate(model_names)}
    ids = {i: model_ids[name] for i, name in enumerate(dataset_names) if name in keep and name in model_ids}
    (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
    (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
    for image in image_files:
        _link_or_copy(image, out_dir / "images" / split / image.name)
        label = labels / f"{image.stem}.txt"
        if label.is_file():
            (out_dir / "labels" / split / label.name).write_text(_rewritten(label.read_text(errors="replace"), ids))
    written = out_dir / "data.yaml"
    folder = f"images/{split}"
    written.write_text(
        yaml.safe_dump(
            {
                "path": str(out_dir),
                "train": folder,
                "val": folder,
                split: folder,
                "names": dict(enumerate(model_names)),
            },
            sort_keys=False,
        )
    )
    return written, len(image_files)
