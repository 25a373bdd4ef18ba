"""Settings: defaults, precedence (file < environment < flags), clear errors, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import errors, settings
from tests.support.processes import run_cli as run


def test_defaults_are_the_embedded_laptop_setup() -> None:
    built = settings.load(environ={})
    assert built.kfp.launcher == "local"
    assert built.mlflow.tracking_uri.startswith("sqlite:///")
    assert built.journal.path == Path(".retrain/journal.db")
    assert built.sources.s3.endpoint is None
    assert built.rules.path == Path("rules")


def test_every_field_documents_itself() -> None:
    """Each leaf setting carries a docstring (its unit for durations), so `config show` can be explained."""
    missing = []
    for group_name, group_field in settings.Settings.model_fields.items():
        group = group_field.annotation
        assert isinstance(group, type)
        for name, field in group.model_fields.items():  # type: ignore[attr-defined]
            if isinstance(field.annotation, type) and issubclass(field.annotation, settings.S3Settings):
                continue
            if not field.description:
                missing.append(f"{group_name}.{name}")
            elif name.endswith("_s") and "second" not in field.description.lower():
                missing.append(f"{group_name}.{name} (unit)")
    assert missing == []


def test_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text(
        "kfp:\n  launcher: kfp\n  host: http://file\n  inputs_uri: s3://runs/inputs/\nhttp:\n  port: 9000\n"
        "sources:\n  s3:\n    endpoint: minio:9000\n"
    )
    built = settings.load(
        config_file=config,
        environ={"RETRAIN_KFP__HOST": "http://env", "RETRAIN_HTTP__PORT": "9100"},
        overrides=["http.port=9200"],
    )
    assert (built.kfp.launcher, built.kfp.host, built.http.port) == ("kfp", "http://env", 9200)


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text("shutdown:\n  timeout_s: 7\n")
    assert settings.load(environ={"RETRAIN_CONFIG": str(config)}).shutdown.timeout_s == 7.0


def test_secrets_never_appear_in_repr_str_or_dump() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    built = settings.load(
        environ={
            "RETRAIN_KFP__TOKEN": secret,
            "RETRAIN_SOURCES__S3__SECRET_KEY": secret,
            "RETRAIN_SOURCES__WEBHOOK_TOKEN": secret,
        }
    )
    assert built.kfp.token is not None
    assert built.kfp.token.get_secret_value() == secret
    for text in (repr(built), str(built), str(settings.describe(built)), built.model_dump_json()):
        assert secret not in text


def test_bad_file_value_names_file_line_and_field(tmp_path: Path) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text("journal:\n  path: x.db\nkfp:\n  launcher: kubeflow\n")
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(config_file=config, environ={})
    [error] = caught.value.errors
    assert error.render() == f"{config}:4: field 'kfp.launcher': Input should be 'local' or 'kfp'"


def test_unknown_setting_suggests_the_closest_name(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(environ={"RETRAIN_KFP__LAUNCHR": "kfp"})
    [error] = caught.value.errors
    assert error.field == "kfp.launchr"
    assert "did you mean 'launcher'?" in error.message
    assert "RETRAIN_KFP__LAUNCHR" in error.message


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(environ={"RETRAIN_HTTP__PORT": "-1"}, overrides=["shutdown.timeout_s=0"])
    assert sorted(e.field or "" for e in caught.value.errors) == ["http.port", "shutdown.timeout_s"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kfp: [unclosed\n", "unreadable YAML"),
        ("- a\n- b\n", "must be a mapping"),
        ("kfp:\n  host: a\n  host: b\n", "duplicate key 'host'"),
    ],
)
def test_unusable_settings_file(tmp_path: Path, text: str, expected: str) -> None:
    config = tmp_path / "retrain.yaml"
    config.write_text(text)
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(config_file=config, environ={})
    assert expected in caught.value.errors[0].render()
    assert str(config) in caught.value.errors[0].render()


def test_missing_settings_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigErrors, match="cannot read file"):
        settings.load(config_file=tmp_path / "nope.yaml", environ={})


def test_malformed_override() -> None:
    with pytest.raises(errors.ConfigErrors, match="KEY=VALUE"):
        settings.load(environ={}, overrides=["kfp.launcher"])


def test_settings_are_frozen() -> None:
    built = settings.load(environ={})
    with pytest.raises(ValueError, match="frozen"):
        built.http.port = 1  # type: ignore[misc]


#: What kubelet adds to every pod of a namespace holding the Service `retrain-daemon` (port 80, named http),
#: unless the pod spec sets enableServiceLinks: false.
SERVICE_LINKS = {
    "RETRAIN_DAEMON_SERVICE_HOST": "10.0.0.1",
    "RETRAIN_DAEMON_SERVICE_PORT": "80",
    "RETRAIN_DAEMON_SERVICE_PORT_HTTP": "80",
    "RETRAIN_DAEMON_PORT": "tcp://10.0.0.1:80",
    "RETRAIN_DAEMON_PORT_80_TCP": "tcp://10.0.0.1:80",
    "RETRAIN_DAEMON_PORT_80_TCP_PROTO": "tcp",
    "RETRAIN_DAEMON_PORT_80_TCP_PORT": "80",
    "RETRAIN_DAEMON_PORT_80_TCP_ADDR": "10.0.0.1",
}


def test_kubernetes_service_links_are_not_settings() -> None:
    built = settings.load(environ={**SERVICE_LINKS, "RETRAIN_HTTP__PORT": "8081"})
    assert built.http.port == 8081


def test_a_misspelt_setting_beside_service_links_is_still_an_error() -> None:
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(environ={**SERVICE_LINKS, "RETRAIN_KFP__TOKNE": "x"})
    [error] = caught.value.errors
    assert error.field == "kfp.tokne"
    assert "did you mean 'token'?" in error.message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("RETRAIN_JOURNL__PATH", "unknown setting group 'journl'; did you mean 'journal'?"),
        ("RETRAIN_JOURNAL_PATH", "did you mean RETRAIN_JOURNAL__PATH?"),
        ("RETRAIN_SOMETHING", "is not a setting: settings are RETRAIN_<GROUP>__<FIELD>"),
    ],
)
def test_variables_that_look_like_settings_but_are_not_are_errors(name: str, expected: str) -> None:
    with pytest.raises(errors.ConfigErrors) as caught:
        settings.load(environ={name: "x"})
    [error] = caught.value.errors
    assert expected in error.render()
    assert name in error.render()


def test_the_cli_starts_with_service_links_and_refuses_a_typo() -> None:
    """The reproduction of the crash loop: the pod's environment holds service links."""
    shown = run("config", "show", env=SERVICE_LINKS)
    assert shown.returncode == 0, shown.stderr
    typo = run("config", "show", env={**SERVICE_LINKS, "RETRAIN_KFP__TOKNE": "x"})
    assert typo.returncode == 2
    assert "did you mean 'token'?" in typo.stderr


