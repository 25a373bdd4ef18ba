"""Notifications: from the journal's outbox through Apprise to a real local HTTP receiver (Apprise's ``json://``
target, as a generic webhook), with retries, a restart between attempts, no duplicates and no URL in errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from daemon import settings
from daemon.journal import sqlite
from daemon.model import decisions, ids, notices, runs
from daemon.rules import reloading
from daemon.runtime import notifying
from daemon.sources import base as source_base
from tests.support.processes import Daemon
from tests.support.waiting import wait_until


class Receiver:
    """A webhook endpoint: records every JSON body it takes; answers 503 to the first ``failures`` requests."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.failures = 0
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests += 1
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(503)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def _finished_run(journal: sqlite.SqliteJournal, key: str, *, decision: str, rule: str = "shapes") -> None:
    at = datetime.now(UTC)
    launch = decisions.Launch(
        rule=rule, run_key=ids.RunKey(key), trigger=decisions.TriggerKind.MANUAL, reason="by hand", snapshot=None
    )
    assert journal.record_intent(launch, at=at)
    journal.update_run(ids.RunKey(key), runs.RunState.SUBMITTED, at=at)
    assert journal.notices() == [] or all(n.notice.id != f"run:{key}:{decision}" for n in journal.notices())
    journal.update_run(
        ids.RunKey(key),
        runs.RunState.SUCCEEDED,
        at=at,
        metrics={"map50_95": 0.41},
        promotion={"decision": decision, "reason": "0.4100 beats 0.3500", "version": "3", "model": "shapes-detector"},
    )


def _notifier(
    journal: sqlite.SqliteJournal,
    tmp_path: Path,
    environ: dict[str, str],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    **config: Any,
) -> notifying.Notifier:
    return notifying.Notifier(
        config=settings.NotifySettings(**({"retry_initial_s": 0.05} | config)),
        journal=journal,
        board=source_base.StatusBoard(),
        rulebook=reloading.RuleBook(folder=tmp_path / "rules"),
        clock=clock,
        environ=environ,
    )


def test_a_run_outcome_is_told_once_through_retries_and_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    _finished_run(journal, "shapes-r1", decision="promoted")
    # Written with the run's end; a repeated end (a retried record) adds none.
    journal.update_run(ids.RunKey("shapes-r1"), runs.RunState.SUCCEEDED, at=datetime.now(UTC))
    [pending] = journal.notices()
    assert pending.notice.kind is notices.NoticeKind.PROMOTED and pending.notice.id == "run:shapes-r1:promoted"
    receiver.failures = 2
    environ = {"HOOK": receiver.url}
    _notifier(journal, tmp_path, environ, targets=["HOOK"]).work()  # attempt 1: 503
    [pending] = journal.notices()
    assert (pending.attempts, pending.done, pending.delivered_to) == (1, False, ())
    assert pending.last_error == "HOOK: the target refused the message or could not be reached"
    journal.close()

    journal = sqlite.SqliteJournal(tmp_path / "journal.db")  # a restart: the outbox is where it was
    restarted = _notifier(journal, tmp_path, environ, targets=["HOOK"])
    wait_until(lambda: (restarted.work(), journal.notices()[0].done)[1], 10, "the delivery", every_s=0.05)
    for _ in range(3):
        restarted.work()
    assert receiver.requests == 3 and len(receiver.bodies) == 1  # two refusals, one delivery, never again
    [body] = receiver.bodies
    assert body["title"] == "shapes-detector v3 is the new champion (mAP50-95 0.4100)"
    assert body["message"] == "Run shapes-r1 of rule shapes: 0.4100 beats 0.3500"
    assert body["type"] == "success"
    [done] = journal.notices()
    assert (done.attempts, done.delivered_to, done.last_error) == (3, ("HOOK",), None)
    journal.close()


