"""The fifteen ways to stop, block or mislead the daemon (issue 14), each reproduced against real parts: a real
`retrain up`, real files, the real MLflow and S3 servers. Each test failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from daemon import reactor, settings
from daemon.journal import sqlite
from daemon.launchers import local
from daemon.model import ids, runs
from daemon.sources import base, datasets, folders, watching
from tests.support import apps, services, silent, volumes
from tests.support.minio import TOKEN, body_for
from tests.support.processes import Daemon, count, run_cli
from tests.support.sim import T0
from tests.support.waiting import stays, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]  # the fault classes (README: Fault injection)

FOLDER_RULE = """name: shelves
dataset: {{source: "file://{data}"}}
model: {{registered_name: shelves-detector}}
triggers:
  - new_labels: {{min_new_labels: 100000, quiet_period: 1h}}
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    (tmp_path / "rules").mkdir()
    running = Daemon(tmp_path)
    yield running
    if running.process is not None and running.process.poll() is None:
        running.kill()


def labels(folder: Path, names: list[str]) -> None:
    """Complete label files (written a minute ago: no scan mistakes them for files still being written)."""
    folder.mkdir(parents=True, exist_ok=True)
    settled = time.time() - 60
    for name in names:
        (folder / name).write_text("0 0.5 0.5 0.2 0.2\n")
        os.utime(folder / name, (settled, settled))


def sources(d: Daemon) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in httpx.get(f"{d.url()}/api/v1/sources", timeout=10).json()["sources"]}


# --- 1. file names that are not UTF-8 -----------------------------------------------------------------------
LATIN1 = b"caf\xe9.txt".decode("utf-8", "surrogateescape")


def test_a_file_name_that_is_not_utf8_neither_stops_the_start_nor_loses_its_batch(daemon: Daemon) -> None:
    data = daemon.tmp / "data"
    labels(data / "labels", [LATIN1, *(f"good{i}.txt" for i in range(10))])
    (daemon.tmp / "rules" / "shelves.yaml").write_text(FOLDER_RULE.format(data=data))
    daemon.start()
    daemon.wait_started()  # 0.1: exited 1 with UnicodeEncodeError
    wait_until(lambda: count(daemon, lambda j: j.event_count()) == 10, 30, "the 10 good files")
    # While it runs: a batch holding another such name, and ten good files.
    labels(
        data / "labels", [b"na\xefve-\xff.txt".decode("utf-8", "surrogateescape"), *(f"more{i}.txt" for i in range(10))]
    )
    wait_until(lambda: count(daemon, lambda j: j.event_count()) == 20, 30, "the next 10 good files")
    wait_until(lambda: sources(daemon)["folder:shelves"]["rejected"] == 2, 30, "both refusals counted")
    refused = {entry["key"] for entry in daemon.logged("event_refused")}
    assert {"labels/caf\\xe9.txt", "labels/na\\xefve-\\xff.txt"} <= refused  # named, escaped
    assert sources(daemon)["folder:shelves"]["connected"] is True
    assert daemon.terminate() == 0


@given(names=st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=25, unique=True))
@hypothesis_settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_byte_name_is_journaled_losslessly_or_refused_and_counted(tmp_path: Path, names: list[bytes]) -> None:
    """Random byte names (every one the filesystem allows) in a real folder, scanned: each valid UTF-8 name is
    journaled exactly as it is, each other one refused and counted; nothing stops the batch."""
    root = tmp_path / f"case-{time.monotonic_ns()}"
    folder = os.fsencode(root / "labels")
    os.makedirs(folder)
    allowed = []
    for raw in names:
        name = raw.replace(b"/", b"_").replace(b"\0", b"_").lstrip(b".") or b"x"
        name = name + b".txt"
        if name in allowed:
            continue
        with open(os.path.join(folder, name), "wb") as out:
            out.write(b"0 0.5 0.5 0.2 0.2\n")
        allowed.append(name)
    journal = sqlite.SqliteJournal(":memory:")
    board = base.StatusBoard()
    location = datasets.DatasetLocation(name="fuzz", source=f"file://{root}", path=root)
    sink = base.EventSink(journal=journal, board=board, clock=lambda: T0)
    source = watching.FolderSource(location=location, sink=sink, clock=lambda: T0, settle_s=0)
    source.rescan()
    keys = {item.key for item in journal.inventory("fuzz")}
    # Which names count is folders.ignored's to say (hidden, temporary and backup suffixes), nothing else:
    # ``~.txt`` is an ordinary name (a backup ends with ``~``), which an older version of this test excluded.
    expected_valid = {
        f"labels/{n.decode()}" for n in allowed if _utf8(n) and not folders.ignored(f"labels/{n.decode()}")
    }
    assert keys == expected_valid
    assert board.get(source.name).rejected == len([n for n in allowed if not _utf8(n)])


