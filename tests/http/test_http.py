"""The daemon's HTTP surface on a real `Reactor` (real journal, real inotify folder, real uvicorn server):
probes follow real state, metrics move when events flow, the JSON API equals `retrain status --json`,
tokens guard the mutating endpoints."""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import daemon
from daemon import reactor, settings
from daemon.journal import sqlite as journal_sqlite
from daemon.model import rules
from daemon.rules import loading
from tests.support import apps, services
from tests.support.processes import run_cli as run
from tests.support.waiting import wait_until

RULE = """name: shelves
dataset: {{source: "file://{data}"}}
model: {{registered_name: shelves-detector}}
triggers:
  - new_labels: {{min_new_labels: 1000, quiet_period: 0s}}
"""


@dataclass
class Live:
    daemon: reactor.Reactor
    url: str
    data: Path
    env: dict[str, str]

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


def start(tmp_path: Path, *extra: str) -> tuple[reactor.Reactor, threading.Thread, dict[str, str]]:
    data = tmp_path / "data"
    (data / "images" / "train").mkdir(parents=True)
    (data / "labels" / "train").mkdir(parents=True)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "shelves.yaml").write_text(RULE.format(data=data))
    env = {
        "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
        "RETRAIN_RULES__PATH": str(rules_dir),
        "RETRAIN_MLFLOW__TRACKING_URI": apps.NO_MLFLOW,
        "RETRAIN_MLFLOW__MAX_RETRIES": "0",
    }
    overrides = [
        "http.port=0",
        "http.liveness_timeout_s=1",
        f"http.api_token={apps.API_TOKEN}",
        "journal.busy_timeout_s=0.2",
        f"kfp.local_pipeline_root={tmp_path / 'runs'}",
        *extra,
    ]
    daemon = reactor.Reactor(settings.load(environ=env, overrides=overrides), tick_s=0.2)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    return daemon, thread, env


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Live]:
    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    daemon, thread, env = start(tmp_path)
    wait_until(lambda: daemon.started.is_set(), 30, "the daemon")
    url = f"http://127.0.0.1:{daemon.http_port}"
    wait_until(lambda: _answers(url), 10, "the HTTP server")
    yield Live(daemon=daemon, url=url, data=tmp_path / "data", env=env)
    daemon.stop()
    thread.join(30)
    assert not thread.is_alive()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def drop_labelled_images(coco_mini: Path, data: Path, count: int) -> None:
    """Copy real COCO photos and their labels into the watched folder (labels last, as a labelling tool)."""
    images = sorted((coco_mini / "images" / "train").iterdir())[:count]
    for image in images:
        shutil.copy(image, data / "images" / "train" / image.name)
    for image in images:
        shutil.copy(
            coco_mini / "labels" / "train" / f"{image.stem}.txt", data / "labels" / "train" / f"{image.stem}.txt"
        )


def waiting_for_more_labels(live: Live) -> bool:
    latest = live.daemon.journal.decisions("shelves", limit=1)
    return bool(latest) and latest[0].code == "below_threshold"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition text by (name, sorted labels)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_healthz_fails_while_the_loop_is_stuck_and_recovers(live: Live) -> None:
    assert live.get("/healthz").json()["status"] == "ok"
    # The loop's next journal call blocks behind this lock, as it would behind a hung disk.
    with live.daemon.journal.database.lock:
        wait_until(lambda: live.get("/healthz").status_code == 503, 30, "liveness to report the stuck loop")
        stuck = live.get("/healthz")
    assert stuck.status_code == 503
    assert stuck.json()["status"] == "stalled"
    wait_until(lambda: live.get("/healthz").status_code == 200, 10, "liveness to come back")


