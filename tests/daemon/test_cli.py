"""The installed `retrain` command: version, help, honest stubs, settings errors, secrets hidden."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import httpx

import daemon
from daemon.journal import sqlite
from daemon.model import decisions, ids, runs
from daemon.rules import loading
from tests.support.paths import RETRAIN
from tests.support.processes import Daemon
from tests.support.processes import run_cli as run
from tests.support.services import free_port
from tests.support.waiting import stays, wait_until


def test_version_comes_from_the_installed_package() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"retrain, version {daemon.__version__}"


def test_help_lists_every_command_of_the_product() -> None:
    result = run("--help")
    assert result.returncode == 0
    commands = result.stdout.split("Commands:")[1]
    for name in (
        "up",
        "rules",
        "explain",
        "status",
        "trigger",
        "rollback",
        "pipeline",
        "pause",
        "resume",
        "runs",
        "cancel",
    ):
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
    # The shipped rules read buckets: an endpoint must be set for their triggers to be taken.
    env = {"RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"), "RETRAIN_SOURCES__S3__ENDPOINT": "127.0.0.1:9"}
    assert "the daemon has not run" in run("status", env=env).stdout
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


def _rules_env(tmp_path: Path) -> dict[str, str]:
    """Three rules: ``pets`` disabled, ``cats`` on a bucket, ``dogs`` on a folder; a journal path and a port
    where no daemon listens."""
    folder = tmp_path / "rules"
    folder.mkdir()
    common = "model: {registered_name: NAME-detector, base: yolov8n.yaml}\ntriggers: [{new_labels: {}}]\n"
    (folder / "pets.yaml").write_text(
        "name: pets\nenabled: false\ndataset: {source: 'file:///data/pets'}\n" + common.replace("NAME", "pets")
    )
    (folder / "cats.yaml").write_text(
        "name: cats\ndataset: {source: 's3://datasets/cats/'}\n" + common.replace("NAME", "cats")
    )
    (folder / "dogs.yaml").write_text(
        f"name: dogs\ndataset: {{source: 'file://{tmp_path}/dogs'}}\n" + common.replace("NAME", "dogs")
    )
    return {
        "RETRAIN_RULES__PATH": str(folder),
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
        "RETRAIN_HTTP__PORT": str(free_port()),
    }


def test_status_before_the_first_run_shows_the_rules_and_creates_nothing(tmp_path: Path) -> None:
    """Before: ``no journal ...`` and exit 1, while ``explain`` worked."""
    env = _rules_env(tmp_path)
    result = run("status", env=env)
    assert result.returncode == 0, result.stderr
    assert f"no journal at {tmp_path / 'journal.db'} yet: the daemon has not run" in result.stdout
    assert "dogs: 0 new labels, 0 new images" in result.stdout
    assert json.loads(run("status", "--json", env=env).stdout)["rules"]
    assert not (tmp_path / "journal.db").exists()


def test_a_trigger_that_could_do_nothing_is_refused_and_a_missing_daemon_is_named(tmp_path: Path) -> None:
    """Before: a disabled rule, or a bucket rule without an S3 endpoint, was "journaled" with exit 0 (the
    latter ended as "dataset is empty"), and nothing said that no daemon would answer."""
    env = _rules_env(tmp_path)
    disabled = run("trigger", "pets", env=env)
    assert disabled.returncode == 1
    assert f"retrain trigger: rule 'pets' is disabled (enabled: false in {tmp_path / 'rules' / 'pets.yaml'}" in (
        disabled.stderr
    )
    bucket = run("trigger", "cats", env=env)
    assert bucket.returncode == 1
    assert "rule 'cats' reads s3://datasets/cats/ but sources.s3.endpoint is not set" in bucket.stderr
    assert not (tmp_path / "journal.db").exists()  # nothing journaled for either
    done = run("trigger", "dogs", env=env)
    assert done.returncode == 0, done.stderr
    assert "manual trigger for dogs journaled" in done.stdout
    address = f"http://127.0.0.1:{env['RETRAIN_HTTP__PORT']}"
    assert f"warning: no daemon answers at {address}: the request waits in {tmp_path / 'journal.db'}" in done.stderr
    misspelt = run("trigger", "dgos", env=env)
    assert misspelt.returncode == 1 and "no valid rule 'dgos'; did you mean 'dogs'?" in misspelt.stderr
    explained = run("explain", "dgos", env=env)
    assert explained.returncode == 1 and "no valid rule 'dgos'; did you mean 'dogs'?" in explained.stderr


def test_a_trigger_with_a_daemon_listening_gives_no_warning(tmp_path: Path) -> None:
    env = _rules_env(tmp_path)
    daemon = Daemon(tmp_path)
    daemon.env.update(env)
    daemon.start()
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{env['RETRAIN_HTTP__PORT']}/healthz"), 60, "the daemon")
        done = run("trigger", "dogs", env=env)
        assert done.returncode == 0, done.stderr
        assert "no daemon answers" not in done.stderr
    finally:
        assert daemon.terminate() == 0


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_global_options_work_after_the_command_and_name_their_origin(tmp_path: Path) -> None:
    """Before: ``retrain status --set ...`` was "No such option", and an unknown group given by --set said
    ``(from defaults)``."""
    env = _rules_env(tmp_path)
    assert run("status", "--set", "http.port=1", env=env).returncode == 0
    assert run("status", "--set=http.port=1", "--log-level", "debug", env=env).returncode == 0
    for args in (("--set", "htp.port=1", "status"), ("status", "--set", "htp.port=1")):
        result = run(*args, env=env)
        assert result.returncode == 2
        assert "field 'htp': unknown setting; did you mean 'http'? (from --set htp.port)" in result.stderr
    # A subcommand's own options are left alone.
    assert "manual trigger for dogs journaled" in run("trigger", "--reason", "x", "dogs", env=env).stdout


def test_rules_check_on_a_folder_without_rule_files_fails(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a rule")
    result = run("rules", "check", str(tmp_path / "empty"))
    assert result.returncode == 1
    assert f"no rule files (*.yaml, *.yml) in {tmp_path / 'empty'}" in result.stderr


def test_rollback_of_an_unknown_model_without_a_store_creates_none_and_is_quiet(tmp_path: Path) -> None:
    """Before: it created ``mlflow.db`` (about 3 s, MLflow's own log lines) to say the model had no version."""
    env = {
        "RETRAIN_MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
    }
    result = run("rollback", "nosuch-model", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "retrain rollback: unknown model 'nosuch-model': MLflow has no registered model of that name "
        f"(no MLflow store at {tmp_path / 'mlflow.db'} yet)"
    )
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "journal.db").exists()


