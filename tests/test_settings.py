"""Settings: defaults, precedence (file < environment < flags), clear errors, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import errors, settings


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
    config.write_text("kfp:\n  launcher: kfp\n  host: http://file\nhttp:\n  port: 9000\n")
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