def test_credentials_inside_uris_are_redacted_in_config_show() -> None:
    password = "S3cr3tPW-" + "q" * 8
    shown = run("config", "show", env={"RETRAIN_MLFLOW__TRACKING_URI": f"http://admin:{password}@mlflow:5000"})
    assert shown.returncode == 0, shown.stderr
    assert password not in shown.stdout + shown.stderr
    assert "http://admin:***@mlflow:5000" in shown.stdout


def test_nested_values_come_from_json_in_the_environment() -> None:
    built = settings.load(environ={"RETRAIN_PIPELINE__NODE_SELECTOR": '{"nvidia.com/gpu.product": "H100"}'})
    assert built.pipeline.node_selector == {"nvidia.com/gpu.product": "H100"}


def test_launcher_kfp_needs_a_place_for_run_inputs_a_pod_can_read() -> None:
    with pytest.raises(errors.ConfigErrors, match="kfp.inputs_uri"):
        settings.load(environ={"RETRAIN_KFP__LAUNCHER": "kfp", "RETRAIN_KFP__HOST": "http://kfp"})


@pytest.mark.parametrize(("cpu_request", "workers"), [("2", 1), ("500m", 0), ("1500m", 0), ("3.5", 2), ("64", 8)])
def test_dataloader_workers_follow_the_task_s_cpu_request(cpu_request: str, workers: int) -> None:
    pipeline = settings.PipelineSettings(cpu_request=cpu_request)
    assert pipeline.dataloader_workers() == workers
    assert pipeline.trainer_options() == {"workers": workers, "plots": True, "deterministic": True}
    assert settings.PipelineSettings(cpu_request=cpu_request, workers=3).dataloader_workers() == 3


