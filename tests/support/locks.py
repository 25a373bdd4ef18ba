"""requirements/lock.py, loaded as a module (it is a script beside the locks, not part of a package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LOCK_SCRIPT = Path(__file__).resolve().parents[2] / "requirements" / "lock.py"


def load() -> ModuleType:
    if "requirements_lock" in sys.modules:
        return sys.modules["requirements_lock"]
    spec = importlib.util.spec_from_file_location("requirements_lock", LOCK_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["requirements_lock"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