def test_readyz_fails_while_the_journal_cannot_be_written(live: Live) -> None:
    ready = live.get("/readyz")
    assert ready.status_code == 200, ready.text
    body = ready.json()
    assert (body["ready"], body["checks"]) == (True, {"journal": "ok"})
    # one replica on SQLite: no election, it leads itself
    assert body["leadership"]["role"] == "single"
    assert body["leadership"]["leader"] == body["leadership"]["holder"]
    other = sqlite3.connect(live.env["RETRAIN_JOURNAL__PATH"], isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        blocked = live.get("/readyz")
        assert blocked.status_code == 503
        assert blocked.json()["checks"]["journal"].startswith("cannot be written: ")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert live.get("/readyz").status_code == 200


def test_readyz_names_a_source_that_cannot_connect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"127.0.0.1:{services.free_port()}"  # nothing listens there
    daemon, thread, _ = start(tmp_path / "run", f"sources.s3.endpoint={endpoint}", "sources.s3.secure=false")
    (tmp_path / "run" / "rules" / "bins.yaml").write_text(
        "name: bins\ndataset: {source: 's3://datasets/bins/'}\nmodel: {registered_name: bins-detector}\n"
        "triggers: [{new_labels: {min_new_labels: 5}}]\n"
    )
    try:
        wait_until(lambda: daemon.http_port is not None, 30, "the HTTP server")
        url = f"http://127.0.0.1:{daemon.http_port}/readyz"
        wait_until(lambda: _status(url) == 503, 60, "the failed reconcile to show")
        checks = httpx.get(url).json()["checks"]
        assert checks["journal"] == "ok"
        assert endpoint in checks["source s3_reconcile:bins"]
    finally:
        daemon.stop()
        thread.join(30)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def test_metrics_move_when_events_flow(live: Live, coco_mini: Path) -> None:
    before = samples(live.get("/metrics").text)
    created = ("retrain_events_total", (("kind", "created"), ("source", "folder:shelves")))
    assert before.get(created, 0) == 0
    assert before["retrain_journal_events", ()] == 0
    drop_labelled_images(coco_mini, live.data, 3)
    wait_until(lambda: live.daemon.journal.event_count() == 6, 30, "6 events in the journal")
    wait_until(lambda: waiting_for_more_labels(live), 10, "the decision on the new labels")

    after = samples(live.get("/metrics").text)
    assert after[created] == 6
    assert after["retrain_events_new_total", (("source", "folder:shelves"),)] == 6
    assert after["retrain_journal_events", ()] == 6
    assert after["retrain_source_connected", (("source", "folder:shelves"),)] == 1
    assert 0 <= after["retrain_last_event_age_seconds", (("source", "folder:shelves"),)] < 60
    waiting = ("retrain_decisions_total", (("code", "below_threshold"), ("outcome", "skip"), ("rule", "shelves")))
    assert after[waiting] > 0
    assert after["retrain_runs", (("state", "running"),)] == 0
    assert after["retrain_rules_loaded", ()] == 1
    assert after["retrain_loop_last_pass_age_seconds", ()] < 5


def test_metrics_hold_the_process_the_runtime_and_the_build(live: Live) -> None:
    """Before: the daemon's own registry dropped prometheus_client's process and Python metrics; no build info."""
    found = samples(live.get("/metrics").text)
    assert found["process_resident_memory_bytes", ()] > 0
    assert found["process_open_fds", ()] > 0
    assert any(name == "python_info" for name, _ in found)
    build = [labels for name, labels in found if name == "retrain_build_info"]
    assert build and dict(build[0])["version"] == daemon.__version__


def test_errors_have_one_shape_and_unknown_rules_are_404_everywhere(live: Live) -> None:
    """Before: ``/api/v1/decisions?rule=nosuch`` was 200 (``runs/nosuch`` 404), a bad query answered a list,
    the webhook ``{"error": ...}``, and ``/docs`` was 404."""
    missing = live.get("/api/v1/decisions?rule=nosuch")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "no rule 'nosuch': not in force and never journaled"}
    bad = live.get("/api/v1/decisions?limit=0")
    assert bad.status_code == 422 and isinstance(bad.json()["detail"], str) and "limit" in bad.json()["detail"]
    hook = httpx.post(f"{live.url}/events/minio", content=b"{}", timeout=10)
    assert hook.status_code in (401, 404) and set(hook.json()) == {"detail"}
    docs = live.get("/docs")
    assert docs.status_code == 200 and "/api/v1/decisions" in docs.text
    assert "http://" not in docs.text.replace(live.url, "") and "https://" not in docs.text  # nothing from a CDN


