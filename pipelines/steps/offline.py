"""Ultralytics offline: no download at run time, ever.

``YOLO_OFFLINE=1`` and a private ``YOLO_CONFIG_DIR`` with a TTF copied in as ``Arial.ttf`` (Ultralytics
otherwise tries to download it on every dataset check). The trainer image sets ``YOLO_CONFIG_DIR`` to a
folder with the font baked in; elsewhere a temporary folder gets a copy of matplotlib's DejaVu Sans.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def prepare_offline(config_dir: Path | None = None) -> Path:
    """Point Ultralytics at a config dir with a font and switch off every download; returns the dir."""
    configured = os.environ.get("YOLO_CONFIG_DIR")
    directory = config_dir or (Path(configured) if configured else Path(tempfile.gettempdir()) / "retrain-yolo-config")
    (directory / "Ultralytics").mkdir(parents=True, exist_ok=True)
    font = directory / "Ultralytics" / "Arial.ttf"
    if not font.exists():
        import matplotlib

        dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        shutil.copyfile(dejavu, font)
        shutil.copyfile(dejavu, directory / "Arial.ttf")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(directory)
    os.environ.setdefault("MLFLOW_KEEP_RUN_ACTIVE", "true")
    return directory
