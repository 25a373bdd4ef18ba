"""Where things are: the repository, the shared folder beside it, and the installed commands."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository."""
SHARED = ROOT.parent / "shared"
"""The team's shared folder beside the checkout (datasets, MinIO's event sample)."""
RETRAIN = shutil.which("retrain", path=str(Path(sys.executable).parent)) or str(
    Path(sys.executable).with_name("retrain")
)
"""The installed ``retrain`` command of this virtual environment."""
