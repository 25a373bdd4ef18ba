"""YOLO label files, read leniently for counting: boxes per class id.

Counting feeds per-class minimums and class drift; it must never fail on a bad file. Lines that are not
``class x y w h`` with an integer class are skipped here (the pipeline's validation step reports them).
"""

from __future__ import annotations


def class_counts(text: str) -> dict[str, int]:
    """Boxes per class id (as a string) in one label file's text."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 5 or not parts[0].isdigit():
            continue
        counts[parts[0]] = counts.get(parts[0], 0) + 1
    return counts
