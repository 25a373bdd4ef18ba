"""Logging: JSON lines off a terminal, console on one, context bound per unit of work, secrets masked."""

from __future__ import annotations

import io
import json
import logging

import structlog
from structlog.testing import capture_logs

from daemon import logs, settings


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    logs.configure(settings.LoggingSettings(), stream=out)
    logs.get_logger("t").info("rule_loaded", rule="pets", triggers=2)
    line = json.loads(out.getvalue().strip())
    assert line["event"] == "rule_loaded"
    assert line["rule"] == "pets"
    assert line["triggers"] == 2
    assert line["level"] == "info"
    assert "timestamp" in line


def test_console_when_a_terminal() -> None:
    out = _Terminal()
    logs.configure(settings.LoggingSettings(), stream=out)
    logs.get_logger("t").info("rule_loaded", rule="pets")
    text = out.getvalue()
    assert "rule_loaded" in text and "rule=pets" in text
    assert not text.lstrip().startswith("{")


def test_context_is_bound_per_unit_of_work() -> None:
    out = io.StringIO()
    logs.configure(settings.LoggingSettings(format="json"), stream=out)
    log = logs.get_logger("t")
    with logs.bound(rule="pets", run_key="rk-1"):
        log.info("run_submitted")
    log.info("idle")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert (first["rule"], first["run_key"]) == ("pets", "rk-1")
    assert "rule" not in second


def test_level_filters() -> None:
    out = io.StringIO()
    logs.configure(settings.LoggingSettings(format="json", level="warning"), stream=out)
    logs.get_logger("t").info("quiet")
    logs.get_logger("t").warning("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_credential_fields_are_masked() -> None:
    out = io.StringIO()
    logs.configure(settings.LoggingSettings(format="json"), stream=out)
    logs.get_logger("t").info("connecting", endpoint="s3:9000", secret_key="not-a-real-key", auth_token="t0k")
    text = out.getvalue()
    assert "not-a-real-key" not in text and "t0k" not in text
    assert json.loads(text)["endpoint"] == "s3:9000"


def test_library_logs_use_the_same_renderer() -> None:
    out = io.StringIO()
    logs.configure(settings.LoggingSettings(format="json"), stream=out)
    logging.getLogger("kfp.somewhere").warning("library said %s", "hello")
    line = json.loads(out.getvalue().strip())
    assert line["event"] == "library said hello"
    assert line["module"] == "kfp.somewhere"


def test_capture_logs_works_for_assertions() -> None:
    logs.configure(settings.LoggingSettings(format="json"), stream=io.StringIO())
    with capture_logs() as captured:
        logs.get_logger("t").info("rule_file_rejected", file="rules/x.yaml")
    assert captured == [{"event": "rule_file_rejected", "file": "rules/x.yaml", "log_level": "info", "module": "t"}]
    structlog.reset_defaults()
