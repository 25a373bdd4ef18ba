"""check_accelerator: what torch sees, and a clear failure when a run needs a GPU that is not there."""

from __future__ import annotations

import json
from typing import Any


def report() -> dict[str, Any]:
    """The CUDA devices torch sees (count, names, memory) and torch's version."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [
        {
            "name": torch.cuda.get_device_name(i),
            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
        }
        for i in range(count)
    ]
    return {"cuda": torch.cuda.is_available(), "count": count, "devices": devices, "torch": torch.__version__}


def check(*, require_gpu: bool) -> str:
    """Print and return the report as JSON; raise when ``require_gpu`` and torch sees no GPU."""
    found = report()
    text = json.dumps(found)
    print(text)
    if require_gpu and found["count"] == 0:
        raise RuntimeError(
            "this run requires a GPU but torch sees none: check the node's GPU driver, the task's "
            "accelerator limit and the CUDA build of torch in the trainer image"
        )
    return text
