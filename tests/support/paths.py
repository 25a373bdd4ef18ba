"""Where things are: the repository, its real test data, and the installed commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository."""
DATA = ROOT / "tests" / "data"
"""The real test data inside the repository (COCO photos, MinIO's event sample): see its README."""
COCO_MINI = DATA / "coco-mini"
"""24 real COCO 2017 photos with YOLO labels."""
RETRAIN = shutil.which("retrain", path=str(Path(sys.executable).parent)) or str(
    Path(sys.executable).with_name("retrain")
)
"""The installed ``retrain`` command of this virtual environment."""