def test_the_json_api_matches_retrain_status(live: Live, coco_mini: Path) -> None:
    drop_labelled_images(coco_mini, live.data, 2)
    wait_until(lambda: live.daemon.journal.event_count() == 4, 30, "4 events in the journal")
    wait_until(lambda: waiting_for_more_labels(live), 10, "the decision on the new labels")

    api = live.get("/api/v1/status").json()
    cli = run("status", "--json", env=live.env)
    assert cli.returncode == 0, cli.stderr
    leadership = api.pop("leadership")  # this replica's role: the CLI is no replica and has none
    assert (leadership["role"], leadership["epoch"]) == ("single", None)
    assert api == json.loads(cli.stdout)
    [rule] = api["rules"]
    assert rule["pending"] == {"labels": 2, "images": 2, "deleted": 0}
    assert rule["decision"]["reason"] == "2/1000 new labels"
    assert api["champions"] == [{"model": "shelves-detector", "champion": None}]

    rules = live.get("/api/v1/rules").json()
    assert [r["name"] for r in rules["rules"]] == ["shelves"]
    assert rules["rules"][0]["file"].endswith("shelves.yaml")
    assert rules["errors"] == []
    decisions = live.get("/api/v1/decisions?rule=shelves&limit=3").json()
    assert decisions["shelves"] == rule["recent_decisions"]
    assert live.get("/api/v1/runs").json() == {"runs": []}
    assert live.get("/api/v1/runs/no-such-run").status_code == 404
    assert live.get("/api/v1/champions").json() == {"champions": api["champions"]}
    [folder] = [s for s in live.get("/api/v1/sources").json()["sources"] if s["name"] == "folder:shelves"]
    assert (folder["connected"], folder["new_events"]) == (True, 4)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[journal_sqlite.SqliteJournal]:
    j = journal_sqlite.SqliteJournal(tmp_path / "journal.db")
    yield j
    j.close()


def rules_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "shelves.yaml").write_text(RULE.format(data=tmp_path / "data"))
    return folder