def _utf8(name: bytes) -> bool:
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- 2, 3, 14. MLflow: a missing alias is "no champion", errors by code, names quoted ------------------------
@pytest.mark.services
def test_mlflow_errors_are_mapped_once_and_names_never_reach_a_filter_unchecked(mlflow_server: object) -> None:
    from mlflow.tracking import MlflowClient

    from daemon import errors
    from daemon.registry import mlflow as registry

    url = mlflow_server.url  # type: ignore[attr-defined]
    client = MlflowClient(tracking_uri=url)
    name = f"noalias-{time.monotonic_ns()}"
    client.create_registered_model(name)
    reader = registry.Mlflow(tracking_uri=url)
    assert reader.champion(name) is None  # INVALID_PARAMETER_VALUE for a missing alias: no champion, not an outage
    assert reader.champion("no-such-model") is None
    assert reader.model_exists(name) and not reader.model_exists("no-such-model")
    with pytest.raises(errors.InvalidRequest, match="not a valid model name"):
        reader.versions("x' or name='y")
    with pytest.raises(errors.InvalidRequest):  # a bad request is not an outage
        reader.call("a bad filter", lambda: reader.client.search_model_versions("name ~~ 'x'"))
    dead = registry.Mlflow(tracking_uri=f"http://127.0.0.1:{_free_port()}")
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    try:
        with pytest.raises(errors.ServiceUnavailable):
            dead.champion(name)
    finally:
        del os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]


