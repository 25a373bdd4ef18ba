"""`retrain up` as a real process for tests: its settings in the environment, its state read back from the
journal it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from daemon import journal as journals
from daemon.journal import base
from tests.support.paths import RETRAIN
from tests.support.waiting import wait_until


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """``retrain ARGS...`` with only the given ``RETRAIN_*`` settings in its environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    base.update(env or {})
    return subprocess.run([RETRAIN, *args], capture_output=True, text=True, env=base, timeout=timeout_s, check=False)


class Daemon:
    """`retrain up` as a real process, with its settings in the environment.

    ``journal_url``: a PostgreSQL journal instead of ``tmp/journal.db``; ``name``: a replica's name (its logs
    are ``daemon-NAME-N.log``), for several replicas sharing ``tmp`` (rules, data, runs, MLflow) and one
    database.
    """

    def __init__(self, tmp: Path, *, journal_url: str | None = None, name: str = "") -> None:
        self.tmp = tmp
        self.journal_url = journal_url
        self.name = name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
        self.env.update(
            RETRAIN_JOURNAL__PATH=str(tmp / "journal.db"),
            RETRAIN_RULES__PATH=str(tmp / "rules"),
            RETRAIN_MLFLOW__TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
            RETRAIN_KFP__LOCAL_PIPELINE_ROOT=str(tmp / "runs"),
            RETRAIN_LOGGING__FORMAT="json",
            RETRAIN_HTTP__PORT="0",
        )
        if journal_url is not None:
            self.env.update(RETRAIN_JOURNAL__URL=journal_url, RETRAIN_LEADER__HOLDER=name or "replica")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, *options: str) -> None:
        """``retrain up OPTIONS...`` (a new life: its own log file)."""
        self.starts += 1
        with self.log_path().open("wb") as log:
            self.process = subprocess.Popen(
                [RETRAIN, "up", *options], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def log_path(self, life: int | None = None) -> Path:
        """The log of one life (default: the current one)."""
        prefix = f"daemon-{self.name}" if self.name else "daemon"
        return self.tmp / f"{prefix}-{self.starts if life is None else life}.log"

    def journal(self) -> base.Journal:
        return journals.open_target(self.journal_url or self.tmp / "journal.db")

    def has_journal(self) -> bool:
        return self.journal_url is not None or (self.tmp / "journal.db").exists()

    def log_tail(self) -> str:
        return self.log_path().read_text(errors="replace")[-3000:]

    def explain(self) -> str:
        """What a stuck wait needs to be understood: the process, every run the journal holds, the log's end."""
        alive = self.process is not None and self.process.poll() is None
        lines = [
            f"daemon life {self.starts}: "
            + ("running" if alive else f"exited ({self.process and self.process.returncode})")
        ]
        if self.has_journal():
            journal = self.journal()
            try:
                lines.extend(
                    f"  run {run.run_key}: {run.state.value} backend={run.backend_run_id} error={run.error}"
                    for run in journal.runs(limit=1000)
                )
            finally:
                journal.close()
        return "\n".join([*lines, "log tail:", self.log_tail()])

    def logged(self, event: str) -> list[dict[str, object]]:
        found = []
        for log in sorted(self.tmp.glob(f"daemon-{self.name + '-' if self.name else ''}*.log")):
            for line in log.read_text(errors="replace").splitlines():
                if f'"{event}"' in line:
                    try:
                        found.append(json.loads(line))
                    except ValueError:
                        continue
        return found

    def wait_started(self) -> None:
        """Until this life logged ``daemon_started`` (a SIGTERM before the handlers exist is not a stop)."""
        log = self.log_path()
        wait_until(lambda: '"daemon_started"' in log.read_text(errors="replace"), 60, "the daemon to start")

    def port(self) -> int:
        wait_until(lambda: bool(self._listening()), 60, "the HTTP server")
        return int(self._listening()[-1]["port"])  # type: ignore[call-overload]

    def _listening(self) -> list[dict[str, object]]:
        log = self.log_path()
        return [json.loads(line) for line in log.read_text(errors="replace").splitlines() if '"http_listening"' in line]

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port()}"


def count(d: Daemon, what: Callable[[base.Journal], int]) -> int:
    if not d.has_journal():
        return 0
    journal = d.journal()
    try:
        return what(journal)
    finally:
        journal.close()
