"""The error hierarchy's messages, and YAML loading that keeps line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import errors, yamlfile


def test_config_error_renders_file_line_rule_field() -> None:
    error = errors.ConfigError("must be positive", file="rules/a.yaml", line=7, rule="pets", field="cooldown")
    assert str(error) == "rules/a.yaml:7: rule 'pets': field 'cooldown': must be positive"


def test_config_error_leaves_out_unknown_parts() -> None:
    assert str(errors.ConfigError("unreadable YAML", file="x.yaml")) == "x.yaml: unreadable YAML"


def test_temporary_and_permanent_are_distinct_families() -> None:
    unavailable = errors.ServiceUnavailable(service="MLflow", endpoint="http://m:5000", detail="503", retry_in_s=30)
    assert isinstance(unavailable, errors.TemporaryError)
    assert not isinstance(unavailable, errors.PermanentError)
    assert isinstance(errors.ConfigError("x"), errors.PermanentError)
    assert str(unavailable) == "MLflow at http://m:5000 is unavailable: 503; will retry in 30 s"


def test_remote_bodies_are_truncated() -> None:
    error = errors.ServiceUnavailable(service="KFP", endpoint="http://k", detail="x" * 1000)
    assert len(error.detail) < 300
    assert error.detail.endswith("[744 more characters]")


def test_yaml_lines_are_tracked() -> None:
    [document] = yamlfile.parse_documents("name: a\ntriggers:\n  - cron: '0 3 * * 0'\n    tz: UTC\n", file="f")
    assert document.value == {"name": "a", "triggers": [{"cron": "0 3 * * 0", "tz": "UTC"}]}
    assert document.line_of(("triggers", 0, "tz")) == 4
    assert document.line_of(("triggers", 0, "missing")) == 3


def test_yaml_multiple_documents_and_types() -> None:
    docs = yamlfile.parse_documents("a: 1\n---\nb: 2.5\nc: true\nd: null\n", file="f")
    assert [d.value for d in docs] == [{"a": 1}, {"b": 2.5, "c": True, "d": None}]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(errors.ConfigError) as caught:
        yamlfile.load_file(path)
    assert caught.value.file == str(path)
    assert caught.value.line is not None and caught.value.line >= 2
    assert "unreadable YAML" in str(caught.value)


def test_yaml_rejects_duplicate_keys() -> None:
    with pytest.raises(errors.ConfigError, match="f:3: duplicate key 'a'"):
        yamlfile.parse_documents("a: 1\nb: 2\na: 3\n", file="f")


def test_yaml_unreadable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(errors.ConfigError, match="cannot read file"):
        yamlfile.load_file(path)