def test_a_half_created_local_store_is_named_with_its_remedy_and_a_missing_one_is_created_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store left half-created by an older version (some of MLflow's tables, not all) is reported as what it
    is, naming the file and what to do; once moved aside, the next call creates a complete store, and no
    scratch file is left behind."""
    import sqlite3

    from daemon import errors
    from daemon.registry import mlflow as registry

    store = tmp_path / "mlflow.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE webhooks (webhook_id VARCHAR(256))")  # a table of a later migration
    db.close()
    uri = f"sqlite:///{store}"
    with pytest.raises(errors.ServiceUnavailable, match=rf"{store} .*half-created.*move it aside and restart"):
        registry.Mlflow(tracking_uri=uri).champion("shelves-detector")
    store.rename(tmp_path / "aside.db")
    opened = subprocess.run(  # a new process: MLflow keeps its database engines for the life of this one
        [
            sys.executable,
            "-c",
            f"from daemon.registry import mlflow as r; print(r.Mlflow(tracking_uri={uri!r}).champion('x'))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert opened.returncode == 0 and opened.stdout.strip() == "None", opened.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aside.db", "mlflow.db"]
    other = tmp_path / "no-links"  # a file system without hard links: the store is renamed into place
    other.mkdir()

    def no_links(source: object, target: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert registry.Mlflow(tracking_uri=f"sqlite:///{other / 'mlflow.db'}").champion("shelves-detector") is None
    assert sorted(p.name for p in other.iterdir()) == ["mlflow.db"]
    assert registry.local_store("http://mlflow:5000") is None
    assert registry.local_store("sqlite:///:memory:") is None
    assert registry.local_store("sqlite:///rel/m.db?timeout=5") == Path("rel/m.db")


def _free_port() -> int:
    from tests.support.services import free_port

    return free_port()


def _recorder(journal: sqlite.SqliteJournal, url: str, loaded: dict[str, object], tmp_path: Path) -> Any:
    """The outcome recorder as the daemon wires it, on the test's journal and MLflow server."""
    from daemon.http import metrics
    from daemon.registry import mlflow as registry
    from daemon.rules import reloading
    from daemon.runtime import recording

    return recording.OutcomeRecorder(
        journal=journal,
        mlflow=registry.Mlflow(tracking_uri=url),
        rules=lambda: loaded,  # type: ignore[arg-type,return-value]
        metrics=metrics.Metrics(
            board=base.StatusBoard(),
            journal=journal,
            rulebook=reloading.RuleBook(tmp_path),
            clock=lambda: T0,
            since_last_pass=lambda: 0.0,
        ),
        backend="kfp",
        clock=lambda: T0,
    )


@pytest.mark.services
def test_a_dead_run_of_a_model_without_champion_is_recorded_not_pending_forever(
    mlflow_server: object, tmp_path: Path
) -> None:
    """MLflow answers the missing alias with INVALID_PARAMETER_VALUE: the run ends as failed, once."""
    from mlflow.tracking import MlflowClient

    from daemon.launchers import base as launcher_base
    from daemon.model import tags
    from daemon.rules import loading
    from tests.support.sim import Simulation, label, make_rule

    url = mlflow_server.url  # type: ignore[attr-defined]
    rule = make_rule(name="lonely", quiet_period="0s")
    sim = Simulation(rule)
    sim.drop([label("a", dataset="lonely")])
    launch = sim.step()
    sim.journal.update_run(launch.run_key, runs.RunState.RUNNING, at=T0)  # type: ignore[union-attr]
    client = MlflowClient(tracking_uri=url)
    client.create_registered_model("lonely-detector")
    mlflow_run = client.create_run(client.create_experiment(f"lonely-{time.monotonic_ns()}")).info.run_id
    version = client.create_model_version("lonely-detector", source=f"runs:/{mlflow_run}/model", run_id=mlflow_run)
    client.set_model_version_tag("lonely-detector", version.version, tags.RUN_KEY, launch.run_key)  # type: ignore[union-attr]
    loaded = loading.LoadedRule(rule=rule, file="lonely.yaml", line=1)
    recorder = _recorder(sim.journal, url, {"lonely": loaded}, tmp_path)
    dead = launcher_base.RunStatus(
        run_key=launch.run_key,
        state=runs.RunState.FAILED,
        backend_run_id="x",
        error="pod killed",  # type: ignore[union-attr]
    )
    recorder.finish(sim.journal.get_run(launch.run_key), dead)  # type: ignore[arg-type, union-attr]
    final = sim.journal.get_run(launch.run_key)  # type: ignore[union-attr]
    assert final is not None and final.state is runs.RunState.FAILED
    assert sim.journal.promotions("lonely-detector") == []  # registered, never promoted: nothing changed


@pytest.mark.services
def test_a_run_whose_rule_was_removed_meanwhile_is_recorded_with_its_gate_decision(
    mlflow_server: object, tmp_path: Path
) -> None:
    """The run's model comes from what it was launched with, not from the rules in force when it ends: a rule
    removed (or its ConfigMap briefly empty) while its run trained left the run recorded as succeeded without
    the gate's decision, though MLflow had it (found by the cluster test of the shipped rules)."""
    from mlflow.tracking import MlflowClient

    from daemon.launchers import base as launcher_base
    from daemon.model import tags
    from tests.support.sim import Simulation, label, make_rule

    url = mlflow_server.url  # type: ignore[attr-defined]
    name = f"gone-{time.monotonic_ns()}"
    rule = make_rule(name=name, quiet_period="0s")
    sim = Simulation(rule)
    sim.drop([label("a", dataset=name)])
    launch = sim.step()
    assert launch is not None
    sim.journal.update_run(launch.run_key, runs.RunState.RUNNING, at=T0)
    model = rule.model.registered_name
    client = MlflowClient(tracking_uri=url)
    client.create_registered_model(model)
    mlflow_run = client.create_run(client.create_experiment(name)).info.run_id
    version = client.create_model_version(model, source=f"runs:/{mlflow_run}/model", run_id=mlflow_run)
    for key, value in {
        tags.RUN_KEY: launch.run_key,
        tags.GATE_DECISION: "rejected",
        tags.GATE_REASON: "first model: map50_95 0.0 < first_model_min 0.1",
    }.items():
        client.set_model_version_tag(model, version.version, key, value)
    recorder = _recorder(sim.journal, url, {}, tmp_path)  # the rule is gone
    done = launcher_base.RunStatus(run_key=launch.run_key, state=runs.RunState.SUCCEEDED, backend_run_id="x")
    run = sim.journal.get_run(launch.run_key)
    assert run is not None
    recorder.finish(run, done)
    final = sim.journal.get_run(launch.run_key)
    assert final is not None and final.state is runs.RunState.SUCCEEDED
    assert final.promotion["decision"] == "rejected" and final.promotion["model"] == model


# --- 4. a rule's dataset moved --------------------------------------------------------------------------------
def test_a_hot_reloaded_dataset_source_is_watched_at_its_new_location(daemon: Daemon) -> None:
    old, new = daemon.tmp / "old", daemon.tmp / "new"
    labels(old / "labels", ["a.txt", "b.txt"])
    labels(new / "labels", ["c.txt", "d.txt", "e.txt"])
    rule = daemon.tmp / "rules" / "shelves.yaml"
    rule.write_text(FOLDER_RULE.format(data=old))
    daemon.env["RETRAIN_SOURCES__UNWATCHED_RETRY_S"] = "1"
    daemon.start()
    wait_until(lambda: count(daemon, lambda j: len(list(j.inventory("shelves")))) == 2, 30, "the old folder")
    rule.write_text(FOLDER_RULE.format(data=new))
    wait_until(
        lambda: (
            count(daemon, lambda j: sorted(i.key for i in j.inventory("shelves")))
            == ["labels/c.txt", "labels/d.txt", "labels/e.txt"]
        ),  # type: ignore[comparison-overlap]
        30,
        "the inventory to follow the new folder",
    )
    labels(new / "labels", ["f.txt"])  # the new folder is the one watched now
    labels(old / "labels", ["z.txt"])  # and the old one no longer
    wait_until(lambda: count(daemon, lambda j: len(list(j.inventory("shelves")))) == 4, 30, "f.txt")
    stays(
        lambda: "labels/z.txt" not in count(daemon, lambda j: [i.key for i in j.inventory("shelves")]),  # type: ignore[operator]
        2,
        "the old folder unwatched",
    )
    status = count(daemon, lambda j: j.dataset_status("shelves"))  # type: ignore[arg-type, return-value]
    assert status.source == f"file://{new}" and status.problem is None  # type: ignore[attr-defined]
    assert daemon.terminate() == 0


# --- 5. per-class minimums by name ----------------------------------------------------------------------------
def test_unknown_class_names_in_a_rule_are_refused(tmp_path: Path) -> None:
    rule = tmp_path / "pets.yaml"
    rule.write_text(
        "name: pets\ndataset: {source: 's3://datasets/pets/', classes: [cat, dog]}\n"
        "model: {registered_name: pets-detector}\ntriggers: [{new_labels: {min_per_class: {kangaroo: 20}}}]\n"
    )
    result = run_cli("rules", "check", str(rule))
    assert result.returncode == 1
    assert "unknown class 'kangaroo'; dataset.classes are cat, dog" in result.stdout


def test_a_per_class_minimum_by_name_counts_the_boxes_of_that_class() -> None:
    from daemon.model import decisions
    from daemon.rules import loading
    from tests.support.sim import Simulation, label

    [loaded] = loading.parse_text(
        "name: pets\ndataset: {source: 's3://datasets/pets/', classes: [cat, dog]}\n"
        "model: {registered_name: pets-detector}\n"
        "triggers: [{new_labels: {min_new_labels: 1, min_per_class: {cat: 20}, quiet_period: 0s}}]\n",
        file="pets.yaml",
    ).rules
    sim = Simulation(loaded.rule)
    sim.drop([label(f"k{i}", class_counts={"0": 250}) for i in range(20)])  # 5,000 boxes of class 0 = cat
    decision = sim.step()
    assert isinstance(decision, decisions.Launch), decision


# --- 6. a torn pid.json -----------------------------------------------------------------------------------------
def test_a_torn_pid_file_neither_stops_the_start_nor_blocks_launches(daemon: Daemon) -> None:
    data = daemon.tmp / "data"
    labels(data / "labels", ["a.txt"])
    (daemon.tmp / "rules" / "shelves.yaml").write_text(FOLDER_RULE.format(data=data))
    journal = daemon.journal()
    try:
        from tests.support.sim import label

        journal.append_events([label("labels/a.txt", dataset="shelves")], received_at=T0)
        from daemon.model import decisions

        launch = decisions.Launch(
            rule="shelves",
            run_key=ids.RunKey("shelves-torn"),
            trigger=decisions.TriggerKind.MANUAL,
            reason="test",
            snapshot=None,
        )
        assert journal.record_intent(launch, at=T0)
        journal.update_run(launch.run_key, runs.RunState.RUNNING, at=T0)
    finally:
        journal.close()
    folder = daemon.tmp / "runs" / "shelves-torn"
    folder.mkdir(parents=True)
    (folder / "spec.json").write_text("{}")
    (folder / "pid.json").write_text("")  # what a crash mid-write left (0.1 wrote it in place)
    daemon.start()
    daemon.wait_started()  # 0.1: exited 1 with JSONDecodeError
    wait_until(
        lambda: count(daemon, lambda j: j.get_run(ids.RunKey("shelves-torn")).state is runs.RunState.ABANDONED),  # type: ignore[union-attr, arg-type, return-value]
        30,
        "the torn run to be abandoned",
    )
    assert daemon.terminate() == 0


# --- 9. malformed webhook bodies ---------------------------------------------------------------------------------
S3_RULE = """name: pets
dataset: {source: "s3://images/pets/"}
model: {registered_name: pets-detector}
triggers:
  - new_labels: {min_new_labels: 100000, quiet_period: 1h}
"""


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda record: record["s3"]["object"].update(key="pets/labels/%ED%A0%80.txt"), "not valid UTF-8"),
        (lambda record: record["s3"]["object"].update(key="pets/labels/\ud800.txt"), "not valid UTF-8"),
        (lambda record: record["s3"]["object"].update(size=2**64), "object size"),
    ],
    ids=["percent-encoded-surrogate", "lone-surrogate", "size-2**64"],
)
def test_malformed_webhook_bodies_get_400_from_the_served_daemon(daemon: Daemon, mutate: object, expected: str) -> None:
    (daemon.tmp / "rules" / "pets.yaml").write_text(S3_RULE)
    daemon.env["RETRAIN_SOURCES__WEBHOOK_TOKEN"] = TOKEN
    daemon.start()
    body = body_for("pets/labels/a.txt")
    mutate(body["Records"][0])  # type: ignore[operator]
    content = json.dumps(body, ensure_ascii=True).encode()
    reply = httpx.post(
        f"{daemon.url()}/events/minio", content=content, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert reply.status_code == 400, reply.text
    assert expected in reply.json()["detail"]
    assert count(daemon, lambda j: j.event_count()) == 0
    assert daemon.terminate() == 0


# --- 10. readiness on a full disk -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.services
def test_readiness_reports_a_full_journal_disk_and_recovers(
    daemon: Daemon, s3_server: services.S3Server, s3_bucket: str
) -> None:
    (daemon.tmp / "rules" / "pets.yaml").write_text(S3_RULE.replace("s3://images/", f"s3://{s3_bucket}/"))
    daemon.env.update(
        RETRAIN_SOURCES__WEBHOOK_TOKEN=TOKEN,
        RETRAIN_SOURCES__WEBHOOK_MAX_BODY_BYTES=str(64 * 1024 * 1024),
        RETRAIN_SOURCES__S3__ENDPOINT=s3_server.endpoint,
        RETRAIN_SOURCES__S3__SECURE="false",
        RETRAIN_SOURCES__S3__ACCESS_KEY=s3_server.access_key,
        RETRAIN_SOURCES__S3__SECRET_KEY=s3_server.secret_key,
    )
    with volumes.tmpfs(daemon.tmp / "vol", size="24m") as vol:
        daemon.env["RETRAIN_JOURNAL__PATH"] = str(vol / "journal.db")
        daemon.env["RETRAIN_JOURNAL__MIN_FREE_BYTES"] = str(2 * 1024 * 1024)
        daemon.start()
        url = daemon.url()
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, "readiness")
        filler = volumes.fill(vol)
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert "bytes free" in ready.json()["checks"]["journal"]
        post = httpx.post(
            f"{url}/events/minio",
            json=body_for(*(f"pets/labels/{i:06d}.txt" for i in range(20000)), bucket=s3_bucket),
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert post.status_code == 503, post.text  # more than the disk holds: MinIO keeps them and retries
        filler.unlink()
        wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 30, "readiness again")
        assert daemon.terminate() == 0


