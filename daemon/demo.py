"""`make run`: the daemon on its embedded laptop set-up, fed a demo dataset in two batches.

Everything lives under ``.retrain/demo/`` in the project: a watched folder (``data/``), one rule
(``rules/demo.yaml``), the journal, MLflow on a SQLite file, the local pipeline runs and the settings file
that points the ``retrain`` command at all of them (``RETRAIN_CONFIG``). The demo:

0. starts from a clean ``.retrain/demo/`` (set ``DEMO_KEEP=1`` to keep the last demo's state);
1. starts the daemon (``retrain up`` in this process);
2. drops a first batch of 96 generated images with box labels into the folder, in three bursts: the rule
   waits for the quiet period, fires once, trains (epochs and mAP are logged), and the gate makes the
   first model champion if its mAP50-95 reaches the rule's ``first_model_min`` (0.1);
3. drops a second batch of 48: a second run trains on all 144 and the gate promotes or rejects it by mAP
   against the champion on the same validation images;
4. keeps running as a daemon: drop more files into ``.retrain/demo/data/images`` and ``labels`` (YOLO
   format) and watch it react. Ctrl-C stops it (a running pipeline is left to finish and re-attached on
   the next start).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from daemon import constants, errors, logs, reactor, settings
from daemon.model import runs

DEMO = Path(".retrain/demo")

RULE = """# The demo rule: retrain when 40 new label files have settled for 10 seconds.
name: demo
dataset:
  source: file://{data}
  classes: [red-box, green-box, blue-box]
model:
  registered_name: demo-detector
  base: yolov8n.yaml            # random init from the model config: nothing is downloaded
triggers:
  - new_labels: {{min_new_labels: 40, quiet_period: 10s, max_wait: 10m}}
training: {{epochs: {epochs}, imgsz: 128, batch: 16, gpus: 0}}
promotion: {{metric: map50_95, min_improvement: 0.005, first_model_min: 0.1}}
limits: {{cooldown: 0s, max_concurrent_runs: 1}}
"""


def write_settings(home: Path) -> Path:
    """The demo's settings as a file (absolute paths), so that every ``retrain`` command can be pointed at it."""
    path = home / "settings.yaml"
    path.write_text(
        "# The demo's settings (`make run`). Point any retrain command at them:\n"
        f"#   export {constants.ENV_CONFIG_FILE}={path}\n"
        + yaml.safe_dump(
            {
                "journal": {"path": str(home / "journal.db")},
                "rules": {"path": str(home / "rules")},
                "mlflow": {"tracking_uri": f"sqlite:///{home / 'mlflow.db'}"},
                "kfp": {"local_pipeline_root": str(home / "runs")},
                "logging": {"format": "console"},
            },
            sort_keys=False,
        )
    )
    return path


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def drop_batch(data: Path, *, seed: int, count: int, bursts: int = 3, pause_s: float = 2.0) -> None:
    """Write ``count`` images with labels into the watched folder, in bursts (like a labelling tool)."""
    from pipelines import synthetic

    per = count // bursts
    for burst in range(bursts):
        staging = DEMO / "staging"
        synthetic.generate(staging, count=per, seed=seed * 10 + burst, prefix=f"b{seed}")
        for kind in ("images", "labels"):
            target = data / kind
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((staging / kind).iterdir()):
                os.replace(path, target / path.name)  # renamed into place: complete files only
        print(f"    dropped {per} images + {per} labels into {data} (burst {burst + 1}/{bursts})", flush=True)
        time.sleep(pause_s)


def wait_for_runs(daemon: reactor.Reactor, count: int, timeout_s: float = 900) -> list[runs.RunRecord]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not daemon.stopping:
        done = [r for r in daemon.journal.runs(limit=50) if r.state.final]
        if len(done) >= count:
            return done
        time.sleep(1)
    return [r for r in daemon.journal.runs(limit=50) if r.state.final]


def main() -> int:
    epochs = int(os.environ.get("DEMO_EPOCHS", "30"))
    if not os.environ.get("DEMO_KEEP"):
        shutil.rmtree(DEMO, ignore_errors=True)
    data = (DEMO / "data").resolve()
    (data / "images").mkdir(parents=True, exist_ok=True)
    (data / "labels").mkdir(parents=True, exist_ok=True)
    rules_dir = DEMO / "rules"
    rules_dir.mkdir(parents=True, exist_ok=True)
    (rules_dir / "demo.yaml").write_text(RULE.format(data=data, epochs=epochs))
    settings_file = write_settings(DEMO.resolve())
    api_token = os.environ.get("RETRAIN_HTTP__API_TOKEN")  # the dashboard's buttons; unset: read-only
    config = settings.load(
        environ={"RETRAIN_HTTP__API_TOKEN": api_token} if api_token else {},
        config_file=settings_file,
        overrides=["sources.folder_rescan_interval_s=30", f"http.port={os.environ.get('DEMO_HTTP_PORT', '8080')}"],
    )
    logs.configure(config.logging, stream=sys.stdout)
    fresh = not (DEMO / "journal.db").exists()
    daemon = reactor.Reactor(config)
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    failed: list[errors.RetrainError] = []

    def serve() -> None:
        try:
            daemon.run()
        except errors.RetrainError as exc:
            failed.append(exc)

    thread = threading.Thread(target=serve, name="daemon")
    say(f"retrain daemon on the embedded set-up: folder {data}, rule {rules_dir / 'demo.yaml'}, local kfp runs")
    thread.start()
    time.sleep(3)
    if failed:
        say(f"the daemon could not start: {failed[0]} (DEMO_HTTP_PORT=8081 make run picks another port)")
        return 2
    if daemon.http_port is not None:
        url = f"http://127.0.0.1:{daemon.http_port}"
        buttons = "its buttons use RETRAIN_HTTP__API_TOKEN" if api_token else "read-only: RETRAIN_HTTP__API_TOKEN unset"
        say(f"dashboard: {url}/  (rules, live training curves, every version's mAP; {buttons})")
        say(f"HTTP: {url}/api/v1/status (JSON status), {url}/metrics (Prometheus), {url}/healthz, {url}/readyz")
    if fresh:
        say("batch 1: 96 labelled images arrive in 3 bursts; the rule waits for a 10 s quiet period")
        drop_batch(data, seed=1, count=96)
        say(f"training run 1 ({epochs} epochs on CPU); progress below, then the gate's decision")
        wait_for_runs(daemon, 1)
        say("batch 2: 48 more images; a second run trains on all 144 and is gated against the champion")
        drop_batch(data, seed=2, count=48)
        wait_for_runs(daemon, 2)
        for record in daemon.journal.promotions("demo-detector", limit=5)[::-1]:
            say(f"model version {record.version}: {record.kind} ({record.reason})")
    say(
        f"the daemon keeps running: drop YOLO images/labels into {data}/images and {data}/labels. "
        "In another terminal, point the retrain command at the demo's settings:\n\n"
        f"    export {constants.ENV_CONFIG_FILE}={settings_file}\n"
        "    .venv/bin/retrain status                  # both runs, the gate's decisions, the champion\n"
        "    .venv/bin/retrain explain demo            # what the rule sees now and why\n"
        "    .venv/bin/retrain rollback demo-detector  # champion back to the previous version\n\n"
        "Ctrl-C stops it."
    )
    while thread.is_alive():
        thread.join(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
