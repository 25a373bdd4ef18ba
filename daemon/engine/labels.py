"""YOLO label files, read leniently for counting: objects per class id.

Counting feeds per-class minimums and class drift; it must never fail on a bad file. Lines that are neither
``class x y w h`` nor a polygon (``class x1 y1 x2 y2 x3 y3 ...``) with a class of ASCII digits and finite
coordinates are skipped here (the pipeline's validation step reports them): a NaN box or a class ``³`` is
not an object training will see. A class is counted by its number (``00`` is class ``0``).
"""

from __future__ import annotations

import math


def _finite(parts: list[str]) -> bool:
    try:
        return all(math.isfinite(float(part)) for part in parts)
    except ValueError:
        return False


def class_counts(text: str) -> dict[str, int]:
    """Objects per class id (as a string) in one label file's text: boxes (5 numbers) and polygons (a class and
    3 or more x y points, which training turns into boxes)."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        shaped = len(parts) == 5 or (len(parts) >= 7 and len(parts) % 2 == 1)
        if not shaped or not (parts[0].isascii() and parts[0].isdigit()) or not _finite(parts[1:]):
            continue
        key = str(int(parts[0]))
        counts[key] = counts.get(key, 0) + 1
    return counts
