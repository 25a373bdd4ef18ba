"""DataLoader workers sized to the shared memory a task's container has."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Batches each DataLoader worker keeps ready (PyTorch's ``prefetch_factor``).
PREFETCH = 2


def workers_for_shm(requested: int, *, batch: Any, imgsz: Any, shm: Path = Path("/dev/shm")) -> int:
    """The DataLoader workers that fit the container's shared memory, at most ``requested``.

    Workers hand batches to the trainer through ``/dev/shm``: each holds ``PREFETCH`` batches of uint8 images
    (batch x 3 x imgsz x imgsz bytes). A container's ``/dev/shm`` is 64 MiB unless the pod mounts a memory
    emptyDir there (``pipeline.shm_size``); more workers than fit die with "Bus error ... out of shared
    memory". Half of it is budgeted, the rest left to PyTorch's own buffers."""
    if requested <= 0:
        return 0
    try:
        stats = os.statvfs(shm)
    except OSError:
        return 0  # no shared memory at all: load in the main process
    size = stats.f_blocks * stats.f_frsize
    images = int(batch) if isinstance(batch, int | float) and batch >= 1 else 16  # -1/0.7: auto batch
    side = int(imgsz) if isinstance(imgsz, int | float) and imgsz > 0 else 640
    per_worker = PREFETCH * images * 3 * side * side
    fits = int(size // 2 // per_worker)
    if fits < requested:
        print(
            f"dataloader workers: {fits} of {requested} ({size / 2**20:.0f} MiB /dev/shm fits {fits} at batch "
            f"{images}, imgsz {side}; raise pipeline.shm_size for more)"
        )
    return min(requested, fits)
