"""watchdog's observer for one dataset folder: inotify narrowed to the events that count (or polling, on
network volumes), and an alarm for the inotify queue overflows that watchdog only logs."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

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

#: The inotify events a folder needs (watchdog narrows the kernel's watch mask to them). Left out:
#: modifications (a write is followed by its close, and the settle check compares size and modification
#: time itself), opens and read-only closes (the daemon's own reads of label files would come back as
#: events, two per file).
INOTIFY_EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


def observer_for(handler: FileSystemEventHandler, root: Path, *, polling: bool, poll_interval_s: float) -> BaseObserver:
    """An observer of ``root`` and everything below it, calling ``handler`` (not started)."""
    observer: BaseObserver
    if polling:
        observer = PollingObserver(timeout=poll_interval_s)
        observer.schedule(handler, str(root), recursive=True)
    else:
        observer = Observer()
        observer.schedule(handler, str(root), recursive=True, event_filter=INOTIFY_EVENTS)
    return observer


class OverflowAlarm(logging.Handler):
    """watchdog logs an inotify queue overflow and tells no handler: turn the log line into a rescan."""

    def __init__(self, on_overflow: threading.Event) -> None:
        super().__init__(level=logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow.set()
