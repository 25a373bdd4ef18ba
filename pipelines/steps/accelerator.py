"""check_accelerator: what torch sees, and a clear failure when a run needs a GPU that is not there."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Where the NVIDIA kernel driver says its version (present on a node with the driver loaded; the device plugin
#: makes it visible in a GPU container).
DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")
#: The oldest Linux driver each CUDA major version runs on (NVIDIA's CUDA toolkit release notes, table 3).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}


def driver_version(path: Path = DRIVER_VERSION_FILE) -> str | None:
    """The NVIDIA kernel driver's version on this node, or None when no driver is loaded."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", text)
    return found[1] if found else text.strip()[:80]


def report() -> dict[str, Any]:
    """The CUDA devices torch sees (count, names, memory), torch's version and CUDA build, the node's driver."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    devices = [
        {
            "name": torch.cuda.get_device_name(i),
            "memory_gib": round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1),
        }
        for i in range(count)
    ]
    return {
        "cuda": torch.cuda.is_available(),
        "count": count,
        "devices": devices,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "driver": driver_version(),
    }


def no_gpu_reason(found: dict[str, Any]) -> str:
    """Why a run that needs a GPU cannot have one here, with the driver and CUDA versions that matter."""
    build = found.get("torch_cuda")
    major = int(str(build).split(".")[0]) if build else None
    needed = MIN_DRIVER.get(major) if major else None
    driver = found.get("driver")
    parts = [
        "this run requires a GPU but torch sees none",
        f"NVIDIA driver on the node: {driver}"
        if driver
        else "NVIDIA driver on the node: none loaded "
        f"({DRIVER_VERSION_FILE} absent: a node without the driver, or a pod without a GPU from the device plugin)",
        f"torch {found.get('torch')} built for CUDA {build}"
        + (f", which needs driver {needed} or newer" if needed else "")
        if build
        else f"torch {found.get('torch')} has no CUDA build (a CPU-only trainer image)",
        "check the task's accelerator limit (pipeline.accelerator_type), the node's driver and the trainer image",
    ]
    return "; ".join(parts)


def check(*, require_gpu: bool) -> str:
    """Print and return the report as JSON; raise when ``require_gpu`` and torch sees no GPU."""
    found = report()
    text = json.dumps(found)
    print(text)
    if require_gpu and found["count"] == 0:
        raise RuntimeError(no_gpu_reason(found))
    return text
