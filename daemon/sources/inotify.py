"""inotify for one watched folder and everything below it (Linux): one reader thread, no event objects.

watchdog's inotify observer runs three threads per folder (a reader that groups moves, an emitter, a
dispatcher) and builds two objects per kernel event; at 10 folders that pipeline capped a burst at ~9,000
files/s on 2 cores (BENCHMARKS.md). Here one thread per folder blocks in ``poll(2)``, reads everything the
kernel has queued in one ``read(2)`` and calls the folder's :class:`~daemon.sources.observing.FolderEvents`
for each event that counts. Moves need no pairing: a move out of a watched directory is a delete, a move into
one is a file renamed into place (the folder treats a move within the tree as both).

Directories are watched as they appear (a rescan follows, for the files that landed before the watch);
a directory moved or deleted loses its watches (a directory moved out of the tree must not keep reporting
its files under their old names). A queue overflow, or the folder itself deleted, moved or unmounted, is
passed on for the folder to rescan.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import inotify_simple

from daemon import errors, logs

if TYPE_CHECKING:
    from daemon.sources import observing

log = logs.get_logger(__name__)

_F = inotify_simple.flags
#: What each watched directory reports: files created, closed after writing, moved and deleted, directories
#: coming and going, the directory itself going. Not opens, reads, read-only closes or modifications (the
#: daemon's own reads of label files would come back as events; a write is followed by its close).
MASK = _F.CREATE | _F.CLOSE_WRITE | _F.MOVED_FROM | _F.MOVED_TO | _F.DELETE | _F.DELETE_SELF | _F.MOVE_SELF
#: Below the folder: directories only, and a symbolic link is not followed (as the rescan's walk).
SUBDIR_MASK = MASK | _F.ONLYDIR | _F.DONT_FOLLOW
#: After the first event, how long to let more accumulate before reading (milliseconds): a burst is then
#: read in large batches rather than one wake-up, read and journal transaction per file, and a lone file is
#: late by this much.
READ_DELAY_MS = 5
_SELF_GONE = _F.DELETE_SELF | _F.MOVE_SELF | _F.UNMOUNT
_DIR_GONE = _F.MOVED_FROM | _F.DELETE
_DIR_CAME = _F.CREATE | _F.MOVED_TO


class InotifyWatcher:
    """Watches ``root`` recursively and tells ``target`` (on the watcher's own thread).

    Args:
        target: the folder the events go to.
        root: the folder.
        name: the thread's name (the source's).
    """

    def __init__(self, target: observing.FolderEvents, root: Path, *, name: str) -> None:
        self.target = target
        self.root = str(root)
        self.name = name
        self._dirs: dict[int, str] = {}  # watch descriptor -> its directory, with one separator after it
        self._inotify: inotify_simple.INotify | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- watches ----------------------------------------------------------------------------------
    def _watch(self, directory: str, mask: int) -> None:
        assert self._inotify is not None
        try:
            wd = self._inotify.add_watch(directory, mask)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR) and directory != self.root:
                return  # gone again (or a link to a directory): the rescan that follows sorts it out
            if exc.errno == errno.ENOSPC:
                raise errors.PermanentError(
                    f"cannot watch {directory}: the inotify watch limit is reached (raise the node's "
                    "fs.inotify.max_user_watches, or set sources.folder_polling)"
                ) from exc
            raise errors.PermanentError(f"cannot watch {directory}: {exc.strerror}") from exc
        self._dirs[wd] = os.path.join(directory, "")

    def _watch_tree(self, top: str) -> None:
        self._watch(top, MASK if top == self.root else SUBDIR_MASK)
        for parent, subdirs, _files in os.walk(top):
            for sub in subdirs:
                self._watch(os.path.join(parent, sub), SUBDIR_MASK)

    def _unwatch_tree(self, top: str) -> None:
        assert self._inotify is not None
        prefix = os.path.join(top, "")
        for wd in [wd for wd, directory in self._dirs.items() if directory.startswith(prefix)]:
            del self._dirs[wd]
            with contextlib.suppress(OSError):  # the kernel dropped it already (the directory was deleted)
                self._inotify.rm_watch(wd)

    # --- events (the watcher's thread) ------------------------------------------------------------
    def _dispatch(self, event: inotify_simple.Event) -> None:
        mask = event.mask
        if mask & _F.Q_OVERFLOW:
            self.target.overflowed()
            return
        directory = self._dirs.get(event.wd)
        if directory is None:
            return  # a watch removed since (a directory moved away): its late events do not count
        if mask & _F.IGNORED:
            del self._dirs[event.wd]
            return
        if mask & _SELF_GONE:
            if directory == os.path.join(self.root, ""):
                self.target.tree_changed()  # the folder itself went: the rescan says so
            return
        path = directory + event.name
        if mask & _F.ISDIR:
            if mask & _DIR_GONE:
                self._unwatch_tree(path)
            elif mask & _DIR_CAME:
                self._watch_tree(path)
            self.target.tree_changed()
        elif mask & (_F.CLOSE_WRITE | _F.MOVED_TO):
            self.target.file_closed(path)
        elif mask & _F.CREATE:
            self.target.file_appeared(path)
        elif mask & _DIR_GONE:
            self.target.file_deleted(path)

    def _run(self) -> None:
        assert self._inotify is not None
        poller = select.poll()
        poller.register(self._inotify.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._stopping.is_set():
            poller.poll()
            if self._stopping.is_set():
                return
            time.sleep(READ_DELAY_MS / 1000)
            try:
                batch = self._inotify.read(timeout=0)
            except OSError as exc:  # the descriptor is unusable: deaf from here on, so say so and stop
                if not self._stopping.is_set():
                    self.target.watch_failed(f"inotify stopped reporting for {self.root}: {exc.strerror}")
                return
            for event in batch:
                try:
                    self._dispatch(event)
                except errors.PermanentError as exc:  # a new directory that cannot be watched
                    log.warning("folder_watch_failed", error=str(exc))
                    self.target.tree_changed()  # the periodic rescans still see its files
                except Exception:  # a bug: logged with its traceback, and watching goes on
                    log.exception("folder_event_failed", path=os.fsdecode(event.name))

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Watch the folder and every directory below it, then start reading.

        Raises:
            errors.PermanentError: the folder cannot be watched (gone, or the node's inotify limits reached).
        """
        try:
            self._inotify = inotify_simple.INotify()
        except OSError as exc:
            raise errors.PermanentError(
                f"cannot watch {self.root}: no inotify instance ({exc.strerror}; raise the node's "
                "fs.inotify.max_user_instances, or set sources.folder_polling)"
            ) from exc
        self._wake_r, self._wake_w = os.pipe()
        try:
            self._watch_tree(self.root)
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._run, name=f"{self.name}:inotify", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stopping.set()
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._close()

    def _close(self) -> None:
        if self._inotify is not None:
            with contextlib.suppress(OSError):
                self._inotify.close()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
