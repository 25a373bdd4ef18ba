"""The lock files: exact versions with hashes, one set of versions for the laptop, CI and both images.

    python requirements/lock.py install         # `make install`: dev.lock with hashes, the project, then check
    python requirements/lock.py lock            # `make lock`: resolve pyproject.toml again (uv), write the locks
                                                # LOCK_UPGRADE=all or LOCK_UPGRADE=name,name: take newer releases
    python requirements/lock.py check [--prune] # the environment holds exactly dev.lock (prune: uninstall extras)
    python requirements/lock.py stale           # exit 1 when pyproject.toml changed since the locks were written
    python requirements/lock.py bench-env       # `make bench`: .venv-bench from bench.lock (Dagster, the peer)

Three locks, all resolved from ``pyproject.toml`` plus ``build.in`` (pip, setuptools and wheel: the build of
this project itself is pinned too, installed with ``--no-build-isolation``) and ``constraints.in``:

- ``dev.lock``: the project, its ``local``, ``train`` and ``dev`` extras; universal (markers for every platform), so a
  laptop on any OS installs from it. ``make install`` and ``.ci/run`` use it.
- ``daemon.lock``: the project alone, for the daemon image (linux x86_64, Python 3.11): no torch, and
  mlflow-skinny (MLflow's REST client) instead of full MLflow.
- ``trainer.lock``: the project and its ``train`` extra, for the trainer image (linux x86_64, Python 3.11).

The image locks are resolved with ``dev.lock`` as a constraint, so a package has one version everywhere.
A fourth, ``bench.lock``, is resolved from ``bench.in`` alone (linux x86_64, Python 3.11): Dagster, the
peer that ``benchmarks/peer_sensor.py`` runs beside the daemon, in its own ``.venv-bench`` (it pins
``watchdog<7``; the daemon uses watchdog 7, so it cannot share the project's versions).
Every lock starts with the SHA-256 of its inputs; ``stale`` (and a test) compare it with the inputs now.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYPROJECT = ROOT / "pyproject.toml"
BUILD_IN = HERE / "build.in"
CONSTRAINTS_IN = HERE / "constraints.in"
BENCH_IN = HERE / "bench.in"
BENCH_LOCK = HERE / "bench.lock"
BENCH_VENV = ROOT / ".venv-bench"
PROJECT = "retrain-daemon"
PYTHON = "3.11"
IMAGE_PLATFORM = "x86_64-manylinux_2_28"
FINGERPRINT_PREFIX = "# inputs-sha256: "


@dataclass(frozen=True)
class Lock:
    path: Path
    extras: tuple[str, ...]
    universal: bool


LOCKS = (
    Lock(HERE / "dev.lock", ("local", "train", "dev"), universal=True),
    Lock(HERE / "daemon.lock", (), universal=False),
    Lock(HERE / "trainer.lock", ("train",), universal=False),
)


def fingerprint() -> str:
    """SHA-256 of everything a lock is resolved from: the dependency tables, build.in and constraints.in."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    inputs = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build.in": BUILD_IN.read_text(),
        "constraints.in": CONSTRAINTS_IN.read_text(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def bench_fingerprint() -> str:
    """SHA-256 of bench.lock's one input."""
    return hashlib.sha256(BENCH_IN.read_bytes()).hexdigest()


def recorded_fingerprint(path: Path) -> str | None:
    for line in path.read_text().splitlines():
        if line.startswith(FINGERPRINT_PREFIX):
            return line.removeprefix(FINGERPRINT_PREFIX).strip()
    return None


def entries(path: Path) -> list[tuple[str, str, str | None, list[str]]]:
    """``(name, version, marker, hashes)`` for every pinned line of a lock."""
    logical = re.sub(r"\\\n\s*", " ", path.read_text())
    found = []
    for line in logical.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", line)
        requirement = line.split(" --hash", 1)[0].strip()
        spec, _, marker = requirement.partition(";")
        name, _, version = spec.partition("==")
        found.append((name.strip(), version.strip(), marker.strip() or None, hashes))
    return found


def pins_for_this_python(path: Path) -> dict[str, str]:
    """The lock's pins whose markers hold for the running interpreter and platform."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    pins = {}
    for name, version, marker, _ in entries(path):
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def installed() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    return {canonicalize_name(d.metadata["Name"]): d.version for d in importlib.metadata.distributions()}


def differences(lock: Path) -> tuple[dict[str, tuple[str | None, str | None]], list[str]]:
    """``{name: (locked, installed)}`` where they differ, and the installed names the lock does not have."""
    from packaging.utils import canonicalize_name

    pins, have = pins_for_this_python(lock), installed()
    wrong = {name: (version, have.get(name)) for name, version in pins.items() if have.get(name) != version}
    extra = sorted(name for name in have if name not in pins and name != canonicalize_name(PROJECT))
    return wrong, extra


# pip's complaint about an index location in the machine's own pip configuration (a partial local mirror),
# repeated for every package: not this project's, and a newcomer reads pages of it as errors.
MISSING_LOCATION = re.compile(r"^WARNING: Location '(file:[^']+)' is ignored: it is neither a file nor a directory\.$")


def pip(*arguments: str, python: str = sys.executable) -> int:
    """``pip install`` with its own output kept to warnings and errors, printed in full, minus one kind of noise."""
    command = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *arguments]
    # setuptools announces every editable install as a warning; it is the expected way to install here.
    env = {**os.environ, "PYTHONWARNINGS": "ignore:Editable installation"}
    missing = set()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as process:
        assert process.stdout is not None
        for line in process.stdout:
            found = MISSING_LOCATION.match(line.rstrip("\n"))
            if found:
                missing.add(found.group(1).rsplit("/", 2)[0])
            else:
                sys.stdout.write(line)
    if missing:
        print(f"(pip skipped index locations of this machine's pip configuration that do not exist: {sorted(missing)})")
    return process.returncode


def install() -> int:
    """What ``make install`` does: exactly dev.lock (hashes checked), the project without dependencies, check."""
    dev = LOCKS[0].path
    print(f"installing the locked dependencies ({dev.relative_to(ROOT)}) into {Path(sys.prefix)}")
    if pip("--require-hashes", "--no-deps", "-r", str(dev)) != 0:
        return 1
    print(f"installing {PROJECT} (editable)")
    if pip("--no-deps", "--no-build-isolation", "--editable", str(ROOT)) != 0:
        return 1
    status = check(prune=True)
    if status == 0:
        print(f"{Path(sys.prefix)} holds exactly {dev.name}")
    return status


def compile_lock(output: Path, inputs: list[str], options: list[str], digest: str) -> None:
    """Resolve ``inputs`` with uv into ``output`` (hashes; ``options`` say for which platform, which extras,
    which constraints) and head it with the fingerprint ``digest`` of what it was resolved from."""
    command = [
        str(Path(sys.executable).parent / "uv"),
        "pip",
        "compile",
        "--quiet",
        "--generate-hashes",
        "--python-version",
        PYTHON,
        "--custom-compile-command",
        "make lock",
        "--output-file",
        str(output.relative_to(ROOT)),
        *options,
    ]
    # uv keeps the versions already in the lock while they fit; LOCK_UPGRADE asks for newer ones.
    upgrade = os.environ.get("LOCK_UPGRADE", "").strip()
    if upgrade == "all":
        command += ["--upgrade"]
    elif upgrade:
        for package in upgrade.split(","):
            command += ["--upgrade-package", package.strip()]
    subprocess.run([*command, *inputs], cwd=ROOT, check=True)
    header = f"# Locked by `make lock` (requirements/lock.py); do not edit by hand.\n{FINGERPRINT_PREFIX}{digest}\n"
    output.write_text(header + output.read_text())
    print(f"{output.relative_to(ROOT)}: {len(entries(output))} pins")


def lock() -> None:
    digest = fingerprint()
    for target in LOCKS:
        options = ["--constraint", str(CONSTRAINTS_IN.relative_to(ROOT))]
        options += ["--universal"] if target.universal else ["--python-platform", IMAGE_PLATFORM]
        if not target.universal:
            options += ["--constraint", str(LOCKS[0].path.relative_to(ROOT))]
        for extra in target.extras:
            options += ["--extra", extra]
        compile_lock(target.path, ["pyproject.toml", str(BUILD_IN.relative_to(ROOT))], options, digest)
    lock_bench()


def lock_bench() -> None:
    options = ["--python-platform", IMAGE_PLATFORM]
    compile_lock(BENCH_LOCK, [str(BENCH_IN.relative_to(ROOT))], options, bench_fingerprint())


def bench_env() -> int:
    """``.venv-bench`` holding bench.lock (hashes checked); rebuilt only when the lock changed."""
    stamp = BENCH_VENV / ".installed"
    digest = hashlib.sha256(BENCH_LOCK.read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return 0
    print(f"installing {BENCH_LOCK.relative_to(ROOT)} (the benchmarks' peer, Dagster) into {BENCH_VENV}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(BENCH_VENV)], check=True)
    if pip("--require-hashes", "--no-deps", "-r", str(BENCH_LOCK), python=str(BENCH_VENV / "bin" / "python")) != 0:
        return 1
    stamp.write_text(digest)
    return 0


def check(*, prune: bool) -> int:
    lock_path = LOCKS[0].path
    wrong, extra = differences(lock_path)
    if extra and prune:
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes", *extra], check=True)
        print(f"removed what {lock_path.name} does not hold: {', '.join(extra)}")
        wrong, extra = differences(lock_path)
    for name, (locked, have) in sorted(wrong.items()):
        print(f"{name}: locked {locked}, installed {have or 'nothing'}", file=sys.stderr)
    for name in extra:
        print(f"{name}: installed, not in {lock_path.name}", file=sys.stderr)
    return 1 if wrong or extra else 0


def stale() -> int:
    digest = fingerprint()
    old = [t.path.name for t in LOCKS if not t.path.exists() or recorded_fingerprint(t.path) != digest]
    if not BENCH_LOCK.exists() or recorded_fingerprint(BENCH_LOCK) != bench_fingerprint():
        old.append(BENCH_LOCK.name)
    if old:
        print(f"the inputs changed since {', '.join(old)} was written: run make lock")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        return install()
    if argv[:1] == ["lock"]:
        lock()
        return 0
    if argv[:1] == ["check"]:
        return check(prune="--prune" in argv)
    if argv[:1] == ["stale"]:
        return stale()
    if argv[:1] == ["bench-env"]:
        return bench_env()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