def test_a_failing_target_is_retried_alone_and_given_up_without_its_url(tmp_path: Path, receiver: Receiver) -> None:
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    _finished_run(journal, "shapes-r2", decision="rejected")
    environ = {"GOOD": receiver.url, "BAD": "json://user:secretpw@127.0.0.1:9/hook"}  # nothing listens on 9
    notifier = _notifier(journal, tmp_path, environ, targets=["GOOD", "BAD", "UNSET"], max_attempts=3)
    wait_until(lambda: (notifier.work(), journal.notices()[0].done)[1], 20, "the notice given up", every_s=0.05)
    [given_up] = journal.notices()
    assert given_up.attempts == 3 and given_up.delivered_to == ("GOOD",)
    assert given_up.last_error is not None
    assert "BAD: the target refused the message or could not be reached" in given_up.last_error
    assert "UNSET: the environment variable is not set" in given_up.last_error
    assert "secretpw" not in given_up.last_error and "127.0.0.1" not in given_up.last_error
    assert len(receiver.bodies) == 1 and receiver.bodies[0]["title"].startswith("shapes-detector v3 was rejected")
    journal.close()


def test_the_rules_own_targets_and_the_events_filter(tmp_path: Path, receiver: Receiver) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "shapes.yaml").write_text(
        "name: shapes\ndataset: {source: 'file:///data/shapes'}\n"
        "model: {registered_name: shapes-detector, base: yolov8n.yaml}\n"
        "triggers: [{new_labels: {}}]\nnotify: [SHAPES_HOOK]\n"
    )
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    _finished_run(journal, "shapes-r3", decision="promoted")
    _finished_run(journal, "shapes-r4", decision="rejected")
    notifier = _notifier(journal, tmp_path, {"SHAPES_HOOK": receiver.url}, events=["promoted"])
    notifier.rulebook.refresh()
    notifier.work()
    assert [b["title"] for b in receiver.bodies] == ["shapes-detector v3 is the new champion (mAP50-95 0.4100)"]
    assert all(n.done for n in journal.notices())  # the rejection is not told: filtered, not pending
    journal.close()


def test_a_source_down_and_a_refused_rule_file_are_told_once_each(tmp_path: Path, receiver: Receiver) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text("name: bad\ndataset: {source: 'ftp://x'}\n")
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    now = [datetime.now(UTC)]  # the notifier's clock, moved by the test: no window to race against
    notifier = _notifier(
        journal, tmp_path, {"HOOK": receiver.url}, clock=lambda: now[0], targets=["HOOK"], source_down_after_s=60
    )
    notifier.rulebook.refresh()
    notifier.board.update("s3_listen:pets", connected=False, last_error="S3 at minio:9000 unreachable")
    notifier.board.update("folder:shelves", connected=True)
    notifier.board.update("s3_reconcile:pets", connected=False)  # not connected yet, no error: not down
    notifier.work()  # down, but not for long enough yet
    assert [b["title"] for b in receiver.bodies] == ["rule file " + str(tmp_path / "rules" / "bad.yaml") + " refused"]
    now[0] += timedelta(seconds=59)
    notifier.work()  # one second short of the threshold: still not told
    assert len(receiver.bodies) == 1
    now[0] += timedelta(seconds=1)
    for _ in range(3):
        notifier.work()
    titles = [b["title"] for b in receiver.bodies]
    assert titles[1:] == ["source s3_listen:pets disconnected for 1 min"]
    assert "S3 at minio:9000 unreachable" in receiver.bodies[1]["message"]
    notifier.board.update("s3_listen:pets", connected=True)  # back: a later disconnection is told again
    notifier.work()
    notifier.board.update("s3_listen:pets", connected=False, last_error="stream ended")
    notifier.board.update("drift", connected=False, last_error="MLflow unreachable")  # a check, not a source
    notifier.work()  # seen down from now on
    now[0] += timedelta(seconds=60)
    notifier.work()
    notifier.work()
    assert len(receiver.bodies) == 3
    journal.close()


def test_the_running_daemon_tells_a_refused_rule_file(tmp_path: Path, receiver: Receiver) -> None:
    """The notifier is a worker of ``retrain up``: a rule file refused at start reaches the receiver."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "bad.yaml").write_text("name: bad\ntriggers: []\n")
    daemon = Daemon(tmp_path)
    daemon.env.update({"RETRAIN_NOTIFY__TARGETS": '["OPS_HOOK"]', "OPS_HOOK": receiver.url})
    daemon.start()
    try:
        wait_until(lambda: bool(receiver.bodies), 60, "the notice at the receiver", explain=daemon.log_tail)
    finally:
        assert daemon.terminate() == 0
    assert receiver.bodies[0]["title"] == f"rule file {tmp_path / 'rules' / 'bad.yaml'} refused"
    assert receiver.url not in (tmp_path / "daemon-1.log").read_text()  # the URL is never logged
