"""Atomic files: whatever the daemon or a pipeline child reads back is written whole or not at all.

Write to a temporary file in the same folder, flush and fsync it, rename it over the target, fsync the
folder. A reader (or a restarted daemon) sees the old content or the new, never a torn or empty file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, value: Any) -> None:
    write_bytes(path, json.dumps(value, indent=2).encode("utf-8"))


def read_json(path: Path) -> Any | None:
    """The JSON in ``path``, or None when it is missing, empty or not JSON (a file from before atomic writes,
    or one a crash cut short): callers treat that as "not written"."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
