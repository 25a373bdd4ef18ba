"""YOLO label files, read leniently for counting: objects per class id.

Counting feeds per-class minimums and class drift; it must never fail on a bad file. Lines that are neither
``class x y w h`` nor a polygon (``class x1 y1 x2 y2 x3 y3 ...``) with an integer class are skipped here (the
pipeline's validation step reports them).
"""

from __future__ import annotations


def class_counts(text: str) -> dict[str, int]:
    """Objects per class id (as a string) in one label file's text: boxes (5 numbers) and polygons (a class and
    3 or more x y points, which training turns into boxes)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        shaped = len(parts) == 5 or (len(parts) >= 7 and len(parts) % 2 == 1)
        if not shaped or not parts[0].isdigit():
            continue
        counts[parts[0]] = counts.get(parts[0], 0) + 1
    return counts
