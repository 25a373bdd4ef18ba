"""Architecture checks: the import-linter contracts hold, bite when broken, and torch stays out."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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
    for package in ("daemon", "pipelines"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
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


def test_the_launch_path_contract_bites(tmp_path: Path) -> None:
    """Plant `import kfp` in the launching part: the no-kfp-to-launch contract reports it."""
    for package in ("daemon", "pipelines"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "daemon" / "runtime" / "launching.py").open("a") as handle:
        handle.write("\nimport kfp  # planted by the test\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "daemon.runtime.launching -> kfp" in result.stdout


def test_no_import_cycle_anywhere() -> None:
    """No module of daemon/ or pipelines/ reaches itself through its imports (function-level ones included)."""
    import grimp

    graph = grimp.build_graph("daemon", "pipelines")
    cycles = [
        f"{module} -> {imported}"
        for module in sorted(graph.modules)
        for imported in graph.find_modules_directly_imported_by(module)
        if imported != module and graph.chain_exists(importer=imported, imported=module)
    ]
    packages = {m.rsplit(".", 1)[0] for m in graph.modules}
    # A package importing its own submodules (daemon.journal.sqlite -> .inventory) is not a cycle of modules.
    cycles = [c for c in cycles if c.split(" -> ")[0] not in packages and c.split(" -> ")[1] not in packages]
    assert cycles == []


STUB = """
import json, pathlib, sys
spec = pathlib.Path(sys.argv[1])
outcome = {"model": "idle-detector", "version": "1", "decision": "promoted", "reason": "stub",
           "candidate": {"map50_95": 0.5, "map50": 0.7, "per_class": {}}}
(spec.parent / "outcome.json").write_text(json.dumps({"state": "succeeded", "output": outcome}))
"""

DAEMON = """
import sys, threading, time
from pathlib import Path
from daemon import reactor, settings
from daemon.launchers import local
root = Path(sys.argv[1])
config = settings.load(environ={}, overrides=[
    f"journal.path={root / 'journal.db'}", f"rules.path={root / 'rules'}", "http.port=0",
    f"kfp.local_pipeline_root={root / 'runs'}", f"mlflow.tracking_uri=sqlite:///{root / 'mlflow.db'}",
])
launcher = local.LocalLauncher(root=root / "runs", command=[sys.executable, "-c", sys.argv[2]])
daemon = reactor.Reactor(config, launcher=launcher)
thread = threading.Thread(target=daemon.run, daemon=True)
thread.start()
deadline = time.monotonic() + 120
while not [r for r in daemon.journal.runs() if r.state.final]:
    assert time.monotonic() < deadline, "no run was recorded"
    time.sleep(0.2)
loaded = sorted(n for n in ("kfp", "mlflow", "torch", "ultralytics") if n in sys.modules)
daemon.stop(); thread.join(30)
print("LOADED", loaded)
"""


def test_retrain_up_launches_and_records_a_run_without_kfp_or_mlflow(tmp_path: Path) -> None:
    """The local launch path: decided, launched, recorded; the daemon never imported kfp nor MLflow."""
    data = tmp_path / "data" / "labels"
    data.mkdir(parents=True)
    (data / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "idle.yaml").write_text(
        f"name: idle\ndataset: {{source: 'file://{data.parent}'}}\nmodel: {{registered_name: idle-detector}}\n"
        "triggers: [{new_labels: {quiet_period: 0s}}]\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", DAEMON, str(tmp_path), STUB],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "LOADED []" in result.stdout


def test_retrain_up_idles_without_kfp_mlflow_or_torch_imported(tmp_path: Path) -> None:
    """``retrain up`` itself (the laptop defaults: kfp.local, MLflow on SQLite) with rules in force, data
    journaled, decisions taken and every HTTP page served: Python's own import log (PYTHONPROFILEIMPORTTIME)
    shows that kfp, MLflow and torch were never imported; they load when a run or a drift check needs them."""
    import httpx

    from tests.support import processes
    from tests.support.waiting import wait_until

    (tmp_path / "rules").mkdir()
    for index in range(3):
        data = tmp_path / f"data{index}"
        (data / "labels" / "train").mkdir(parents=True)
        (tmp_path / "rules" / f"rule{index}.yaml").write_text(
            f"name: idle{index}\ndataset: {{source: 'file://{data}'}}\nmodel: {{registered_name: idle-{index}}}\n"
            "triggers: [{new_labels: {min_new_labels: 1000, min_per_class: {'0': 5}}},"
            " {schedule: {cron: '0 3 1 1 *'}}]\n"
        )
    daemon = processes.Daemon(tmp_path)
    daemon.env["PYTHONPROFILEIMPORTTIME"] = "1"
    daemon.start()
    try:
        daemon.wait_started()
        url = daemon.url()
        for index in range(3):
            for n in range(20):
                (tmp_path / f"data{index}" / "labels" / "train" / f"{n}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        journal = daemon.journal()
        try:
            wait_until(lambda: journal.event_count() == 60, 60, "the label files to be journaled")
        finally:
            journal.close()
        pages = ["/healthz", "/readyz", "/metrics", "/", "/api/v1/dashboard", "/api/v1/models/idle-0/history"]
        pages += [f"/api/v1/{name}" for name in ("status", "rules", "decisions", "runs", "champions", "sources")]
        for page in pages:
            assert httpx.get(url + page, timeout=30).status_code == 200, page
        time.sleep(3)  # a few loop passes with nothing to do
    finally:
        assert daemon.terminate() == 0, daemon.log_tail()
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in (tmp_path / "daemon-1.log").read_text(errors="replace").splitlines()
        if line.startswith("import time:")
    }
    assert "daemon.reactor" in imported  # the import log is there to read
    loaded = sorted(name for name in imported if name.split(".")[0] in {"kfp", "mlflow", "torch", "ultralytics"})
    assert loaded == []
