"""Small real filesystems for tests that need a full disk or a read-only volume: tmpfs mounts (root only).

The tests run as root on the CI machine (as the README says), so a 1 MiB tmpfs is a real volume that fills
up, and a remount makes it read-only for real; nothing is simulated.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


def require_root() -> None:
    assert os.geteuid() == 0, "these tests mount small real filesystems and must run as root (CI does)"


@contextlib.contextmanager
def tmpfs(path: Path, *, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` for the duration of the block."""
    require_root()
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Fill the filesystem holding ``path`` until a write fails; returns the filler file."""
    filler = path / ".filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
    return filler


@contextlib.contextmanager
def read_only_view(path: Path, view: Path) -> Iterator[Path]:
    """``path`` bind-mounted read-only at ``view`` (how kubelet mounts a ``readOnly: true`` volume)."""
    require_root()
    view.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "--bind", str(path), str(view)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)
