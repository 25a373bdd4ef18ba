"""Dataset folders on persistent volumes, watched with inotify (or polled, on network volumes).

A file counts only when it is complete:

- closed after writing (inotify ``IN_CLOSE_WRITE``);
- renamed into place (``x.part`` -> ``x.txt``, or moved in from outside the folder);
- with the polling observer (NFS/SMB volumes send no inotify events), or for a file that appeared without
  a close: when its size and modification time stayed the same for ``settle_s``.

Hidden and temporary files (``.*``, ``*.part``, ``*.tmp``, ``*.swp``, ``*~``) and anything under a
hidden folder are ignored. inotify drops events when its queue overflows (16,384 by default), so a start-up
scan, a periodic rescan and a rescan right after an overflow reconcile the folder with the journal's
inventory.

Events are journaled by one background thread that wakes as soon as one is queued and takes everything
queued by then (up to 1,000 per transaction): a burst of 10,000 files is a few dozen transactions, not
10,000, and a lone file is journaled within milliseconds, not on the next tick.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from daemon import errors, logs
from daemon.model import events
from daemon.sources import base, datasets, folders, observing, reconciling, settling

log = logs.get_logger(__name__)

#: Events journaled per transaction by the flusher.
FLUSH_BATCH = 1000


class FolderSource:
    """Watches one dataset folder and journals complete files.

    Args:
        location: the dataset (its ``path`` is the folder).
        sink: where events go.
        clock: the current time.
        polling: use the polling observer (network volumes).
        poll_interval_s: seconds between polls, and between settle checks.
        rescan_interval_s: seconds between full rescans.
        settle_s: how long a file without a close event must stay unchanged to count.
        counts_needed: whether a rule uses the dataset's class counts; label files are read only while one
            does (and the counts of those journaled unread are filled in when one starts to).
    """

    def __init__(
        self,
        *,
        location: datasets.DatasetLocation,
        sink: base.EventSink,
        clock: base.Clock,
        polling: bool = False,
        poll_interval_s: float = 5.0,
        rescan_interval_s: float = 600.0,
        settle_s: float = 5.0,
        counts_needed: Callable[[], bool] = lambda: True,
    ) -> None:
        assert location.path is not None, "a folder source needs a file:// dataset"
        self.location = location
        self.root = location.path
        self._prefix = os.path.join(str(location.path), "")  # the folder's path with one separator after it
        self.sink = sink
        self.clock = clock
        self.polling = polling
        self.poll_interval_s = poll_interval_s
        self.rescan_interval_s = rescan_interval_s
        self.settle_s = settle_s
        self.counter = folders.LabelCounter(location.path, location.name, counts_needed)
        self.name = f"folder:{location.name}"
        self._queue: queue.Queue[events.SourceEvent] = queue.Queue()
        self._queued = threading.Event()  # set when the callbacks queue an event: wakes the background thread
        self._settling = settling.Settling(settle_s)
        self._stopping = threading.Event()
        self._rescan_now = threading.Event()
        self._overflowed = threading.Event()
        self._young_seen = False
        self.failed: str | None = None
        """Why the folder cannot be watched any more (it vanished: a volume unmounted); None while it can."""
        self._watcher: observing.Watcher | None = None
        self._threads: list[threading.Thread] = []

    # --- turning files into events ----------------------------------------------------------------
    def _relative(self, path: str) -> str | None:
        # String slicing, not Path.relative_to: this runs for every inotify event of every file (two or more
        # per file written), and the Path round trip cost 25 us of the burst's budget each time.
        if not path.startswith(self._prefix):
            return None
        rel = path[len(self._prefix) :]
        if os.sep != "/":
            rel = rel.replace(os.sep, "/")
        if not rel or folders.ignored(rel):
            return None
        return rel

    def _event_for(self, rel: str, *, source: events.Source) -> events.SourceEvent | None:
        item = self.location.classify(rel)
        if item is events.ItemKind.OTHER:
            return None
        path = self.root / rel
        try:
            stat = path.stat()
            counts = None
            if self.counter.counting and item is events.ItemKind.LABEL:
                counts = folders.class_counts(path, size=stat.st_size)
        except OSError:
            return None  # gone again; a delete event or the next rescan tells
        return events.SourceEvent(
            source=source,
            dataset=self.location.name,
            key=rel,
            kind=events.ChangeKind.CREATED,
            item=item,
            version=folders.version_of(stat),
            size=stat.st_size,
            time=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
            class_counts=counts,
        )

    # --- what the watcher tells (its thread): observing.FolderEvents ------------------------------
    def file_closed(self, path: str) -> None:
        rel = self._relative(path)
        if rel is None:
            return
        self._settling.forget(rel)
        event = self._event_for(rel, source=events.Source.FOLDER)
        if event is not None:
            self._queue.put(event)
            self._queued.set()

    def file_appeared(self, path: str) -> None:
        """A file appeared (or, with the polling observer, changed): count it once it has settled, unless its
        close comes first."""
        rel = self._relative(path)
        if rel is None or self.location.classify(rel) is events.ItemKind.OTHER:
            return
        self._settling.add(rel)

    def file_deleted(self, path: str) -> None:
        rel = self._relative(path)
        if rel is None:
            return
        item = self.location.classify(rel)
        if item is events.ItemKind.OTHER:
            return
        self._settling.forget(rel)
        self._queue.put(
            events.SourceEvent(
                source=events.Source.FOLDER,
                dataset=self.location.name,
                key=rel,
                kind=events.ChangeKind.DELETED,
                item=item,
                version=None,
                size=None,
                time=self.clock(),
            )
        )
        self._queued.set()

    def tree_changed(self) -> None:
        self._rescan_now.set()

    def overflowed(self) -> None:
        self._overflowed.set()

    def watch_failed(self, reason: str) -> None:
        """The watcher died: the source is failed, and the supervisor starts a new one (with a rescan)."""
        log.error("folder_watch_lost", dataset=self.location.name, error=reason)
        self.failed = reason
        self.sink.board.update(self.name, connected=False, last_error=reason)

    # --- settling, flushing, rescanning (own threads) ---------------------------------------------
    def check_settled(self) -> None:
        """Count files that stayed unchanged for ``settle_s`` (see :class:`~daemon.sources.settling.Settling`)."""
        for rel in self._settling.settled(self._version_now):
            self.file_closed(self._prefix + rel)

    def _version_now(self, rel: str) -> str | None:
        try:
            return folders.version_of((self.root / rel).stat())
        except OSError:
            return None

    def flush(self) -> int:
        """Journal what the callbacks queued, in batches. Returns how many events were delivered."""
        delivered = 0
        while True:
            batch: list[events.SourceEvent] = []
            while len(batch) < FLUSH_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if not batch:
                return delivered
            try:
                self.sink.deliver(self.name, batch)
            except errors.TemporaryError as exc:
                # Keep them: put them back and try again on the next tick.
                for event in batch:
                    self._queue.put(event)
                log.warning("folder_flush_retry", dataset=self.location.name, error=str(exc))
                return delivered
            delivered += len(batch)

    def rescan(self) -> reconciling.ReconcileResult:
        """Reconcile the folder with the journal's inventory (start-up, periodic, after an overflow).

        Raises:
            errors.PermanentError: the folder is gone (an unmounted volume): nothing is marked deleted.
        """
        started = time.monotonic()
        if not self.root.is_dir():
            # An empty listing of a vanished mount would read as "every file deleted": refuse instead.
            raise errors.PermanentError(
                f"dataset folder {self.root} of {self.location.name} is gone (volume unmounted?); nothing was "
                "marked deleted"
            )
        self.flush()
        differences, counts, young = folders.compare(
            self.root,
            self.location,
            self.sink.journal.inventory(self.location.name),
            young_after=time.time() - self.settle_s,
            counting=self.counter.counting,
        )
        self._young_seen = young  # files still being written: look again once they settle
        result = reconciling.apply(
            differences,
            location=self.location,
            sink=self.sink,
            source_name=self.name,
            source=events.Source.FOLDER_RESCAN,
            now=self.clock(),
            class_counts=counts,
        )
        seconds = time.monotonic() - started
        self.sink.board.update(self.name, last_reconcile_at=self.clock(), reconcile_lag_s=seconds)
        if differences:
            log.info(
                "folder_rescanned",
                dataset=self.location.name,
                created=result.created,
                changed=result.changed,
                deleted=result.deleted,
                seconds=round(seconds, 3),
            )
        return dataclasses.replace(result, seconds=seconds)

    def _await_tick(self, tick_s: float) -> None:
        """Journal events as they are queued until the next tick is due (or the source stops)."""
        due = time.monotonic() + tick_s
        while not self._stopping.is_set():
            left = due - time.monotonic()
            if left <= 0 or not self._queued.wait(left):
                return
            self._queued.clear()  # before the flush: what is queued during it wakes the next round
            self.flush()
            if not self._queue.empty():  # the journal refused a batch: retry on the tick, do not spin
                self._stopping.wait(max(due - time.monotonic(), 0))
                return

    def _background(self) -> None:
        next_rescan = time.monotonic() + self.rescan_interval_s
        last_rescan = time.monotonic()
        tick_s = min(self.poll_interval_s, 0.2)
        while True:
            try:
                self._await_tick(tick_s)
            except errors.RetrainError as exc:  # a journal that refuses for good: said, and tried each tick
                log.warning("folder_source_error", dataset=self.location.name, error=str(exc))
                self.sink.board.update(self.name, last_error=str(exc))
                self._stopping.wait(tick_s)
            except Exception as exc:  # a bug: logged with its traceback, and watching goes on
                log.exception("folder_source_crashed", dataset=self.location.name)
                self.sink.board.update(self.name, last_error=str(exc))
                self._stopping.wait(tick_s)
            if self._stopping.is_set():
                return
            try:
                self.counter.refresh()
                self.check_settled()
                self.flush()  # first: what the callbacks read unread is in the journal before catching up
                if self.counter.behind:
                    self.counter.catch_up(self.sink.journal)
                if self._overflowed.is_set():
                    # inotify dropped events: a gap, which the rescan below closes.
                    log.warning("folder_rescan_after_overflow", dataset=self.location.name)
                    self.sink.board.add(self.name, gaps=1)
                    self._overflowed.clear()
                    self._rescan_now.set()
                if self._young_seen and time.monotonic() >= last_rescan + self.settle_s:
                    self._rescan_now.set()
                if self._rescan_now.is_set() or time.monotonic() >= next_rescan:
                    self._rescan_now.clear()
                    last_rescan = time.monotonic()
                    self.rescan()
                    next_rescan = time.monotonic() + self.rescan_interval_s
            except errors.PermanentError as exc:
                log.error("folder_source_failed", dataset=self.location.name, error=str(exc))
                self.failed = str(exc)
                self.sink.board.update(self.name, connected=False, last_error=str(exc))
                return  # the supervisor restarts the source once the folder is back
            except errors.RetrainError as exc:
                log.warning("folder_source_error", dataset=self.location.name, error=str(exc))
                self.sink.board.update(self.name, last_error=str(exc))
            except Exception as exc:  # keep watching whatever went wrong; the next rescan catches up
                log.exception("folder_source_crashed", dataset=self.location.name)
                self.sink.board.update(self.name, last_error=str(exc))

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start watching, then scan once (anything that arrived while the daemon was down).

        Raises:
            errors.PermanentError: the folder does not exist (a missing volume mount, a typo in the rule).
        """
        if not self.root.is_dir():
            raise errors.PermanentError(
                f"dataset folder {self.root} of {self.location.name} does not exist: check the rule's source and "
                "the volume mount"
            )
        watcher = self._watcher_for_root()
        watcher.start()
        self._watcher = watcher
        try:
            self.rescan()
        except BaseException:
            self.stop()
            raise
        self.sink.board.update(self.name, connected=True, last_error=None)
        thread = threading.Thread(target=self._background, name=self.name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _watcher_for_root(self) -> observing.Watcher:
        if observing.OWN_INOTIFY and not self.polling:
            from daemon.sources import inotify  # inotify-simple is installed on Linux only

            return inotify.InotifyWatcher(self, self.root, name=self.name)
        return observing.watchdog_watcher(self, self.root, polling=self.polling, poll_interval_s=self.poll_interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        self._queued.set()
        if self._watcher is not None:
            self._watcher.stop(timeout_s)
        for thread in self._threads:
            thread.join(timeout_s)
        self.flush()
        self.sink.board.update(self.name, connected=False)
