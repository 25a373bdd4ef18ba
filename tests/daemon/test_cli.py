"""The installed `retrain` command: version, help, honest stubs, settings errors, secrets hidden."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import daemon
from tests.support.paths import RETRAIN
from tests.support.processes import run_cli as run


def test_version_comes_from_the_installed_package() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"retrain, version {daemon.__version__}"


def test_help_lists_every_command_of_the_product() -> None:
    result = run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("Commands:")[1]
    for name in ("up", "rules", "explain", "status", "trigger", "rollback", "pipeline"):
        assert f"\n  {name} " in commands
    assert "check" in run("rules", "--help").stdout
    assert "compile" in run("pipeline", "--help").stdout


def test_rollback_without_a_champion_says_so(tmp_path: Path) -> None:
    env = {
        "RETRAIN_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
    }
    result = subprocess.run(
        [RETRAIN, "rollback", "pets-detector"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}, **env},
    )
    assert result.returncode == 1
    expected = "retrain rollback: unknown model 'pets-detector': MLflow has no registered model of that name"
    assert expected in result.stderr


def test_config_show_hides_secrets() -> None:
    result = run("config", "show", env={"RETRAIN_KFP__TOKEN": "tok-abcdef-123456"})
    assert result.returncode == 0
    assert "tok-abcdef-123456" not in result.stdout + result.stderr
    assert "token: '**********'" in result.stdout


def test_invalid_settings_exit_2_with_every_error(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text("http:\n  prot: 1\n")
    result = run("--config", str(config), "--set", "kfp.launcher=cloud", "config", "show")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"retrain: invalid settings: {config}:2: field 'http.prot': unknown setting; did you mean 'port'?" in lines
    assert any("field 'kfp.launcher'" in line and "--set kfp.launcher" in line for line in lines)


def test_python_dash_m_daemon_is_retrain() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "daemon", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.stdout.strip() == f"retrain, version {daemon.__version__}"


def test_trigger_journals_a_request_and_status_shows_it(tmp_path: Path) -> None:
    env = {"RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db")}
    assert "has not run yet" in run("status", env=env).stdout
    result = run("trigger", "pets", "--reason", "new camera", env=env)
    assert result.returncode == 0, result.stderr
    assert "manual trigger for pets journaled" in result.stdout
    status = run("status", env=env)
    assert status.returncode == 0, status.stderr
    # The request waits for the running daemon; status says what pets would do with it now.
    assert (
        "pets: 0 new labels, 0 new images; waiting [empty_dataset]: dataset is empty: manual trigger by"
        in status.stdout
    )
    assert "pets-detector: none yet" in status.stdout
    assert run("trigger", "nope", env=env).returncode == 1