def test_leader_timings_that_would_let_the_lease_lapse_or_block_a_takeover_are_refused() -> None:
    with pytest.raises(errors.ConfigErrors, match="at most a third of ttl_s"):
        settings.load(environ={"RETRAIN_LEADER__TTL_S": "10", "RETRAIN_LEADER__RENEW_INTERVAL_S": "5"})
    url = {"RETRAIN_JOURNAL__URL": "postgresql://retrain@db/retrain"}
    with pytest.raises(errors.ConfigErrors, match="must be below leader.ttl_s"):
        settings.load(environ={**url, "RETRAIN_LEADER__TTL_S": "9", "RETRAIN_LEADER__RENEW_INTERVAL_S": "3"})
    config = settings.load(environ=url)
    assert config.journal.url is not None and config.leader.ttl_s == 15.0
    assert settings.load(environ={"RETRAIN_LEADER__TTL_S": "9", "RETRAIN_LEADER__RENEW_INTERVAL_S": "3"})  # SQLite


def test_every_notice_kind_can_be_chosen_and_is_told_by_default() -> None:
    from typing import get_args

    from daemon.model import notices
    from daemon.settings_groups import NoticeEvent

    kinds = {kind.value for kind in notices.NoticeKind}
    assert set(get_args(NoticeEvent)) == kinds
    assert set(settings.NotifySettings().events) == kinds


@pytest.mark.parametrize(
    ("given", "endpoint", "secure"),
    [
        ("minio.minio.svc:9000", "minio.minio.svc:9000", True),
        ("  127.0.0.1:9000 ", "127.0.0.1:9000", True),  # a trailing space from a pasted Secret
        ("http://127.0.0.1:9", "127.0.0.1:9", False),
        ("https://minio.example:9000/", "minio.example:9000", True),
        ("HTTP://s3.local", "s3.local", False),
    ],
)
def test_an_s3_endpoint_url_is_normalised_to_host_and_port(given: str, endpoint: str, secure: bool) -> None:
    loaded = settings.load(environ={"RETRAIN_SOURCES__S3__ENDPOINT": given}, overrides=[])
    assert (loaded.sources.s3.endpoint, loaded.sources.s3.secure) == (endpoint, secure)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("127.0.0.1:99999", "port '99999' is not a number from 1 to 65535"),
        ("minio:", "port '' is not a number from 1 to 65535"),
        ("minio:9000/datasets", "host:port only, a path (/datasets) is not part of it"),
        ("ftp://minio:21", "reached over http or https"),
        ("minio 9000", "expected host:port"),
        ("http://ops:hunter2@minio:9000", "credentials do not belong in the endpoint"),
    ],
)
def test_an_s3_endpoint_that_can_never_work_is_a_settings_error_naming_the_field(given: str, says: str) -> None:
    with pytest.raises(errors.ConfigErrors) as refused:
        settings.load(environ={"RETRAIN_SOURCES__S3__ENDPOINT": given}, overrides=[])
    message = str(refused.value)
    assert "sources.s3.endpoint" in message and says in message and "RETRAIN_SOURCES__S3__ENDPOINT" in message
    assert "hunter2" not in message


def test_an_http_endpoint_with_secure_true_is_refused_not_guessed() -> None:
    with pytest.raises(errors.ConfigErrors, match="an http URL but sources.s3.secure is true"):
        settings.load(environ={}, overrides=["sources.s3.endpoint=http://minio:9000", "sources.s3.secure=true"])
    assert settings.load(environ={}, overrides=["sources.s3.endpoint=http://minio:9000", "sources.s3.secure=false"])


def test_retrain_up_with_an_impossible_endpoint_exits_2_naming_the_field(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [str(Path(sys.executable).parent / "retrain"), "up"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RETRAIN_SOURCES__S3__ENDPOINT": "127.0.0.1:99999"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "sources.s3.endpoint" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / ".retrain").exists()  # nothing started, nothing created