def test_up_without_a_rules_folder_warns_that_no_rule_is_in_force(tmp_path: Path) -> None:
    """Before: it started with no rule and said nothing."""
    daemon = Daemon(tmp_path)  # its rules folder does not exist
    daemon.start()
    try:
        wait_until(lambda: bool(daemon.logged("rules_folder_missing")), 60, "the warning", explain=daemon.log_tail)
        [warning] = daemon.logged("rules_folder_missing")
        assert warning["level"] == "warning" and warning["folder"] == str(tmp_path / "rules")
        (tmp_path / "rules").mkdir()  # then an empty folder: said once, too
        wait_until(lambda: bool(daemon.logged("rules_folder_empty")), 60, "the second warning", explain=daemon.log_tail)
    finally:
        assert daemon.terminate() == 0
    assert len(daemon.logged("rules_folder_missing")) == 1


def test_pause_and_resume_are_journaled_shown_and_refuse_triggers_meanwhile(tmp_path: Path) -> None:
    env = _rules_env(tmp_path)
    paused = run("pause", "dogs", "--reason", "camera swap", env=env)
    assert paused.returncode == 0, paused.stderr
    assert "dogs paused: it decides nothing until `retrain resume dogs`" in paused.stdout
    assert "dogs was paused" in run("pause", "dogs", env=env).stdout  # the first pause stays
    status = run("status", env=env).stdout
    assert "dogs (PAUSED): 0 new labels, 0 new images; waiting [paused]: paused by " in status
    assert "camera swap (retrain resume dogs)" in status
    assert "pets (disabled):" in status
    data = json.loads(run("status", "--json", env=env).stdout)
    [dogs] = [r for r in data["rules"] if r["name"] == "dogs"]
    assert dogs["paused"]["reason"] == "camera swap"
    listed = run("rules", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert lines["dogs"].split()[1] == "paused" and lines["pets"].split()[1] == "disabled"
    assert lines["cats"].startswith("cats  enabled  s3://datasets/cats/ -> cats-detector  [new_labels]  (")
    refused = run("trigger", "dogs", env=env)
    assert refused.returncode == 1
    assert "rule 'dogs' is paused (by " in refused.stderr and "`retrain resume dogs` first" in refused.stderr
    assert run("resume", "dogs", env=env).stdout.strip() == "dogs resumed"
    assert run("resume", "dogs", env=env).stdout.strip() == "dogs was not paused"
    assert run("trigger", "dogs", env=env).returncode == 0
    unknown = run("pause", "dgos", env=env)
    assert unknown.returncode == 1 and "did you mean 'dogs'?" in unknown.stderr


def test_runs_lists_the_journal_and_shows_one_run(tmp_path: Path) -> None:
    env = _rules_env(tmp_path)
    assert run("runs", env=env).stdout.strip() == "no runs"  # before the first run: nothing created
    assert not (tmp_path / "journal.db").exists()
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    try:
        at = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
        for key, rule in (("dogs-r1", "dogs"), ("cats-r1", "cats")):
            launch = decisions.Launch(
                rule=rule, run_key=ids.RunKey(key), trigger=decisions.TriggerKind.MANUAL, reason="by hand",
                snapshot=None, params={},
            )  # fmt: skip
            assert journal.record_intent(launch, at=at)
        journal.update_run(ids.RunKey("cats-r1"), runs.RunState.SUBMITTED, at=at)
    finally:
        journal.close()
    listed = run("runs", env=env).stdout.splitlines()
    assert sorted(line.split()[1] for line in listed) == ["cats-r1", "dogs-r1"]
    submitted = run("runs", "--state", "submitted", env=env).stdout.splitlines()
    assert len(submitted) == 1 and "cats-r1  cats  submitted  manual" in submitted[0]
    one = run("runs", "dogs-r1", env=env)
    assert one.returncode == 0 and "run_key: dogs-r1" in one.stdout and "state: intended" in one.stdout
    assert json.loads(run("runs", "dogs-r1", "--json", env=env).stdout)["rule"] == "dogs"
    missing = run("runs", "nope", env=env)
    assert missing.returncode == 1 and "no run 'nope' in" in missing.stderr


def test_up_dry_run_decides_but_starts_and_consumes_nothing(tmp_path: Path, coco_mini: Path) -> None:
    data = tmp_path / "data"
    for kind in ("images", "labels"):
        (data / kind / "train").mkdir(parents=True)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shelves.yaml").write_text(
        f"name: shelves\ndataset: {{source: 'file://{data}'}}\n"
        "model: {registered_name: shelves-detector, base: yolov8n.yaml}\n"
        "triggers: [{new_labels: {min_new_labels: 3, quiet_period: 1s}}]\nlimits: {cooldown: 0s}\n"
    )
    daemon = Daemon(tmp_path)
    daemon.start("--dry-run")
    try:
        daemon.wait_started()
        for image in sorted((coco_mini / "images" / "train").iterdir())[:3]:
            shutil.copy(image, data / "images" / "train" / image.name)
            shutil.copy(coco_mini / "labels" / "train" / f"{image.stem}.txt", data / "labels" / "train")
        wait_until(lambda: bool(daemon.logged("would_launch")), 60, "a would-be launch", explain=daemon.explain)
        stays(lambda: len(daemon.logged("would_launch")) == 1, 3, "said once, not on every pass")
    finally:
        assert daemon.terminate() == 0
    [started] = daemon.logged("daemon_started")
    assert started["dry_run"] is True
    journal = daemon.journal()
    try:
        assert journal.runs(limit=10) == []  # nothing intended, submitted or started
        [latest] = journal.decisions("shelves", limit=1)
        assert latest.code == "dry_run" and latest.reason.startswith("dry run: would launch shelves-d")
        rule = loading.load_paths([tmp_path / "rules"]).rules["shelves"].rule
        assert journal.rule_state(rule, now=datetime.now(UTC)).pending.labels == 3  # still pending: not consumed
    finally:
        journal.close()


