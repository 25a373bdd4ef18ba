"""validate_dataset: find bad labels and images before any GPU time is spent, and take data as users have it.

Checks, each with its own message naming the file and line:

- a label line is a box (``class x_center y_center width height``) or a polygon (``class x1 y1 x2 y2 ...``,
  three points or more: YOLO segmentation labels), with finite numbers;
- the class id is an integer in the class list;
- every coordinate lies in [0, 1] (as Ultralytics requires); width and height are positive;
- every image decodes; every label has an image; neither split is empty.

Taken as users have them, and counted in the report:

- an image without a label file is a **background** (Ultralytics trains on it as an image with no objects);
  more than ``max_background_fraction`` of the images fails the run (labels that were never uploaded look
  like this);
- a **polygon** becomes its bounding box, as Ultralytics' detect task turns segments into boxes (the label
  file is rewritten with boxes: a file mixing both would make Ultralytics drop the polygons);
- a box that reaches past the image edge is **clipped** to it (the label file is rewritten).

Bad items (an image and its label) are excluded and listed in the report; when their share exceeds
``max_bad_fraction`` the step fails with the first problems in its message.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

SPLITS = ("train", "val")
#: Validated when the dataset has it, never required: the test split is kept out of training.
OPTIONAL_SPLITS = ("test",)


class DatasetInvalid(RuntimeError):
    """Too many bad items, or an empty split: training would be wasted."""


@dataclass
class Report:
    items: int = 0
    problems: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    per_split: dict[str, int] = field(default_factory=dict)
    backgrounds: list[str] = field(default_factory=list)
    polygons_converted: int = 0
    boxes_clipped: int = 0

    @property
    def bad_share(self) -> float:
        return len(self.excluded) / self.items if self.items else 0.0

    @property
    def background_share(self) -> float:
        return len(self.backgrounds) / self.items if self.items else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "excluded": self.excluded,
            "problems": self.problems,
            "bad_share": round(self.bad_share, 4),
            "per_split": self.per_split,
            "backgrounds": self.backgrounds,
            "background_share": round(self.background_share, 4),
            "polygons_converted": self.polygons_converted,
            "boxes_clipped": self.boxes_clipped,
        }


@dataclass
class Label:
    """One label file read: its boxes as training gets them, its problems, what was converted."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    polygons: int = 0
    clipped: int = 0

    @property
    def rewritten(self) -> bool:
        return bool(self.polygons or self.clipped)


SHAPE = "expected 5 numbers (class x_center y_center width height) or a polygon (class and 3 or more x y points)"


#: Overshoots of the image edge this small are the rounding of labels written with 6 decimals (COCO's own
#: conversions reach 5e-7 past the edge): left as they are, not counted as clipped.
EDGE_TOLERANCE = 1e-5


def _box_line(cls: int, x1: float, y1: float, x2: float, y2: float) -> str:
    return f"{cls} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}"


def _numbers(line: str, where: str) -> tuple[list[float] | None, str | None]:
    parts = line.split()
    if len(parts) != 5 and not (len(parts) >= 7 and len(parts) % 2 == 1):
        return None, f"{where}: {SHAPE}, got {len(parts)} numbers"
    try:
        values = [float(p) for p in parts]
    except ValueError:
        return None, f"{where}: not a number in {line.strip()!r}"
    if not all(math.isfinite(v) for v in values):
        return None, f"{where}: not a finite number in {line.strip()!r}"
    return values, None


def _polygon(cls: int, values: list[float], where: str) -> tuple[str | None, list[str]]:
    xs, ys = values[1::2], values[2::2]
    outside = [v for v in values[1:] if not 0.0 <= v <= 1.0]
    if outside:
        return None, [f"{where}: polygon point {outside[0]:g} is outside [0, 1]"]
    if max(xs) <= min(xs) or max(ys) <= min(ys):
        return None, [f"{where}: the polygon encloses no area"]
    return _box_line(cls, min(xs), min(ys), max(xs), max(ys)), []


def _box(cls: int, values: list[float], raw: list[str], where: str) -> tuple[str | None, list[str], bool]:
    problems = [
        f"{where}: {label} {text} is outside [0, 1]"
        for label, text, value in zip(("x_center", "y_center", "width", "height"), raw[1:], values[1:], strict=True)
        if not 0.0 <= value <= 1.0
    ]
    if values[3] <= 0 or values[4] <= 0:
        problems.append(f"{where}: width and height must be > 0, got {raw[3]} x {raw[4]}")
    if problems:
        return None, problems, False
    x, y, w, h = values[1:]
    edges = (x - w / 2, y - h / 2, x + w / 2, y + h / 2)
    inside = (max(0.0, edges[0]), max(0.0, edges[1]), min(1.0, edges[2]), min(1.0, edges[3]))
    if max(abs(a - b) for a, b in zip(inside, edges, strict=True)) <= EDGE_TOLERANCE:
        return " ".join(raw), [], False
    return _box_line(cls, *inside), [], True


