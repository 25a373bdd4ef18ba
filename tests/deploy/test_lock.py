"""The locks (requirements/*.lock) against pyproject.toml and this environment: written from the current
inputs, every pin exact and hashed, every declared range satisfied, one version of a package everywhere,
and the virtual environment holding exactly dev.lock (what `make install` promises)."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support import locks

lock = locks.load()
ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
IMAGE = {
    "python_version": "3.11",
    "python_full_version": "3.11.7",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def pins(path: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for name, version, _marker, _hashes in lock.entries(path):
        found.setdefault(canonicalize_name(name), set()).add(version)
    return found


def declared(extras: tuple[str, ...]) -> list[Requirement]:
    wanted = [Requirement(text) for text in PYPROJECT["dependencies"]]
    for extra in extras:
        wanted += [Requirement(text) for text in PYPROJECT["optional-dependencies"][extra]]
    return wanted


@pytest.mark.parametrize("target", lock.LOCKS, ids=lambda t: t.path.name)
def test_every_lock_was_written_from_the_current_inputs(target: object) -> None:
    assert lock.recorded_fingerprint(target.path) == lock.fingerprint(), "pyproject.toml changed: run make lock"


def test_a_changed_dependency_makes_the_locks_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    changed = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text()
    first = PYPROJECT["dependencies"][0]
    assert f'"{first}"' in text
    changed.write_text(text.replace(f'"{first}"', f'"{first}", "six>=1"', 1))
    assert lock.stale() == 0
    monkeypatch.setattr(lock, "PYPROJECT", changed)
    assert lock.stale() == 1


@pytest.mark.parametrize("target", lock.LOCKS, ids=lambda t: t.path.name)
def test_every_pin_is_exact_and_hashed(target: object) -> None:
    found = lock.entries(target.path)
    assert len(found) > 50
    for name, version, _marker, hashes in found:
        assert version and "*" not in version, name
        assert hashes, f"{name}=={version} has no hash"


@pytest.mark.parametrize("target", lock.LOCKS, ids=lambda t: t.path.name)
def test_every_declared_range_is_satisfied_by_the_lock(target: object) -> None:
    locked = pins(target.path)
    for requirement in declared(target.extras):
        if requirement.marker is not None and not target.universal and not requirement.marker.evaluate(IMAGE):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is declared, {target.path.name} has no {name}"
        for version in locked[name]:
            assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} vs {requirement}"


def test_the_image_locks_take_the_laptop_versions_and_the_daemon_has_no_torch_nor_full_mlflow() -> None:
    dev = pins(lock.LOCKS[0].path)
    daemon, trainer = pins(lock.LOCKS[1].path), pins(lock.LOCKS[2].path)
    for image in (daemon, trainer):
        for name, versions in image.items():
            assert versions <= dev.get(name, set()), f"{name}: {versions} in an image, {dev.get(name)} in dev.lock"
    assert set(daemon) <= set(trainer)
    assert not {"torch", "torchvision", "ultralytics"} & set(daemon)
    # MLflow's REST client only: the server, its database layer and the data-science stack stay out.
    assert "mlflow-skinny" in daemon
    assert not {"mlflow", "sqlalchemy", "alembic", "pandas", "pyarrow", "scipy", "scikit-learn"} & set(daemon)
    assert "mlflow" in trainer


def test_the_constraints_hold_in_every_lock_that_has_the_package() -> None:
    constraints = [
        Requirement(line)
        for line in (ROOT / "requirements" / "constraints.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert constraints
    for target in lock.LOCKS:
        locked = pins(target.path)
        for constraint in constraints:
            for version in locked.get(canonicalize_name(constraint.name), set()):
                assert constraint.specifier.contains(version), f"{target.path.name}: {constraint.name}=={version}"


def test_this_environment_holds_exactly_the_dev_lock() -> None:
    """`make install` installs dev.lock and removes what it does not hold: pip freeze equals the lock."""
    wrong, extra = lock.differences(lock.LOCKS[0].path)
    assert wrong == {}, "installed versions differ from requirements/dev.lock: run make install"
    assert extra == [], "installed packages that requirements/dev.lock does not hold: run make install"


def test_uv_the_locks_are_made_with_is_installed() -> None:
    assert shutil.which("uv", path=str(Path(lock.sys.executable).parent)), "make lock needs uv (dev extra)"


def test_the_bench_lock_holds_the_peer_pinned_and_hashed_from_its_current_input() -> None:
    """bench.lock (Dagster, the peer of benchmarks/peer_sensor.py) is resolved from bench.in alone."""
    assert lock.recorded_fingerprint(lock.BENCH_LOCK) == lock.bench_fingerprint(), "bench.in changed: run make lock"
    locked = pins(lock.BENCH_LOCK)
    for line in lock.BENCH_IN.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            requirement = Requirement(line)
            [version] = locked[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(version)
    for name, version, _marker, hashes in lock.entries(lock.BENCH_LOCK):
        assert hashes, f"{name}=={version} has no hash"
