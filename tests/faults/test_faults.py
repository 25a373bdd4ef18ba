"""Fault injection: a real `retrain up` is SIGKILLed at each boundary of its work, 20 times per boundary with
randomized timing, and restarted; at the end no event is lost, none is journaled twice, no run is launched
twice and the champion is the right one. The kill comes from a failpoint (`daemon/failpoints.py`) armed
for its N-th pass, N random, or from the test at a random moment. Each test prints its counts.

Run them alone with `pytest -m faults -s`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from daemon import constants
from daemon.model import runs
from pipelines import synthetic
from tests.support import services
from tests.support.minio import TOKEN, body_for
from tests.support.processes import Daemon, count
from tests.support.waiting import stays, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(1800)]

#: Kills per boundary: `make test` (and CI) runs 3 with a new seed each run, `make test-full` the full 20; a
#: smaller count never means fewer boundaries: every boundary is killed in every run.
ITERATIONS = int(os.environ.get("FAULT_ITERATIONS", "3"))
#: The Makefile draws a seed per run and passes it on; every report line prints it, so a red run is replayed
#: with `make test FAULT_SEED=N` (or FAULT_SEED=N pytest -m faults).
SEED = int(os.environ.get("FAULT_SEED") or random.SystemRandom().randrange(1, 2**31))

QUIET_RULE = """
name: faults
dataset: {{source: "{source}"}}
model: {{registered_name: faults-detector}}
triggers:
  - new_labels: {{min_new_labels: 1000000, quiet_period: 1h}}
"""

LAUNCH_RULE = """
name: faults
dataset: {{source: "file://{data}", classes: [red-box, green-box, blue-box]}}
model: {{registered_name: faults-detector, base: yolov8n.yaml}}
triggers:
  - new_labels: {{min_new_labels: 1, quiet_period: 0s}}
training: {{epochs: 1, imgsz: 64, batch: 8, gpus: 0}}
promotion: {{first_model_min: 0.0}}
limits: {{cooldown: 0s, max_concurrent_runs: 1}}
"""


class FaultyDaemon(Daemon):
    """`retrain up` that a failpoint kills; every failpoint that fires leaves a marker (its name and the
    process id), so each iteration can prove its kill point was reached."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.markers = tmp / "failpoints"
        self.markers.mkdir()
        self.env[constants.ENV_FAILPOINT_MARKERS] = str(self.markers)

    def start_armed(self, failpoint: str | None) -> None:
        if failpoint is None:
            self.env.pop(constants.ENV_FAILPOINT, None)
        else:
            self.env[constants.ENV_FAILPOINT] = failpoint
        self.start()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def fired(self, name: str) -> int:
        """How many times the failpoint ``name`` fired, in any process (the daemon or a pipeline step)."""
        return len(list(self.markers.glob(f"{name}.*")))

    def end(self, name: str, *, within_s: float) -> None:
        """Wait for the armed failpoint to kill this life; fail the test if it was not reached."""
        assert self.process is not None
        wait_until(lambda: not self.alive(), within_s, f"failpoint {name} to fire")
        assert self.process.returncode == -signal.SIGKILL, self.log_tail()
        assert (self.markers / f"{name}.{self.process.pid}").exists(), f"{name} did not fire:\n{self.log_tail()}"

    def kill_pipelines(self) -> None:
        for pid_file in (self.tmp / "runs").glob("*/pid.json"):
            pid = json.loads(pid_file.read_text())["pid"]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


@pytest.fixture
def faulty(tmp_path: Path) -> FaultyDaemon:
    (tmp_path / "rules").mkdir()
    daemon = FaultyDaemon(tmp_path)
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.kill()
    daemon.kill_pipelines()


def report(boundary: str, daemon: FaultyDaemon, name: str, **figures: object) -> None:
    details = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(
        f"\n[faults] {boundary}: {ITERATIONS} iterations (seed {SEED}): {daemon.fired(name)} kills by {name}, {details}"
    )