def test_cancel_stops_an_active_local_run_and_refuses_what_cannot_be_cancelled(tmp_path: Path) -> None:
    from daemon.launchers import local

    root = tmp_path / "runs"
    launcher = local.LocalLauncher(root=root, command=(sys.executable, "-c", "import time; time.sleep(60)"))
    key = ids.RunKey("dogs-d1")
    started = launcher.submit(key, {})
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    try:
        launch = decisions.Launch(
            rule="dogs", run_key=key, trigger=decisions.TriggerKind.MANUAL, reason="by hand", snapshot=None
        )
        journal.record_intent(launch, at=datetime.now(UTC))
        journal.update_run(
            key, runs.RunState.RUNNING, at=datetime.now(UTC), backend="local", backend_run_id=started.backend_run_id
        )
    finally:
        journal.close()
    env = {"RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"), "RETRAIN_KFP__LOCAL_PIPELINE_ROOT": str(root)}
    done = run("cancel", "dogs-d1", "--reason", "wrong data", env=env)
    assert done.returncode == 0, done.stderr
    assert "dogs-d1: cancel asked, now failed" in done.stdout
    found = launcher.find(key)
    assert found is not None and found.state is runs.RunState.FAILED
    assert found.error is not None and found.error.startswith("cancelled: by ") and found.error.endswith(": wrong data")
    unknown = run("cancel", "nope", env=env)
    assert unknown.returncode == 1 and "no run 'nope' in the journal" in unknown.stderr