def read_label(text: str, *, name: str, classes: int) -> Label:
    """Read one label file: boxes kept (clipped to the image), polygons turned into boxes, problems named as
    ``name:line: message``."""
    found = Label()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        values, problem = _numbers(line, where)
        if values is None:
            found.problems.append(str(problem))
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < classes:
            found.problems.append(f"{where}: class {line.split()[0]} is not in the class list (0-{classes - 1})")
        if len(values) == 5:
            box, problems, clipped = _box(int(cls), values, line.split(), where)
            found.clipped += clipped
        else:
            box, problems = _polygon(int(cls), values, where)
            found.polygons += box is not None
        found.problems += problems
        if box is not None:
            found.lines.append(box)
    return found


def check_label(text: str, *, name: str, classes: int) -> list[str]:
    """Problems of one label file, as ``name:line: message``."""
    return read_label(text, name=name, classes=classes).problems


def check_image(path: Path, *, name: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{name}: image cannot be decoded ({exc.__class__.__name__}: {str(exc)[:80]})"
    return None


def _check_item(
    report: Report, split: str, stem: str, image: Path | None, label: Path | None, *, classes: int
) -> list[str]:
    """The problems of one item; a good label is rewritten when converted, an image without one is counted as a
    background."""
    found: list[str] = []
    if image is None:
        found.append(f"labels/{split}/{stem}.txt: no image for this label")
    else:
        problem = check_image(image, name=f"images/{split}/{image.name}")
        if problem:
            found.append(problem)
    if label is not None:
        read = read_label(label.read_text(errors="replace"), name=f"labels/{split}/{stem}.txt", classes=classes)
        found += read.problems
        if read.rewritten and not found:
            label.write_text("".join(f"{line}\n" for line in read.lines))
            report.polygons_converted += read.polygons
            report.boxes_clipped += read.clipped
    elif not found:
        report.backgrounds.append(f"{split}/{stem}")  # an image without objects
    return found


def validate(
    dataset_dir: Path, *, classes: int, max_bad_fraction: float, max_background_fraction: float = 0.5
) -> Report:
    """Check the dataset in place, delete the bad items, rewrite converted labels, and return the report.

    Raises:
        DatasetInvalid: the bad share exceeds ``max_bad_fraction``, the share of images without labels
            exceeds ``max_background_fraction``, or a split ends up empty.
    """
    report = Report()
    for split in SPLITS + OPTIONAL_SPLITS:
        if split in OPTIONAL_SPLITS and not (dataset_dir / "images" / split).is_dir():
            continue
        images = {p.stem: p for p in (dataset_dir / "images" / split).glob("*") if p.is_file()}
        labels = {p.stem: p for p in (dataset_dir / "labels" / split).glob("*.txt")}
        for stem in sorted(set(images) | set(labels)):
            report.items += 1
            image, label = images.get(stem), labels.get(stem)
            found = _check_item(report, split, stem, image, label, classes=classes)
            if found:
                report.problems += found
                report.excluded.append(f"{split}/{stem}")
                for path in (image, label):
                    if path is not None:
                        path.unlink()
        report.per_split[split] = sum(1 for _ in (dataset_dir / "images" / split).glob("*"))
    (dataset_dir / "validation_report.json").write_text(json.dumps(report.to_json(), indent=2))
    if report.bad_share > max_bad_fraction:
        shown = "; ".join(report.problems[:5])
        raise DatasetInvalid(
            f"{len(report.excluded)} of {report.items} items are bad ({report.bad_share:.1%} > "
            f"max {max_bad_fraction:.1%}); first problems: {shown}"
        )
    if report.background_share > max_background_fraction:
        shown = ", ".join(report.backgrounds[:5])
        raise DatasetInvalid(
            f"{len(report.backgrounds)} of {report.items} images have no label file ({report.background_share:.1%} "
            f"> max {max_background_fraction:.1%} backgrounds); were their labels uploaded? first: {shown}"
        )
    for split, count in report.per_split.items():
        if count == 0 and split in SPLITS:
            raise DatasetInvalid(f"split {split!r} is empty after validation: no images left in it")
    return report
