"""Which files of a dataset folder count, and a listing of one (the watcher's scans and rescans)."""

from __future__ import annotations

import os
from pathlib import Path

from daemon.model import events
from daemon.sources import datasets, reconciling

IGNORED_SUFFIXES = (".part", ".tmp", ".swp", ".crdownload", "~")


def ignored(relative: str) -> bool:
    """Hidden or temporary files, and anything below a hidden folder."""
    parts = relative.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].endswith(IGNORED_SUFFIXES)


def version_of(stat: os.stat_result) -> str:
    """A file's version: its size and modification time (a folder has no ETag)."""
    return events.version_of(etag=None, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def walk(
    root: Path, location: datasets.DatasetLocation, *, young_after: float
) -> tuple[list[reconciling.Listed], set[str]]:
    """The dataset files under ``root`` in key order, and the keys of files modified after ``young_after``
    (a ``time.time()`` value): too young to judge, maybe still being written."""
    found: list[reconciling.Listed] = []
    young: set[str] = set()
    for directory, subfolders, files in os.walk(root):
        subfolders[:] = [f for f in subfolders if not f.startswith(".")]
        for name in files:
            path = Path(directory) / name
            rel = path.relative_to(root).as_posix()
            if ignored(rel):
                continue
            item = location.classify(rel)
            if item is events.ItemKind.OTHER:
                continue
            try:
                stat = path.stat()
            except OSError:
                continue
            if stat.st_mtime > young_after:
                young.add(rel)  # the close event or the next rescan counts it
                continue
            found.append(reconciling.Listed(key=rel, version=version_of(stat), size=stat.st_size, item=item))
    found.sort(key=lambda listed: listed.key)
    return found, young
