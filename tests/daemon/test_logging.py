"""Logging: JSON lines off a terminal, console on one, context bound per unit of work, secrets masked."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from pathlib import Path

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


def test_lines_from_the_daemon_and_from_libraries_never_interleave(tmp_path: Path) -> None:
    """The daemon's own lines (structlog) and libraries' lines (logging, e.g. watchdog's overflow warning on
    its observer thread) share one stream: each line must land whole, or a log reader (and the fault test
    that looks for ``folder_rescan_after_overflow`` right after watchdog's warning) gets broken JSON."""
    path = tmp_path / "daemon.log"
    lines_each = 3000
    pad = "x" * 9000  # longer than the stream's buffer: every line reaches the OS, where threads switch
    interval = sys.getswitchinterval()
    with path.open("w", encoding="utf-8") as out:
        logs.configure(settings.LoggingSettings(format="json"), stream=out)
        try:
            sys.setswitchinterval(1e-6)  # switch threads as often as a loaded 2-core machine might
            interleave(lines_each, pad)
        finally:
            sys.setswitchinterval(interval)
            # Later tests log through the global configuration: never leave it on a file about to be closed.
            logs.configure(settings.LoggingSettings(), stream=io.StringIO())
    broken = []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line)["event"])
        except ValueError:
            broken.append(line)
    assert broken == [], f"{len(broken)} broken lines, e.g. {broken[:1]}"
    assert events.count("folder_rescan_after_overflow") == lines_each
    assert sum(e.startswith("Inotify queue overflowed") for e in events) == lines_each


def interleave(lines_each: int, pad: str) -> None:
    """Two threads logging at once: the daemon's own lines and a library's, ``lines_each`` each."""
    start = threading.Barrier(2)

    def own() -> None:
        start.wait()
        for i in range(lines_each):
            logs.get_logger("daemon.sources.watching").warning("folder_rescan_after_overflow", n=i, pad=pad)

    def library() -> None:
        start.wait()
        for i in range(lines_each):
            logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed %d %s", i, pad)

    threads = [threading.Thread(target=own), threading.Thread(target=library)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