# --- 11. credentials inside URIs ---------------------------------------------------------------------------------
PASSWORD = "S3cr3tPW-" + "z" * 6

METRIC_RULE = """name: watched
dataset: {source: "file://DATA"}
model: {registered_name: watched-detector}
triggers:
  - metric_drift: {metric: live_map50_95, drop_from_champion: 0.05, check_every: 1s}
"""


def test_credentials_inside_uris_never_reach_logs_errors_or_the_api(daemon: Daemon) -> None:
    data = daemon.tmp / "data"
    labels(data / "labels", ["a.txt"])
    (daemon.tmp / "rules" / "watched.yaml").write_text(METRIC_RULE.replace("DATA", str(data)))
    daemon.env.update(
        RETRAIN_MLFLOW__TRACKING_URI=f"http://admin:{PASSWORD}@127.0.0.1:{_free_port()}",
        RETRAIN_MLFLOW__MAX_RETRIES="0",
        RETRAIN_MLFLOW__REQUEST_TIMEOUT_S="2",
        RETRAIN_HTTP__API_TOKEN=apps.API_TOKEN,
    )
    daemon.start()
    url = daemon.url()
    wait_until(lambda: bool(daemon.logged("drift_check_failed")), 60, "a failed drift check")
    rollback = httpx.post(
        f"{url}/api/v1/models/watched-detector/rollback",
        headers={"Authorization": f"Bearer {apps.API_TOKEN}"},
        timeout=30,
    )
    assert rollback.status_code == 503
    texts = [
        rollback.text,
        httpx.get(f"{url}/api/v1/sources", timeout=10).text,
        httpx.get(f"{url}/readyz", timeout=10).text,
        run_cli(
            "config", "show", env={"RETRAIN_MLFLOW__TRACKING_URI": daemon.env["RETRAIN_MLFLOW__TRACKING_URI"]}
        ).stdout,
    ]
    assert daemon.terminate() == 0
    texts += [log.read_text(errors="replace") for log in daemon.tmp.glob("daemon-*.log")]
    assert all(PASSWORD not in text for text in texts)
    assert any("admin:***@127.0.0.1" in text for text in texts)


