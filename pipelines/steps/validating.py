"""validate_dataset: find bad labels and images before any GPU time is spent.

Checks, each with its own message naming the file and line:

- a label line has exactly 5 numbers (``class x_center y_center width height``);
- the class id is an integer in the class list;
- the coordinates lie in [0, 1], width and height are positive;
- every image decodes; every label has an image and every image a label;
- neither split is empty.

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


class DatasetInvalid(RuntimeError):
    """Too many bad items, or an empty split: training would be wasted."""


@dataclass
class Report:
    items: int = 0
    problems: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    per_split: dict[str, int] = field(default_factory=dict)

    @property
    def bad_share(self) -> float:
        return len(self.excluded) / self.items if self.items else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "excluded": self.excluded,
            "problems": self.problems,
            "bad_share": round(self.bad_share, 4),
            "per_split": self.per_split,
        }


def check_label(text: str, *, name: str, classes: int) -> list[str]:
    """Problems of one label file, as ``name:line: message``."""
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        parts = line.split()
        if len(parts) != 5:
            problems.append(f"{where}: expected 5 numbers (class x_center y_center width height), got {len(parts)}")
            continue
        try:
            values = [float(p) for p in parts]
        except ValueError:
            problems.append(f"{where}: not a number in {line.strip()!r}")
            continue
        if not all(math.isfinite(v) for v in values):
            problems.append(f"{where}: not a finite number in {line.strip()!r}")
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < classes:
            problems.append(f"{where}: class {parts[0]} is not in the class list (0-{classes - 1})")
        for label, raw, value in zip(("x_center", "y_center", "width", "height"), parts[1:], values[1:], strict=True):
            if not 0.0 <= value <= 1.0:
                problems.append(f"{where}: {label} {raw} is outside [0, 1]")
        if values[3] <= 0 or values[4] <= 0:
            problems.append(f"{where}: width and height must be > 0, got {parts[3]} x {parts[4]}")
    return problems


def check_image(path: Path, *, name: str) -> str | None:
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{name}: image cannot be decoded ({exc.__class__.__name__}: {str(exc)[:80]})"
    return None


def validate(dataset_dir: Path, *, classes: int, max_bad_fraction: float) -> Report:
    """Check the dataset in place, delete the bad items, and return the report.

    Raises:
        DatasetInvalid: the bad share exceeds ``max_bad_fraction``, or a split ends up empty.
    """
    report = Report()
    for split in SPLITS:
        images = {p.stem: p for p in (dataset_dir / "images" / split).glob("*") if p.is_file()}
        labels = {p.stem: p for p in (dataset_dir / "labels" / split).glob("*.txt")}
        for stem in sorted(set(images) | set(labels)):
            report.items += 1
            image, label = images.get(stem), labels.get(stem)
            found: list[str] = []
            if image is None:
                found.append(f"labels/{split}/{stem}.txt: no image for this label")
            else:
                problem = check_image(image, name=f"images/{split}/{image.name}")
                if problem:
                    found.append(problem)
            if label is None:
                found.append(f"images/{split}/{image.name if image else stem}: no label file")
            else:
                found += check_label(
                    label.read_text(errors="replace"), name=f"labels/{split}/{stem}.txt", classes=classes
                )
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
    for split, count in report.per_split.items():
        if count == 0:
            raise DatasetInvalid(f"split {split!r} is empty after validation: no images left in it")
    return report
