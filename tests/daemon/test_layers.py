"""Architecture checks: the import-linter contracts hold, bite when broken, and torch stays out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_contracts_hold_on_the_repository() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "planted"),
    [
        ("daemon/engine/__init__.py", "mlflow"),
        ("daemon/model/ids.py", "sqlite3"),
        ("daemon/engine/__init__.py", "kfp"),
    ],
)
def test_contract_fails_when_the_pure_core_imports_io(tmp_path: Path, module: str, planted: str) -> None:
    """Plant a forbidden import in a copy of the package: lint-imports must report that exact import."""
    shutil.copytree(ROOT / "daemon", tmp_path / "daemon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a") as handle:
        handle.write(f"\nimport {planted}  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    dotted = module.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    layer = ".".join(dotted.split(".")[:2])
    assert f"{layer} is not allowed to import {planted}" in result.stdout
    assert f"{dotted} -> {planted}" in result.stdout


def test_the_daemon_process_never_imports_torch() -> None:
    """Import every daemon module (and run the CLI's import path): torch and ultralytics stay unloaded."""
    code = (
        "import importlib, pkgutil, sys, daemon\n"
        "for m in pkgutil.walk_packages(daemon.__path__, 'daemon.'):\n"
        "    if m.name != 'daemon.__main__': importlib.import_module(m.name)\n"
        "bad = sorted(n for n in ('torch', 'ultralytics', 'torchvision') if n in sys.modules)\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