def test_trigger_needs_the_api_token(tmp_path: Path, journal: journal_sqlite.SqliteJournal) -> None:
    app = apps.app_for(journal, rules_path=rules_folder(tmp_path), api_token=apps.API_TOKEN)
    path = "/api/v1/rules/shelves/trigger"
    assert apps.request(app, "POST", path).status_code == 401
    wrong = apps.request(app, "POST", path, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == "Bearer"
    assert journal.rule_state(rules_of(tmp_path), now=datetime.now(UTC)).manual == ()

    auth = {"Authorization": f"Bearer {apps.API_TOKEN}"}
    accepted = apps.request(app, "POST", path, headers=auth, json={"reason": "new camera", "actor": "ops"})
    assert accepted.status_code == 202, accepted.text
    [manual] = journal.rule_state(rules_of(tmp_path), now=datetime.now(UTC)).manual
    assert (manual.actor, manual.reason) == ("api:ops", "new camera")

    unknown = apps.request(app, "POST", "/api/v1/rules/nope/trigger", headers=auth)
    assert unknown.status_code == 404
    assert "no valid rule 'nope'" in unknown.json()["detail"]
    assert apps.request(app, "POST", path, headers=auth, json={"reason": ""}).status_code == 422
    assert apps.request(app, "POST", path, headers=auth, json={"surprise": 1}).status_code == 422


def test_pause_and_resume_through_the_api(tmp_path: Path, journal: journal_sqlite.SqliteJournal) -> None:
    app = apps.app_for(journal, rules_path=rules_folder(tmp_path), api_token=apps.API_TOKEN)
    auth = {"Authorization": f"Bearer {apps.API_TOKEN}"}
    assert apps.request(app, "POST", "/api/v1/rules/shelves/pause").status_code == 401
    paused = apps.request(
        app, "POST", "/api/v1/rules/shelves/pause", headers=auth, json={"reason": "swap", "actor": "ops"}
    )
    assert paused.status_code == 200, paused.text
    assert paused.json()["changed"] and paused.json()["paused"]["actor"] == "api:ops"
    [listed] = apps.request(app, "GET", "/api/v1/rules").json()["rules"]
    assert listed["paused"]["reason"] == "swap"
    [rule] = apps.request(app, "GET", "/api/v1/status").json()["rules"]
    assert rule["decision"]["code"] == "paused" and rule["paused"]["reason"] == "swap"
    refused = apps.request(app, "POST", "/api/v1/rules/shelves/trigger", headers=auth)
    assert refused.status_code == 409 and "is paused" in refused.json()["detail"]
    resumed = apps.request(app, "POST", "/api/v1/rules/shelves/resume", headers=auth)
    assert resumed.status_code == 200 and resumed.json() == {"rule": "shelves", "paused": None, "changed": True}
    assert apps.request(app, "POST", "/api/v1/rules/shelves/trigger", headers=auth).status_code == 202
    assert apps.request(app, "POST", "/api/v1/rules/nope/pause", headers=auth).status_code == 404


def rules_of(tmp_path: Path) -> rules.Rule:
    return loading.load_paths([tmp_path / "rules"]).rules["shelves"].rule


def test_mutating_endpoints_are_off_without_a_token(tmp_path: Path, journal: journal_sqlite.SqliteJournal) -> None:
    app = apps.app_for(journal, rules_path=rules_folder(tmp_path))
    for path in (
        "/api/v1/rules/shelves/trigger",
        "/api/v1/rules/shelves/pause",
        "/api/v1/rules/shelves/resume",
        "/api/v1/runs/shelves-d1/cancel",
        "/api/v1/models/shelves-detector/rollback",
    ):
        refused = apps.request(app, "POST", path, headers={"Authorization": "Bearer anything"})
        assert refused.status_code == 403
        assert "http.api_token" in refused.json()["detail"]
    assert apps.request(app, "GET", "/api/v1/status").status_code == 200  # reading needs no token


def test_rollback_reports_an_unreachable_mlflow_as_503(
    tmp_path: Path, journal: journal_sqlite.SqliteJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    app = apps.app_for(journal, rules_path=rules_folder(tmp_path), api_token=apps.API_TOKEN)
    auth = {"Authorization": f"Bearer {apps.API_TOKEN}"}
    assert apps.request(app, "POST", "/api/v1/models/shelves-detector/rollback", json={"to": "2"}).status_code == 401
    failed = apps.request(app, "POST", "/api/v1/models/shelves-detector/rollback", headers=auth, json={"to": "2"})
    assert failed.status_code == 503
    assert apps.NO_MLFLOW in failed.json()["detail"]
    assert journal.promotions("shelves-detector") == []


def test_a_taken_port_stops_retrain_up_with_a_clear_message(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            "RETRAIN_JOURNAL__PATH": str(tmp_path / "journal.db"),
            "RETRAIN_RULES__PATH": str(tmp_path),
            "RETRAIN_HTTP__PORT": str(port),
            "RETRAIN_KFP__LOCAL_PIPELINE_ROOT": str(tmp_path / "runs"),
        }
        result = run("up", env=env)
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "http.port" in result.stderr


def test_the_served_daemon_refuses_missing_and_wrong_tokens_and_everything_without_one(tmp_path: Path) -> None:
    """The same checks against `retrain up` itself, over its real socket."""
    from tests.support.processes import Daemon

    for configured in (True, False):
        home = tmp_path / ("with-token" if configured else "without-token")
        rules_folder(home.mkdir() or home)
        daemon = Daemon(home)
        if configured:
            daemon.env["RETRAIN_HTTP__API_TOKEN"] = apps.API_TOKEN
        daemon.start()
        try:
            url = daemon.url()
            trigger, rollback = f"{url}/api/v1/rules/shelves/trigger", f"{url}/api/v1/models/shelves-detector/rollback"
            if configured:
                assert httpx.post(trigger, timeout=10).status_code == 401
                wrong = httpx.post(trigger, headers={"Authorization": "Bearer not-the-token"}, timeout=10)
                assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
                right = httpx.post(trigger, headers={"Authorization": f"Bearer {apps.API_TOKEN}"}, timeout=10)
                assert right.status_code == 202, right.text
            else:
                for path in (trigger, rollback):
                    refused = httpx.post(path, headers={"Authorization": "Bearer anything"}, timeout=10)
                    assert refused.status_code == 403 and "http.api_token" in refused.json()["detail"]
            assert httpx.get(f"{url}/api/v1/status", timeout=10).status_code == 200
            assert daemon.terminate() == 0
        finally:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.kill()
