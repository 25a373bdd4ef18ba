"""Which files of a dataset folder count, a listing of one (the watcher's scans and rescans), and the class
counts of its label files."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from daemon.engine import labels
from daemon.journal import base as journal_base
from daemon.model import events
from daemon.sources import datasets, reconciling

IGNORED_SUFFIXES = (".part", ".tmp", ".swp", ".crdownload", "~")
#: Largest label file read for class counts (a larger one counts as no boxes).
MAX_LABEL_BYTES = 1_048_576
#: Label files whose class counts are filled in per call, once a rule starts using them.
COUNT_LABELS_PER_CALL = 2000


def ignored(relative: str) -> bool:
    """Hidden or temporary files, and anything below a hidden folder."""
    parts = relative.split("/")
    return any(p.startswith(".") for p in parts) or parts[-1].endswith(IGNORED_SUFFIXES)


def version_of(stat: os.stat_result) -> str:
    """A file's version: its size and modification time (a folder has no ETag)."""
    return events.version_of(etag=None, size=stat.st_size, mtime_ns=stat.st_mtime_ns)


def class_counts(path: Path, *, size: int | None = None) -> dict[str, int]:
    """The class counts of the label file at ``path`` (``size``: its size, when already known).

    Raises:
        OSError: the file cannot be read (gone since).
    """
    if (size if size is not None else path.stat().st_size) > MAX_LABEL_BYTES:
        return {}
    return labels.class_counts(path.read_text(encoding="utf-8", errors="replace"))


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


def compare(
    root: Path,
    location: datasets.DatasetLocation,
    inventory: Iterable[journal_base.InventoryItem],
    *,
    young_after: float,
    counting: bool,
) -> tuple[list[reconciling.Difference], dict[str, dict[str, int]], bool]:
    """How the folder differs from the journal's ``inventory``: the differences, the class counts of the
    label files among them (when ``counting``), and whether files too young to judge were left out (files
    modified after ``young_after`` are neither new nor gone: out of both sides of the comparison)."""
    listing, young = walk(root, location, young_after=young_after)
    differences = list(reconciling.diff(listing, (item for item in inventory if item.key not in young)))
    counts: dict[str, dict[str, int]] = {}
    for difference in differences if counting else ():
        if difference.item is events.ItemKind.LABEL and difference.kind is not events.ChangeKind.DELETED:
            try:
                counts[difference.key] = class_counts(root / difference.key, size=difference.size)
            except OSError:
                continue
    return differences, counts, bool(young)


class LabelCounter:
    """Whether a folder's label files are read for class counts (only while a rule uses them: per-class
    minimums, class drift), and the filling in of those journaled unread.

    Args:
        root: the folder.
        dataset: its dataset's name in the journal.
        counts_needed: whether a rule uses the dataset's class counts now.
    """

    def __init__(self, root: Path, dataset: str, counts_needed: Callable[[], bool]) -> None:
        self.root = root
        self.dataset = dataset
        self.counts_needed = counts_needed
        self.counting = counts_needed()
        """counts_needed() as of the last :meth:`refresh` (the watchdog callbacks read only this)."""
        self.behind = self.counting
        """Label files may have been journaled unread (before this start, or before a rule used counts)."""

    def refresh(self) -> None:
        """Take in whether a rule uses class counts now; when one starts to, the counter is behind."""
        counting = self.counts_needed()
        if counting and not self.counting:
            self.behind = True
        self.counting = counting

    def catch_up(self, journal: journal_base.Journal, limit: int = COUNT_LABELS_PER_CALL) -> int:
        """Read up to ``limit`` label files whose class counts the journal lacks, and store them. Returns how
        many were stored; once fewer than ``limit`` were missing, the counter is no longer behind."""
        found: list[tuple[str, str, dict[str, int]]] = []
        for key, version in journal.labels_without_counts(self.dataset, limit=limit):
            try:
                counts = class_counts(self.root / key)
            except OSError:
                counts = {}  # gone since: its delete event or the next rescan tells
            found.append((key, version, counts))
        if len(found) < limit:
            self.behind = False
        return journal.set_class_counts(self.dataset, found)