def journaled_since(faulty: FaultyDaemon, seq: int) -> tuple[int, int]:
    """Events journaled after sequence number ``seq``: (how many, in how many transactions). Every event of
    one delivery carries that delivery's ``received_at``, so distinct values count the deliveries committed."""
    with contextlib.closing(sqlite3.connect(f"file:{faulty.tmp / 'journal.db'}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT COUNT(*), COUNT(DISTINCT received_at) FROM events WHERE seq > ?", (seq,)).fetchone()
    return int(row[0]), int(row[1])


def last_seq(faulty: FaultyDaemon) -> int:
    if not faulty.has_journal():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{faulty.tmp / 'journal.db'}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def run_states(faulty: FaultyDaemon) -> dict[str, runs.RunState]:
    journal = faulty.journal()
    try:
        return {r.run_key: r.state for r in journal.runs(limit=1000)}
    finally:
        journal.close()


def test_killed_between_receiving_and_journaling_events(faulty: FaultyDaemon) -> None:
    """Folder source: files seen, the journal write not done. The restart's scan finds them again."""
    rng = random.Random(SEED)
    data = faulty.tmp / "data" / "labels" / "train"
    data.mkdir(parents=True)
    (faulty.tmp / "rules" / "faults.yaml").write_text(QUIET_RULE.format(source=f"file://{data.parent.parent}"))
    written = 0
    for _ in range(ITERATIONS):
        before = last_seq(faulty)
        nth = rng.randint(1, 2)
        faulty.start_armed(f"event_received@{nth}")
        time.sleep(rng.uniform(0, 2.0))
        deadline = time.monotonic() + 60
        while faulty.alive() and time.monotonic() < deadline:  # bursts, as a labelling tool writes them
            for _ in range(rng.randint(1, 15)):
                (data / f"{written:05d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
                written += 1
            time.sleep(rng.uniform(0, 0.3))
        faulty.end("event_received", within_s=10.0)
        # Where the kill fell: the life committed at most the deliveries before the N-th, never the N-th
        # (the batch in hand); with @1 it journaled nothing at all.
        new, deliveries = journaled_since(faulty, before)
        assert deliveries <= nth - 1, f"the kill at delivery {nth} fell after a commit: {deliveries} committed"
        assert nth > 1 or new == 0, f"killed at the first delivery, yet {new} events were journaled"
    faulty.start_armed(None)
    wait_until(
        lambda: count(faulty, lambda j: j.event_count()) >= written, 120, f"{written} events", explain=faulty.explain
    )
    stays(lambda: count(faulty, lambda j: j.event_count()) == written, 2, "no event journaled twice")
    journaled = count(faulty, lambda j: j.event_count())
    assert faulty.terminate() == 0
    assert journaled == written  # none lost, none twice
    assert faulty.fired("event_received") == ITERATIONS
    report("event received, not journaled", faulty, "event_received", files=written, journaled=journaled, lost=0)


def test_killed_between_journaling_and_acknowledging_a_webhook(faulty: FaultyDaemon) -> None:
    """Webhook: events committed, the 200 never sent. The sender (MinIO) retries; the journal dedupes."""
    rng = random.Random(SEED + 1)
    (faulty.tmp / "rules" / "faults.yaml").write_text(QUIET_RULE.format(source="s3://images/pets/"))
    faulty.env["RETRAIN_SOURCES__WEBHOOK_TOKEN"] = TOKEN
    auth = {"Authorization": f"Bearer {TOKEN}"}
    pending: list[dict[str, object]] = []
    keys = 0
    deliveries = retries = 0
    for _ in range(ITERATIONS):
        faulty.start_armed(f"event_journaled@{rng.randint(1, 3)}")
        url = f"http://127.0.0.1:{faulty.port()}/events/minio"
        deadline = time.monotonic() + 10.0
        # Deliveries go on until the failpoint kills the daemon mid-delivery (or the deadline: then end() fails).
        while faulty.alive() and time.monotonic() < deadline:
            if not pending:
                batch = [f"pets/labels/train/{keys + i:05d}.txt" for i in range(rng.randint(1, 5))]
                keys += len(batch)
                pending.append(body_for(*batch))
            try:
                reply = httpx.post(url, json=pending[0], headers=auth, timeout=5)
            except httpx.TransportError:
                retries += 1  # the daemon died with the body journaled and unanswered: MinIO sends it again
                break
            assert reply.status_code == 200, reply.text
            deliveries += 1
            pending.pop(0)
            time.sleep(rng.uniform(0, 0.1))
        faulty.end("event_journaled", within_s=10.0)
        # Where the kill fell: the body in flight is journaled (every key generated so far), only its reply lost.
        assert pending and count(faulty, lambda j: j.event_count()) == keys, "the body in flight was not journaled"
    faulty.start_armed(None)
    url = f"http://127.0.0.1:{faulty.port()}/events/minio"
    for body in pending:
        assert httpx.post(url, json=body, headers=auth, timeout=5).status_code == 200
    journaled = count(faulty, lambda j: j.event_count())
    assert faulty.terminate() == 0
    assert journaled == keys
    assert retries == faulty.fired("event_journaled") == ITERATIONS  # every kill dropped a reply MinIO re-sent
    report(
        "event journaled, not acknowledged",
        faulty,
        "event_journaled",
        events=keys,
        deliveries=deliveries,
        retried_after_kill=retries,
        journaled=journaled,
        lost=0,
        duplicated=0,
    )


def launches(faulty: FaultyDaemon) -> Counter[str]:
    """How often the launcher started each run key, over every life of the daemon."""
    return Counter(str(line["run_key"]) for line in faulty.logged("run_started"))


@pytest.mark.parametrize("boundary", ["intent_written", "submitted"])
def test_killed_around_the_launch(faulty: FaultyDaemon, boundary: str) -> None:
    """Intent committed but not submitted, or submitted but not recorded: the restart resolves the run by its
    key and never starts it twice. The runs fail fast (labels without images) and may overlap, so that 20
    launches stay cheap."""
    rng = random.Random(SEED + (2 if boundary == "intent_written" else 3))
    data = faulty.tmp / "data"
    (data / "labels" / "train").mkdir(parents=True)
    (faulty.tmp / "rules" / "faults.yaml").write_text(
        LAUNCH_RULE.format(data=data).replace("max_concurrent_runs: 1", f"max_concurrent_runs: {ITERATIONS}")
    )
    faulty.env["RETRAIN_KFP__LOCAL_MAX_CONCURRENT_RUNS"] = str(ITERATIONS)
    for index in range(ITERATIONS):
        faulty.start_armed(f"{boundary}@1")
        time.sleep(rng.uniform(0, 1.5))  # the label lands at a random moment of the start-up
        (data / "labels" / "train" / f"{index:03d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
        faulty.end(boundary, within_s=60.0)
        # Where the kill fell: the new run's intent is journaled and the journal does not say it started; at
        # intent_written the launcher was never called (no run folder), at submitted it was (the folder exists).
        states = run_states(faulty)
        intended = [key for key, state in states.items() if state is runs.RunState.INTENDED]
        assert len(states) == index + 1 and len(intended) == 1, f"{boundary}: no new intent journaled: {states}"
        [new_key] = intended
        started_folder = (faulty.tmp / "runs" / new_key).is_dir()
        assert started_folder is (boundary == "submitted"), f"{boundary}: run folder exists={started_folder}"
        faulty.start_armed(None)  # recovery: the intent is submitted, or the started run is found
        recorded = index + 1
        wait_until(
            lambda recorded=recorded: (
                count(  # type: ignore[misc]
                    faulty, lambda j: sum(r.state is not runs.RunState.INTENDED for r in j.runs(limit=1000))
                )
                >= recorded
            ),
            120,
            f"run {recorded} to be recorded",
            explain=faulty.explain,
        )
        faulty.kill()
    faulty.start_armed(None)
    wait_until(
        lambda: count(faulty, lambda j: sum(r.state.final for r in j.runs(limit=1000))) == ITERATIONS,
        600,
        "every run to end",
        explain=faulty.explain,
    )
    assert faulty.terminate() == 0
    started = launches(faulty)
    journal = faulty.journal()
    try:
        all_runs = journal.runs(limit=1000)
    finally:
        journal.close()
    keys = [r.run_key for r in all_runs]
    assert len(keys) == len(set(keys)) == ITERATIONS
    assert set(started) == set(keys)
    assert max(started.values()) == 1, started  # no run key started twice
    assert sorted(p.name for p in (faulty.tmp / "runs").iterdir()) == sorted(keys)
    assert faulty.fired(boundary) == ITERATIONS
    report(boundary, faulty, boundary, runs=len(keys), started_once=len(started), duplicate_runs=0)


def champion_in_mlflow(faulty: FaultyDaemon) -> str | None:
    from daemon.registry import mlflow as registry

    found = registry.Mlflow(tracking_uri=f"sqlite:///{faulty.tmp / 'mlflow.db'}").champion("faults-detector")
    return found.version if found is not None else None


@pytest.mark.parametrize("boundary", ["run_finished", "promotion_done"])
def test_killed_between_a_finished_run_and_its_record(
    faulty: FaultyDaemon, boundary: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real run trains and promotes its model once; the daemon (``run_finished``: killed with the outcome in
    hand) or the pipeline's promotion step (``promotion_done``: killed right after moving the alias, so the
    run reports a failure and no decision) dies; the daemon then learns the promotion from MLflow.
    Then, 20 times, that state is restarted from a copy and killed at random moments until a run is
    recorded: exactly one promotion record, and the journal's champion is MLflow's."""
    rng = random.Random(SEED + (4 if boundary == "run_finished" else 5))
    data = faulty.tmp / "data"
    (faulty.tmp / "rules" / "faults.yaml").write_text(LAUNCH_RULE.format(data=data))
    if boundary == "run_finished":
        synthetic.generate(data, count=8, seed=5)
        faulty.start_armed("run_finished@1")
        outcome = lambda: any(faulty.tmp.glob("runs/*/outcome.json")) or not faulty.alive()  # noqa: E731
        wait_until(outcome, 600, "the run's outcome")
        faulty.end("run_finished", within_s=30.0)  # the daemon reads the outcome and dies before recording it
        assert any(faulty.tmp.glob("runs/*/outcome.json"))
        # Where the kill fell: the run ended, the journal still says it runs and holds no promotion.
        assert list(run_states(faulty).values()) == [runs.RunState.RUNNING]
        assert count(faulty, lambda j: len(j.promotions("faults-detector"))) == 0
    else:
        synthetic.generate(data, count=8, seed=5)
        faulty.start_armed("promotion_done@1")  # inherited by the pipeline's promotion step
        wait_until(lambda: any(faulty.tmp.glob("runs/*/pid.json")), 120, "the run to start", explain=faulty.explain)
        faulty.kill()  # the daemon goes first; the pipeline trains on and its promotion step dies after the move
        wait_until(lambda: _children_gone(faulty), 600, "the pipeline's end", explain=faulty.explain)
        [outcome] = faulty.tmp.glob("runs/*/outcome.json")
        # Where the kill fell: after the alias moved (MLflow's champion is v1, checked below) and before the
        # step reported its decision (the run failed with none).
        assert json.loads(outcome.read_text())["state"] == "failed"
        assert champion_in_mlflow(faulty) == "1"
    assert faulty.fired(boundary) == 1  # the kill point was reached, in the daemon or in the pipeline's step
    champion = champion_in_mlflow(faulty)
    assert champion == "1"
    template = tmp_path_factory.mktemp("template") / "state"
    shutil.copytree(faulty.tmp, template, ignore=shutil.ignore_patterns("daemon-*.log"))
    kills = 0
    for _ in range(ITERATIONS):
        shutil.rmtree(faulty.tmp / "runs")
        for name in ("journal.db", "journal.db-wal", "journal.db-shm"):
            (faulty.tmp / name).unlink(missing_ok=True)
            if (template / name).exists():
                shutil.copy(template / name, faulty.tmp / name)
        shutil.copytree(template / "runs", faulty.tmp / "runs")
        recorded = lambda: count(faulty, lambda j: sum(r.state.final for r in j.runs())) > 0  # noqa: E731
        for _ in range(rng.randint(1, 3)):  # killed at a random moment of its recovery, once or more
            faulty.start_armed(None)
            faulty.wait_started()
            time.sleep(rng.uniform(0.0, 1.5))
            faulty.kill()
            kills += 1
        faulty.start_armed(None)  # the last life is left to finish the recovery
        faulty.wait_started()  # (a killed life may have recorded it already)
        wait_until(recorded, 120, "the run to be recorded")
        assert faulty.terminate() == 0
        journal = faulty.journal()
        try:
            [run] = journal.runs()
            promotions = journal.promotions("faults-detector")
        finally:
            journal.close()
        expected = runs.RunState.SUCCEEDED if boundary == "run_finished" else runs.RunState.FAILED
        assert run.state is expected, run
        assert [(p.kind, p.version, p.run_key) for p in promotions] == [("promoted", champion, run.run_key)]
        assert champion_in_mlflow(faulty) == champion
    report(boundary, faulty, boundary, restarts_killed_at_random=kills, promotion_records=1, champion=f"v{champion}")


def _children_gone(faulty: FaultyDaemon) -> bool:
    for pid_file in (faulty.tmp / "runs").glob("*/pid.json"):
        if Path(f"/proc/{json.loads(pid_file.read_text())['pid']}").exists():
            return False
    return True


OPEN_STORE = """
import sys
from daemon.registry import mlflow as registry
registry.Mlflow(tracking_uri=sys.argv[1]).registered_by("faults-detector", "any-run")
"""


def test_killed_while_creating_the_local_mlflow_store(tmp_path: Path) -> None:
    """On a laptop the registry is a SQLite file that MLflow creates, and migrates in many steps, on first use.
    A process killed in the middle (the daemon, a pipeline step) once left a half-created file that every
    later open refused ("table ... already exists"), reported as "MLflow unavailable" for ever: every run's
    outcome stayed pending (CI caught it in the launch test). FAULT_ITERATIONS times, a process opening a new store is
    killed at a random moment after the store's first file appears; each time the next open works."""
    from daemon.registry import mlflow as registry

    rng = random.Random(SEED + 7)
    killed_while_creating = 0
    for index in range(ITERATIONS):
        folder = tmp_path / f"store-{index}"
        folder.mkdir()
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        opener = subprocess.Popen([sys.executable, "-c", OPEN_STORE, uri], cwd=folder, stderr=subprocess.DEVNULL)
        started = lambda folder=folder, opener=opener: any(folder.iterdir()) or opener.poll() is not None  # noqa: E731
        wait_until(started, 120, "the store's first file")  # type: ignore[misc]
        time.sleep(rng.uniform(0.0, 0.6))
        if opener.poll() is None:
            opener.kill()
            killed_while_creating += 1
        opener.wait(30)
        try:
            assert registry.Mlflow(tracking_uri=uri).registered_by("faults-detector", "any-run") is None
        except Exception as exc:
            raise AssertionError(
                f"iteration {index}: the store left by the killed process cannot be opened: {exc}"
            ) from exc
    assert killed_while_creating >= ITERATIONS // 2, "the kills missed the creation: the test proves nothing"
    print(
        f"\n[faults] mlflow store: {ITERATIONS} iterations (seed {SEED}): "
        f"{killed_while_creating} killed while creating, every next open worked"
    )


# --- services failing under the daemon -------------------------------------------------------------------
def test_s3_down_for_30_seconds_mid_stream(faulty: FaultyDaemon) -> None:
    """Uploads stream in, the S3 server stops for 30 s, comes back, uploads go on: the daemon stays alive,
    reports the outage (readiness, source status), and the reconcile catches up with every object once."""
    from io import BytesIO

    from tests.support import services

    server = services.S3Server(workdir=faulty.tmp / "s3").start()
    try:
        client = server.client()
        client.make_bucket("data")
        (faulty.tmp / "rules" / "faults.yaml").write_text(QUIET_RULE.format(source="s3://data/pets/"))
        faulty.env.update(
            RETRAIN_SOURCES__S3__ENDPOINT=server.endpoint,
            RETRAIN_SOURCES__S3__SECURE="false",
            RETRAIN_SOURCES__S3__ACCESS_KEY=server.access_key,
            RETRAIN_SOURCES__S3__SECRET_KEY=server.secret_key,
            RETRAIN_SOURCES__S3__CONNECT_TIMEOUT_S="1",
            RETRAIN_SOURCES__RECONCILE_INTERVAL_S="1",
        )
        faulty.start_armed(None)
        base = f"http://127.0.0.1:{faulty.port()}"

        def upload(start: int, stop: int) -> None:
            for i in range(start, stop):
                body = b"0 0.5 0.5 0.2 0.2\n"
                client.put_object("data", f"pets/labels/train/{i:04d}.txt", BytesIO(body), len(body))
                time.sleep(0.05)

        upload(0, 40)
        wait_until(
            lambda: count(faulty, lambda j: j.event_count()) == 40,
            60,
            "40 events before the outage",
            explain=faulty.explain,
        )
        server.stop()
        down_at = time.monotonic()
        unready = alive = 0
        while time.monotonic() - down_at < 30:
            alive += httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            ready = httpx.get(f"{base}/readyz", timeout=5)
            if ready.status_code == 503:
                unready += 1
                assert any(name.startswith("source s3_reconcile:") for name in ready.json()["checks"])
            time.sleep(1)
        assert faulty.process is not None and faulty.process.poll() is None
        assert unready > 0 and alive >= 25
        server.start()
        upload(40, 80)
        wait_until(
            lambda: count(faulty, lambda j: j.event_count()) == 80,
            120,
            "80 events after the outage",
            explain=faulty.explain,
        )
        wait_until(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200, 60, "readiness again")
        stays(lambda: count(faulty, lambda j: j.event_count()) == 80, 2, "no object journaled twice")
        journaled = count(faulty, lambda j: j.event_count())
        assert faulty.terminate() == 0
    finally:
        server.stop()
    assert journaled == 80
    print(f"\n[faults] S3 down 30 s: {unready} unready probes, {alive} live probes, 80/80 objects journaled once")


def test_mlflow_down_during_promotion(
    faulty: FaultyDaemon, s3_server: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """MLflow stops when the pipeline reaches its evaluate-and-promote step: the run fails with a clear error,
    the daemon keeps the outcome pending until MLflow answers, and nothing is promoted, in MLflow or in the
    journal."""
    from tests.support import services

    mlflow = services.MlflowServer(workdir=tmp_path_factory.mktemp("mlflow-faults"), s3=s3_server).start()  # type: ignore[arg-type]
    try:
        data = faulty.tmp / "data"
        synthetic.generate(data, count=8, seed=9)
        (faulty.tmp / "rules" / "faults.yaml").write_text(LAUNCH_RULE.format(data=data))
        faulty.env.update(RETRAIN_MLFLOW__TRACKING_URI=mlflow.url, RETRAIN_MLFLOW__MAX_RETRIES="1")
        faulty.start_armed(None)
        base = f"http://127.0.0.1:{faulty.port()}"
        wait_until(lambda: any(faulty.tmp.glob("runs/*/log.txt")), 120, "the run", explain=faulty.explain)
        [log] = faulty.tmp.glob("runs/*/log.txt")
        wait_until(
            lambda: "'evaluate-and-promote'" in _plain(log.read_text(errors="replace")), 600, "the promotion step"
        )
        mlflow.stop()
        wait_until(lambda: any(faulty.tmp.glob("runs/*/outcome.json")), 600, "the run's end", explain=faulty.explain)
        [outcome] = faulty.tmp.glob("runs/*/outcome.json")
        assert json.loads(outcome.read_text())["state"] == "failed"
        wait_until(
            lambda: bool(faulty.logged("run_outcome_pending")),
            60,
            "the outcome to wait for MLflow",
            explain=faulty.explain,
        )
        stays(  # the outcome waits for MLflow: was anything promoted?
            lambda: count(faulty, lambda j: sum(not r.state.final for r in j.runs())) == 1, 3, "the run pending"
        )
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
        assert faulty.logged("run_outcome_pending")
        mlflow.start()
        wait_until(
            lambda: count(faulty, lambda j: sum(r.state.final for r in j.runs())) == 1,
            120,
            "the record",
            explain=faulty.explain,
        )
        journal = faulty.journal()
        try:
            [run] = journal.runs()
            assert run.state is runs.RunState.FAILED
            assert run.error and "evaluate-and-promote" in run.error
            assert journal.promotions() == []
        finally:
            journal.close()
        from daemon.registry import mlflow as registry

        assert registry.Mlflow(tracking_uri=mlflow.url).champion("faults-detector") is None
        assert faulty.terminate() == 0
    finally:
        mlflow.stop()
        faulty.kill_pipelines()
    print("\n[faults] MLflow down during promotion: run failed, outcome held until MLflow answered, nothing promoted")


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.services
def test_launcher_errors_after_the_run_was_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: services.S3Server, s3_bucket: str
) -> None:
    """The KFP API creates each run but the reply is lost (504): the daemon finds the run by its name on the
    next pass and never creates a second one."""
    from daemon import reactor, settings
    from tests.support.kfp_standin import KfpStandIn

    for name in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(name, raising=False)
    standin = KfpStandIn().start()
    standin.lose_create_replies = ITERATIONS
    data = tmp_path / "data"
    (data / "labels" / "train").mkdir(parents=True)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pets.yaml").write_text(
        f"name: pets\ndataset: {{source: 'file://{data}'}}\nmodel: {{registered_name: kfp-detector}}\n"
        "triggers: [{new_labels: {min_new_labels: 1, quiet_period: 0s}}]\n"
        "limits: {cooldown: 0s, max_concurrent_runs: 100}\n"
    )
    config = settings.load(
        environ={},
        overrides=[
            f"journal.path={tmp_path / 'journal.db'}",
            f"rules.path={tmp_path / 'rules'}",
            "kfp.launcher=kfp",
            f"kfp.host={standin.url}",
            f"kfp.inputs_uri=s3://{s3_bucket}/inputs/",
            f"sources.s3.endpoint={s3_server.endpoint}",
            "sources.s3.secure=false",
            f"sources.s3.access_key={s3_server.access_key}",
            f"sources.s3.secret_key={s3_server.secret_key}",
            "kfp.poll_interval_s=0.1",
            f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"kfp.local_pipeline_root={tmp_path / 'runs'}",
        ],
    )
    daemon = reactor.Reactor(config)
    daemon.refresh_rules(force=True)
    daemon.supervisor.work()
    try:
        for index in range(ITERATIONS):
            (data / "labels" / "train" / f"{index:03d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
            deadline = time.monotonic() + 30
            while len([r for r in daemon.journal.runs(limit=1000) if r.state is runs.RunState.RUNNING]) <= index:
                assert time.monotonic() < deadline, "the run was not recorded"
                daemon.step()
                daemon.launching.work()
                time.sleep(0.2)
        journal_runs = daemon.journal.runs(limit=1000)
    finally:
        daemon.shutdown()
        standin.shutdown()
        standin.server_close()
    names = Counter(run["display_name"] for run in standin.runs.values())
    assert len(journal_runs) == ITERATIONS == len(names)
    assert max(names.values()) == 1  # every run created once, though every create "failed"
    assert {r.backend_run_id for r in journal_runs} == set(standin.runs)
    assert standin.lose_create_replies == 0
    print(f"\n[faults] lost KFP create replies: {ITERATIONS} runs, {ITERATIONS} lost replies, 0 duplicate runs")


def test_inotify_overflow_is_recovered_by_a_rescan(faulty: FaultyDaemon) -> None:
    """The daemon is frozen (SIGSTOP) while more files land than the kernel's inotify queue holds; after it
    resumes, the overflow is noticed and a rescan journals every file."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    data = faulty.tmp / "data" / "labels" / "train"
    data.mkdir(parents=True)
    (faulty.tmp / "rules" / "faults.yaml").write_text(QUIET_RULE.format(source=f"file://{data.parent.parent}"))
    faulty.env["RETRAIN_SOURCES__FOLDER_RESCAN_INTERVAL_S"] = "3600"  # only an overflow may trigger a rescan
    faulty.start_armed(None)
    faulty.wait_started()
    assert faulty.process is not None
    faulty.process.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{faulty.process.pid}/stat")
    wait_until(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T", 10, "the daemon to be stopped")
    files = limit // 2 + 1000  # each file is at least a create and a close-write event
    try:
        for i in range(files):
            (data / f"{i:06d}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    finally:
        faulty.process.send_signal(signal.SIGCONT)
    wait_until(
        lambda: count(faulty, lambda j: j.event_count()) >= files, 300, f"{files} events", explain=faulty.explain
    )
    stays(lambda: count(faulty, lambda j: j.event_count()) == files, 2, "no file journaled twice")
    journaled = count(faulty, lambda j: j.event_count())
    overflows = faulty.logged("folder_rescan_after_overflow")
    assert faulty.terminate() == 0
    assert overflows, f"the kernel queue did not overflow ({files} files):\n{faulty.log_tail()}"
    assert journaled == files
    print(f"\n[faults] inotify overflow: {files} files against a queue of {limit} events, {journaled} journaled")
