"""Files that appeared in a watched folder without a close event (a hard link, a polled network volume),
held until their size and modification time have stayed the same for the settle time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Settling:
    """The files waiting to settle, by key (the watchdog callbacks add, the background thread checks).

    Adding reads nothing (nearly every file is closed a moment later, and its close takes it out): a file's
    first look comes ``settle_s`` after it was added, and it has settled once a later look, ``settle_s`` on,
    finds the same version.
    """

    def __init__(self, settle_s: float) -> None:
        self.settle_s = settle_s
        # key -> (its version at the last look, None before the first; since when unchanged)
        self._files: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def add(self, key: str) -> None:
        with self._lock:
            self._files[key] = (None, time.monotonic())

    def forget(self, key: str) -> None:
        with self._lock:
            self._files.pop(key, None)

    def settled(self, look: Callable[[str], str | None]) -> list[str]:
        """The keys that settled, taken out. ``look`` gives a file's version now, None for one gone (also taken
        out: its delete event or the next rescan tells)."""
        now = time.monotonic()
        with self._lock:
            due = [(key, v) for key, (v, since) in self._files.items() if now - since >= self.settle_s]
        done = []
        for key, version in due:
            current = look(key)
            with self._lock:
                if current is None or current == version:
                    self._files.pop(key, None)
                    if current is not None:
                        done.append(key)
                else:
                    self._files[key] = (current, time.monotonic())
        return done
