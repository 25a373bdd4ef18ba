"""Reconcile: make the journal's inventory match what storage holds, whatever the notifications missed.

Notification streams lose events by design (a dropped MinIO listen connection, an inotify queue overflow,
a daemon that was down). A reconcile pass lists the storage and merge-joins the listing with the journal's
inventory, both in key order, emitting ``created``, ``changed`` and ``deleted`` events for differences.
Memory stays bounded by one listing page and one event batch, not by the bucket's size.

A listing that fails half-way emits nothing for the part it did not reach: a key is reported deleted only
when the listing has gone past it without seeing it.

A very large prefix is reconciled in shards: a pass lists at most ``shard_objects`` objects
(``sources.reconcile_shard_objects``, by default ``SHARD_OBJECTS``) and merges them with that key range of
the inventory alone; the next pass starts after the last key listed, and a cycle ends when a pass reaches the
end of the listing (the reconcile worker runs the next shard after a pause of a few times the pass, and the
next cycle after the interval). A shard whose listing fails is listed again; a restart starts a new cycle.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from daemon import errors, logs
from daemon.engine import labels
from daemon.journal import base as journal_base
from daemon.model import events
from daemon.sources import base, datasets, s3

log = logs.get_logger(__name__)

T = TypeVar("T")

#: Events journaled per transaction while reconciling.
BATCH = 500
#: Label files read for class counts per pass.
COUNT_LABELS_PER_PASS = 2000
#: Label files read at the same time (S3 answers each GET in about a millisecond; one after the other, a
#: first pass over 100k labels spent most of its time waiting).
READERS = 16
#: Batches of differences whose label files are being read while the listing goes on (memory stays bounded
#: by these batches, whatever the bucket's size).
AHEAD = 2
#: Objects listed by one pass at most (0: the whole prefix). At ~20k keys/s a shard is ~10 s of listing.
SHARD_OBJECTS = 250_000


@dataclass(frozen=True, kw_only=True)
class Listed:
    """One object found in storage, relative to the dataset root."""

    key: str
    version: str
    size: int | None
    item: events.ItemKind


@dataclass(frozen=True, kw_only=True)
class Difference:
    kind: events.ChangeKind
    key: str
    item: events.ItemKind
    version: str | None
    size: int | None


@dataclass(frozen=True, kw_only=True)
class ReconcileResult:
    created: int = 0
    changed: int = 0
    deleted: int = 0
    seconds: float = 0.0
    new_events: int = 0
    complete: bool = True
    """The pass reached the end of the listing (a cycle ended); False: more shards follow."""

    def __add__(self, other: ReconcileResult) -> ReconcileResult:
        return ReconcileResult(
            created=self.created + other.created,
            changed=self.changed + other.changed,
            deleted=self.deleted + other.deleted,
            seconds=self.seconds + other.seconds,
            new_events=self.new_events + other.new_events,
            complete=self.complete and other.complete,
        )


@dataclass(kw_only=True)
class Shard:
    """The key range one pass reconciles: after ``after`` (relative to the dataset root; "" from the start)
    up to ``upto``, the last key listed, once the listing stopped at the shard's size (None: to the end)."""

    after: str = ""
    upto: str | None = None


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def diff(
    listing: Iterable[Listed],
    inventory: Iterable[journal_base.InventoryItem],
    *,
    upto: Callable[[], str | None] = lambda: None,
) -> Iterator[Difference]:
    """Differences between a key-ordered listing and the key-ordered inventory (a merge join). ``upto`` is
    asked once the listing ended: the last key its range covers (None: the listing went to the end); the
    inventory's keys past it are not compared."""
    known = iter(inventory)
    current = next(known, None)
    for found in listing:
        while current is not None and current.key < found.key:
            yield Difference(
                kind=events.ChangeKind.DELETED, key=current.key, item=current.item, version=None, size=None
            )
            current = next(known, None)
        if current is not None and current.key == found.key:
            if current.version != found.version:
                yield Difference(
                    kind=events.ChangeKind.CHANGED,
                    key=found.key,
                    item=found.item,
                    version=found.version,
                    size=found.size,
                )
            current = next(known, None)
        else:
            yield Difference(
                kind=events.ChangeKind.CREATED, key=found.key, item=found.item, version=found.version, size=found.size
            )
    limit = upto()
    while current is not None and (limit is None or current.key <= limit):
        yield Difference(kind=events.ChangeKind.DELETED, key=current.key, item=current.item, version=None, size=None)
        current = next(known, None)