# --- 7. a hung service never stalls the loop --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("service", ["mlflow", "s3", "kfp"])
def test_a_service_that_accepts_and_never_answers_never_stalls_the_loop(daemon: Daemon, service: str) -> None:
    """/healthz measures the loop; every call to a hung service waits in a worker (and has a deadline)."""
    data = daemon.tmp / "data"
    labels(data / "labels", ["a.txt"])
    with silent.silent_server() as port:
        hung = f"127.0.0.1:{port}"
        daemon.env["RETRAIN_HTTP__LIVENESS_TIMEOUT_S"] = "3"
        if service == "mlflow":
            (daemon.tmp / "rules" / "watched.yaml").write_text(METRIC_RULE.replace("DATA", str(data)))
            daemon.env["RETRAIN_MLFLOW__TRACKING_URI"] = f"http://{hung}"
        elif service == "s3":
            (daemon.tmp / "rules" / "pets.yaml").write_text(S3_RULE)
            daemon.env.update(RETRAIN_SOURCES__S3__ENDPOINT=hung, RETRAIN_SOURCES__S3__SECURE="false")
        else:
            rule = FOLDER_RULE.format(data=data).replace("min_new_labels: 100000, quiet_period: 1h", "quiet_period: 0s")
            (daemon.tmp / "rules" / "shelves.yaml").write_text(rule)
            daemon.env.update(
                RETRAIN_KFP__LAUNCHER="kfp",
                RETRAIN_KFP__HOST=f"http://{hung}",
                RETRAIN_KFP__INPUTS_URI="s3://r/in/",
                RETRAIN_SOURCES__S3__ENDPOINT=hung,
                RETRAIN_SOURCES__S3__SECURE="false",
            )
        daemon.start()
        url = daemon.url()
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            health = httpx.get(f"{url}/healthz", timeout=5)
            assert health.status_code == 200, health.text
            time.sleep(0.5)
        assert daemon.terminate() == 0


