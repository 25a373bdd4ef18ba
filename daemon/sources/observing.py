"""What a watcher of one dataset folder tells it (:class:`FolderEvents`), and watchdog's observers: polling on
network volumes (NFS/SMB send no inotify events), native off Linux (FSEvents on a macOS laptop,
ReadDirectoryChangesW on Windows). On Linux the daemon's own inotify reader (:mod:`daemon.sources.inotify`)
watches local volumes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

#: Whether folders are watched by the daemon's own inotify reader (Linux) rather than watchdog's observer.
OWN_INOTIFY = sys.platform == "linux"


class FolderEvents(Protocol):
    """What a watcher tells the folder, on the watcher's thread (paths are absolute, below the folder)."""

    def file_closed(self, path: str) -> None:
        """Complete: closed after writing, or renamed (moved) into place."""

    def file_appeared(self, path: str) -> None:
        """Created or changed without a close yet (a hard link, a polled volume): complete once settled."""

    def file_deleted(self, path: str) -> None:
        """Deleted, or moved away."""

    def tree_changed(self) -> None:
        """A directory came, went or moved, or the folder itself did: a rescan sorts it out."""

    def overflowed(self) -> None:
        """The kernel dropped events: a gap, for a rescan to close."""

    def watch_failed(self, reason: str) -> None:
        """The watcher can report nothing more: the folder is to be watched afresh."""


class Watcher(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout_s: float = 5.0) -> None: ...


#: The events watchdog's native observer passes on (on Linux, watchdog narrows the kernel's watch mask to
#: them): creates, closes, moves and deletes; not modifications, opens or read-only closes.
NATIVE_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    """watchdog's events, told to the folder."""

    def __init__(self, target: FolderEvents) -> None:
        super().__init__()
        self.target = target

    def on_closed(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.target.file_closed(_text(event.src_path))

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.target.tree_changed()
            return
        self.target.file_deleted(_text(event.src_path))
        self.target.file_closed(_text(event.dest_path))

    def on_created(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.target.tree_changed()
        else:
            self.target.file_appeared(_text(event.src_path))

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.target.file_appeared(_text(event.src_path))

    def on_deleted(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            self.target.tree_changed()
        else:
            self.target.file_deleted(_text(event.src_path))


def _text(path: str | bytes) -> str:
    return path if isinstance(path, str) else path.decode(sys.getfilesystemencoding(), "surrogateescape")


class _WatchdogWatcher:
    def __init__(self, observer: BaseObserver) -> None:
        self.observer = observer

    def start(self) -> None:
        self.observer.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.observer.stop()
        self.observer.join(timeout_s)


def watchdog_watcher(target: FolderEvents, root: Path, *, polling: bool, poll_interval_s: float) -> Watcher:
    """watchdog's polling or native observer of ``root`` and everything below it, for ``target`` (not started)."""
    observer: BaseObserver
    if polling:
        observer = PollingObserver(timeout=poll_interval_s)
        observer.schedule(_Handler(target), str(root), recursive=True)
    else:
        observer = Observer()
        observer.schedule(_Handler(target), str(root), recursive=True, event_filter=NATIVE_EVENTS)
    return _WatchdogWatcher(observer)