def apply(
    differences: Iterable[Difference],
    *,
    location: datasets.DatasetLocation,
    sink: base.EventSink,
    source_name: str,
    source: events.Source,
    now: datetime,
    class_counts: Mapping[str, dict[str, int] | None] | None = None,
) -> ReconcileResult:
    """Journal differences as events, ``BATCH`` per transaction."""
    counts = {"created": 0, "changed": 0, "deleted": 0}
    new = 0
    batch: list[events.SourceEvent] = []
    for difference in differences:
        counts[difference.kind.value] += 1
        batch.append(
            events.SourceEvent(
                source=source,
                dataset=location.name,
                key=difference.key,
                kind=difference.kind,
                item=difference.item,
                version=difference.version,
                size=difference.size,
                time=now,
                class_counts=(class_counts or {}).get(difference.key),
            )
        )
        if len(batch) >= BATCH:
            new += sink.deliver(source_name, batch).new
            batch = []
    new += sink.deliver(source_name, batch).new
    return ReconcileResult(
        created=counts["created"], changed=counts["changed"], deleted=counts["deleted"], new_events=new
    )


def prefetched(objects: Iterator[s3.ObjectInfo], *, name: str) -> Generator[list[s3.ObjectInfo]]:
    """The listing in pages of ``s3.PAGE`` objects, fetched by a thread up to ``AHEAD`` pages ahead: the next
    page's request is answered while this one is merged with the inventory. The listing's errors are raised
    here, in order; closing the iterator early stops the thread."""
    pages: queue.Queue[list[s3.ObjectInfo] | BaseException | None] = queue.Queue(maxsize=AHEAD)
    closed = threading.Event()

    def offer(item: list[s3.ObjectInfo] | BaseException | None) -> bool:
        while not closed.is_set():
            try:
                pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def fetch() -> None:
        try:
            for page in batched(objects, s3.PAGE):
                if not offer(page):
                    return
        except BaseException as exc:  # handed over to the consumer, which raises it
            offer(exc)
            return
        offer(None)

    thread = threading.Thread(target=fetch, name=f"listing:{name}", daemon=True)
    thread.start()
    try:
        while (item := pages.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        closed.set()
        thread.join()


class S3Reconciler:
    """Lists one S3 dataset and journals what the inventory lacks.

    Args:
        store: the S3 adapter.
        location: the dataset's bucket and prefix.
        sink: where events go.
        clock: the current time.
        counts_needed: whether a rule uses the dataset's class counts (else label files are not read).
    """

    def __init__(
        self,
        *,
        store: s3.S3Store,
        location: datasets.DatasetLocation,
        sink: base.EventSink,
        clock: base.Clock,
        counts_needed: Callable[[], bool] = lambda: True,
        shard_objects: int = SHARD_OBJECTS,
    ) -> None:
        assert location.bucket is not None, "an S3 reconciler needs an s3:// dataset"
        self.store = store
        self.location = location
        self.bucket = location.bucket
        self.sink = sink
        self.clock = clock
        self.name = f"s3_reconcile:{location.name}"
        self.counts_needed = counts_needed
        self.shard_objects = shard_objects
        """Objects one pass lists at most (0: the whole prefix; ``sources.reconcile_shard_objects``)."""
        self.resume_after = ""
        """Where the next pass starts: after this key, relative to the dataset root ("": a new cycle)."""

    def _listing(self, shard: Shard) -> Iterator[Listed]:
        prefix = self.location.prefix
        start_after = prefix + shard.after if shard.after else None
        listed = 0
        pages = prefetched(self.store.list(self.bucket, prefix, start_after=start_after), name=self.name)
        with contextlib.closing(pages):
            for page in pages:
                for obj in page:
                    listed += 1
                    rel = self.location.relative(obj.key)
                    if rel is not None:
                        item = self.location.classify(rel)
                        if item is not events.ItemKind.OTHER:
                            yield Listed(key=rel, version=obj.etag, size=obj.size, item=item)
                    if self.shard_objects and listed >= self.shard_objects:
                        shard.upto = obj.key[len(prefix) :]
                        return

    def run_once(self) -> ReconcileResult:
        """One pass: the next shard, or the whole prefix when it holds fewer than ``shard_objects``. Raises
        :class:`~daemon.errors.TemporaryError` if S3 is unreachable (nothing is lost: whatever was journaled
        stays, and the next pass lists the same shard again)."""
        started = time.monotonic()
        board = self.sink.board
        shard = Shard(after=self.resume_after)
        try:
            inventory = self.sink.journal.inventory(self.location.name, after=shard.after)
            result = self._journal(diff(self._listing(shard), inventory, upto=lambda: shard.upto))
        except errors.RetrainError as exc:
            board.update(self.name, connected=False, last_error=str(exc))
            board.add(self.name, gaps=1)
            log.warning("reconcile_failed", dataset=self.location.name, error=str(exc))
            raise
        seconds = time.monotonic() - started
        self.resume_after = shard.upto or ""
        board.update(
            self.name, connected=True, last_error=None, last_reconcile_at=self.clock(), reconcile_lag_s=seconds
        )
        if result.created or result.changed or result.deleted or shard.upto is not None:
            log.info(
                "reconciled",
                dataset=self.location.name,
                created=result.created,
                changed=result.changed,
                deleted=result.deleted,
                seconds=round(seconds, 3),
                shard_after=shard.after or None,
                shard_upto=shard.upto,
            )
        return ReconcileResult(
            created=result.created,
            changed=result.changed,
            deleted=result.deleted,
            new_events=result.new_events,
            seconds=seconds,
            complete=shard.upto is None,
        )

    def _journal(self, differences: Iterable[Difference]) -> ReconcileResult:
        """Journal the differences; while a rule uses class counts, the label files created or changed are
        read ``READERS`` at a time as the listing goes on, and their events carry the counts."""
        if not self.counts_needed():
            return self._apply(differences, {})
        result = ReconcileResult()
        pending: deque[tuple[list[Difference], dict[str, Future[dict[str, int] | None]]]] = deque()
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix=f"labels:{self.location.name}") as pool:
            try:
                for batch in batched(differences, BATCH):
                    reads = {
                        found.key: pool.submit(self._read_counts, found.key)
                        for found in batch
                        if found.item is events.ItemKind.LABEL and found.kind is not events.ChangeKind.DELETED
                    }
                    pending.append((batch, reads))
                    if len(pending) > AHEAD:
                        result += self._apply(*pending.popleft())
            finally:  # a listing that fails half-way: what it found is journaled all the same
                while pending:
                    result += self._apply(*pending.popleft())
        return result

    def _apply(
        self, differences: Iterable[Difference], reads: Mapping[str, Future[dict[str, int] | None]]
    ) -> ReconcileResult:
        return apply(
            differences,
            location=self.location,
            sink=self.sink,
            source_name=self.name,
            source=events.Source.S3_RECONCILE,
            now=self.clock(),
            class_counts={key: read.result() for key, read in reads.items()},
        )

    def _read_counts(self, key: str) -> dict[str, int] | None:
        """One label file's class counts, read during a pass; None when S3 did not answer (the counting worker
        reads it later)."""
        try:
            return self._counted(key, "")[2]
        except errors.RetrainError as exc:
            log.info("label_not_read", dataset=self.location.name, key=key, error=str(exc), action="counted later")
            return None

    def count_labels(self, limit: int = COUNT_LABELS_PER_PASS) -> tuple[int, int]:
        """Read up to ``limit`` label files whose class counts are unknown, ``READERS`` at a time, and store
        their counts in one transaction. Returns how many were found to read and how many were stored (a file
        changed meanwhile keeps none: its new version is read next time)."""
        wanted = self.sink.journal.labels_without_counts(self.location.name, limit=limit)
        if not wanted:
            return 0, 0
        with ThreadPoolExecutor(max_workers=READERS, thread_name_prefix=f"labels:{self.location.name}") as pool:
            found = list(pool.map(lambda pair: self._counted(*pair), wanted))
        return len(wanted), self.sink.journal.set_class_counts(self.location.name, found)

    def _counted(self, key: str, version: str) -> tuple[str, str, dict[str, int]]:
        """One label file's class counts; an unreadable one (gone, refused) counts as no boxes."""
        try:
            text = self.store.read_text(self.bucket, self.location.prefix + key)
        except errors.PermanentError as exc:
            log.info("label_unreadable", dataset=self.location.name, key=key, error=str(exc))
            return key, version, {}
        return key, version, labels.class_counts(text)