# --- 12, 13. a renamed rule; a clock that steps back ------------------------------------------------------------
STUB = """
import json, pathlib, sys
spec = pathlib.Path(sys.argv[1])
outcome = {"model": "shelves-detector", "version": "1", "decision": "rejected", "reason": "stub",
           "candidate": {"map50_95": 0.1, "map50": 0.2, "per_class": {}}}
(spec.parent / "outcome.json").write_text(json.dumps({"state": "succeeded", "output": outcome}))
"""


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def in_process(tmp: Path, clock: Clock | None = None) -> reactor.Reactor:
    """The daemon in this process, its pipeline a stub that ends at once (the real launcher class)."""
    config = settings.load(
        environ={},
        overrides=[
            f"journal.path={tmp / 'journal.db'}",
            f"rules.path={tmp / 'rules'}",
            "http.enabled=false",
            f"kfp.local_pipeline_root={tmp / 'runs'}",
            f"mlflow.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
        ],
    )
    launcher = local.LocalLauncher(root=tmp / "runs", command=[sys.executable, "-c", STUB])
    return reactor.Reactor(config, launcher=launcher, clock=clock or (lambda: datetime.now(UTC)))


def drive(daemon: reactor.Reactor, passes: int = 3) -> None:
    """Passes of the loop and of the workers, by hand."""
    for _ in range(passes):
        daemon.step()
        daemon.supervisor.work()
        daemon.launching.work()
        time.sleep(0.3)
        daemon.tracker.work()


def test_a_renamed_rule_keeps_its_history_and_does_not_relaunch(tmp_path: Path) -> None:
    data = tmp_path / "data"
    labels(data / "labels", ["a.txt", "b.txt"])
    (tmp_path / "rules").mkdir()
    rule = FOLDER_RULE.format(data=data).replace("min_new_labels: 100000, quiet_period: 1h", "quiet_period: 0s")
    rule += "limits: {cooldown: 1h, max_runs_per_day: 1}\n"
    (tmp_path / "rules" / "shelves.yaml").write_text(rule)
    daemon = in_process(tmp_path)
    daemon.refresh_rules(force=True)
    daemon.supervisor.work()
    try:
        drive(daemon)
        [first] = daemon.journal.runs()
        assert first.state is runs.RunState.SUCCEEDED
        # Renamed (0.1: the new name launched at once on everything the old one consumed).
        renamed = "name: shelves-v2\nrenamed_from: shelves\n" + rule.split("\n", 1)[1]
        (tmp_path / "rules" / "shelves.yaml").write_text(renamed)
        drive(daemon)
        labels(data / "labels", ["c.txt"])  # new data: the cooldown of the old name holds for the new one
        daemon.supervisor.folders["shelves-v2"].rescan()
        drive(daemon)
        assert [r.run_key for r in daemon.journal.runs()] == [first.run_key]
        [latest] = daemon.journal.decisions("shelves-v2", limit=1)
        assert latest.code == "cooldown", latest.reason
        assert {i.key for i in daemon.journal.inventory("shelves-v2")} == {
            "labels/a.txt",
            "labels/b.txt",
            "labels/c.txt",
        }
    finally:
        daemon.stop()
        daemon.shutdown()


def test_a_clock_that_steps_back_does_not_hold_a_rule_past_its_max_wait(tmp_path: Path) -> None:
    """Labels journaled while the clock ran a day ahead: after the clock is corrected, the quiet period runs
    from now (0.1: "last label 0s ago" until the clock caught up, max_wait or not)."""
    data = tmp_path / "data"
    (tmp_path / "rules").mkdir()
    rule = FOLDER_RULE.format(data=data).replace(
        "min_new_labels: 100000, quiet_period: 1h", "min_new_labels: 2, quiet_period: 10m, max_wait: 1h"
    )
    (tmp_path / "rules" / "shelves.yaml").write_text(rule)
    labels(data / "labels", ["a.txt", "b.txt"])
    clock = Clock(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))  # a day ahead of the real time below
    ahead = in_process(tmp_path, clock)
    ahead.refresh_rules(force=True)
    ahead.supervisor.work()  # the scan journals both labels "at" the wrong time
    ahead.step()
    ahead.shutdown()
    clock.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # NTP corrects it; the daemon restarts
    daemon = in_process(tmp_path, clock)
    daemon.refresh_rules(force=True)
    daemon.supervisor.work()
    try:
        daemon.step()
        clock.now += timedelta(minutes=11)  # the quiet period has passed, by the corrected clock
        drive(daemon, passes=2)
        assert len(daemon.journal.runs()) == 1, daemon.journal.decisions("shelves", limit=3)
    finally:
        daemon.stop()
        daemon.shutdown()


# --- an unwatched dataset is reported everywhere and retried (cluster path, 8) ------------------------------------
def test_a_dataset_that_cannot_be_watched_is_reported_and_retried_until_it_can(daemon: Daemon) -> None:
    data = daemon.tmp / "volume-not-mounted-yet"
    (daemon.tmp / "rules" / "shelves.yaml").write_text(
        FOLDER_RULE.format(data=data).replace("min_new_labels: 100000, quiet_period: 1h", "min_new_labels: 1000")
    )
    (daemon.tmp / "rules" / "pets.yaml").write_text(S3_RULE)  # s3:// without an endpoint
    daemon.env["RETRAIN_SOURCES__UNWATCHED_RETRY_S"] = "1"
    daemon.start()
    url = daemon.url()
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 503
    assert "does not exist" in ready.json()["checks"]["source folder:shelves"]
    assert "sources.s3.endpoint" in ready.json()["checks"]["source s3_reconcile:pets"]
    listed = sources(daemon)
    assert listed["folder:shelves"]["connected"] is False and listed["s3_reconcile:pets"]["connected"] is False
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'retrain_source_connected{source="folder:shelves"} 0.0' in metrics
    status = run_cli("status", env={k: v for k, v in daemon.env.items() if k.startswith("RETRAIN_")})
    assert "shelves: 0 new labels, 0 new images; waiting [dataset_unavailable]" in status.stdout, status.stdout
    # The volume gets mounted: picked up without a rule edit, within the retry interval.
    labels(data / "labels", ["a.txt", "b.txt"])
    wait_until(lambda: sources(daemon)["folder:shelves"]["connected"] is True, 30, "the folder to be watched")
    wait_until(lambda: count(daemon, lambda j: j.event_count()) == 2, 30, "its files")
    assert "source folder:shelves" not in httpx.get(f"{url}/readyz", timeout=10).json()["checks"]
    assert daemon.terminate() == 0


@pytest.mark.services
def test_rollback_works_after_the_champion_s_version_was_deleted(mlflow_server: object, tmp_path: Path) -> None:
    """Exactly when a rollback is needed: 0.1 answered "MLflow unavailable" (the missing alias)."""
    from mlflow.tracking import MlflowClient

    from daemon.model import tags

    url = mlflow_server.url  # type: ignore[attr-defined]
    client = MlflowClient(tracking_uri=url)
    name = f"deleted-{time.monotonic_ns()}"
    client.create_registered_model(name)
    run_id = client.create_run(client.create_experiment(name)).info.run_id
    for _ in range(2):
        version = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
        client.set_model_version_tag(name, version.version, tags.GATE_DECISION, "promoted")
        client.set_registered_model_alias(name, tags.CHAMPION_ALIAS, version.version)
    client.delete_model_version(name, "2")  # the bad champion is removed by hand: the alias goes with it
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    app = apps.app_for(journal, tracking_uri=url, api_token=apps.API_TOKEN)
    reply = apps.request(
        app, "POST", f"/api/v1/models/{name}/rollback", headers={"Authorization": f"Bearer {apps.API_TOKEN}"}
    )
    assert reply.status_code == 200, reply.text
    assert reply.json()["champion"] == "1"
    assert client.get_model_version_by_alias(name, tags.CHAMPION_ALIAS).version == "1"
    bad = apps.request(
        app, "POST", "/api/v1/models/x' or name='y/rollback", headers={"Authorization": f"Bearer {apps.API_TOKEN}"}
    )
    assert bad.status_code == 400, bad.text  # 0.1: 503 "Invalid clause(s)"
    journal.close()
