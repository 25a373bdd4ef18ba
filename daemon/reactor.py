"""The reactor: wires sources, journal, engine and launcher into the long-running daemon (`retrain up`).

One place starts everything and handles stopping:

1. start-up recovery: every run the journal holds as intended/submitted/running is resolved against the
   launcher by its run key (an intent that never reached the launcher is submitted now; a run that the
   launcher knows is recorded; a run whose process died is abandoned), then sources start with a scan;
2. the loop, once per ``tick_s`` and at once when a source journals new events: reload changed rule
   files (and re-sync schedules and folders), run due drift checks and reconciles, decide for every rule
   (launch: intent journaled first, then the manifest, then the launcher), and watch active runs until
   their outcome is journaled;
3. stop (SIGTERM/SIGINT): take no new work, finish the journal write in progress, leave running pipelines
   alone (the next start re-attaches), and return within ``shutdown.timeout_s``.

Every failure inside the loop becomes a log line (and a journaled outcome where it concerns a run); only a
stop ends the loop.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon import __version__, constants, errors, failpoints, logs, settings
from daemon.engine import deciding
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base
from daemon.journal import sqlite
from daemon.launchers import base as launcher_base
from daemon.launchers import local
from daemon.model import decisions, ids, outcomes, rules, runs
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.sources import base as source_base
from daemon.sources import datasets, drifting, listening, reconciling, s3, scheduling, watching

log = logs.get_logger(__name__)

PROGRESS_MARK = constants.PROGRESS_MARK

#: The shortest time between two loop passes, in seconds, when events wake the loop early.
MIN_PASS_GAP_S = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


def child_environment(config: settings.Settings, environ: Mapping[str, str] | None) -> dict[str, str]:
    """The environment of pipeline children: the daemon's, with the S3 credentials as AWS_* variables
    (what the pipeline's materialize step reads, as it does from a Kubernetes Secret on the cluster)."""
    env = dict(os.environ if environ is None else environ)
    s3 = config.sources.s3
    if s3.access_key is not None:
        env["AWS_ACCESS_KEY_ID"] = s3.access_key.get_secret_value()
    if s3.secret_key is not None:
        env["AWS_SECRET_ACCESS_KEY"] = s3.secret_key.get_secret_value()
    return env


def absolute_tracking_uri(uri: str) -> str:
    """A relative ``sqlite:///path`` made absolute: pipeline children run in their own folders."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


class Reactor:
    """The daemon. ``run()`` blocks until ``stop()``.

    Args:
        config: the settings.
        clock: the current time (aware).
        tick_s: seconds between two passes of the loop.
        environ: the environment pipeline children inherit (default: this process's).
    """

    def __init__(
        self,
        config: settings.Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        tick_s: float = 1.0,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.tick_s = tick_s
        self._stopping = threading.Event()
        registry.configure(config.mlflow)
        self.journal = sqlite.SqliteJournal(config.journal.path, busy_timeout_s=config.journal.busy_timeout_s)
        self.board = source_base.StatusBoard()
        self._wake = threading.Event()
        self.sink = source_base.EventSink(journal=self.journal, board=self.board, clock=clock, on_new=self._wake.set)
        self.rulebook = reloading.RuleBook(config.rules.path)
        self.runs_root = config.kfp.local_pipeline_root
        self.launcher: launcher_base.Launcher = self._make_launcher(environ)
        self.tracking_uri = absolute_tracking_uri(config.mlflow.tracking_uri)
        self.schedules = scheduling.ScheduleSource(journal=self.journal, board=self.board, clock=clock)
        self.drift = drifting.DriftChecker(
            journal=self.journal,
            board=self.board,
            clock=clock,
            metrics=registry.MlflowMetrics(tracking_uri=self.tracking_uri, registry_uri=config.mlflow.registry_uri),
        )
        self.registry = registry.MlflowRegistry(tracking_uri=self.tracking_uri, registry_uri=config.mlflow.registry_uri)
        self.folders: dict[str, watching.FolderSource] = {}
        self.reconcilers: dict[str, reconciling.S3Reconciler] = {}
        self.listeners: dict[str, listening.MinioListener] = {}
        self._store: s3.S3Store | None = None
        self._reconcile_now = threading.Event()
        self._http: Any = None
        self._http_socket: Any = None
        self._threads: list[threading.Thread] = []
        self._progress: dict[str, int] = {}
        self._backoff: dict[str, tuple[int, float]] = {}  # run key -> (failed polls, monotonic time of next poll)
        self._overdue: set[str] = set()
        self.last_loop_at: datetime | None = None
        self._last_pass = time.monotonic()
        self.http_port: int | None = None
        """The port the HTTP server listens on (after ``run()`` started it)."""
        self.metrics = metrics_.Metrics(
            board=self.board,
            journal=self.journal,
            rulebook=self.rulebook,
            clock=clock,
            since_last_pass=self.since_last_pass,
        )

    def _make_launcher(self, environ: Mapping[str, str] | None) -> launcher_base.Launcher:
        config = self.config
        if config.kfp.launcher == "kfp":
            if not config.kfp.host:
                raise errors.ConfigError("launcher kfp needs kfp.host (RETRAIN_KFP__HOST)", field="kfp.host")
            from daemon.launchers import kfp as kfp_launcher

            return kfp_launcher.KfpLauncher(
                host=config.kfp.host,
                namespace=config.kfp.namespace,
                token=config.kfp.token.get_secret_value() if config.kfp.token else None,
                use_service_account_token=config.kfp.use_service_account_token,
                package_for=self._package_for,
            )
        return local.LocalLauncher(
            root=self.runs_root,
            max_concurrent=config.kfp.local_max_concurrent_runs,
            env=child_environment(config, environ),
        )

    def _package_for(self, spec: dict[str, Any]) -> Path:
        """The compiled IR YAML for a spec's shape (cluster settings from the configuration)."""
        from pipelines import training

        shape = training.Shape(**spec["shape"])
        path = self.runs_root / "pipelines" / f"tune{int(shape.tune)}-p{shape.parallelism}-g{shape.gpus}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        return training.compile_to(path, image=self.config.kfp.trainer_image, config=self.config.pipeline, shape=shape)

    # --- life cycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to end (signal handlers call this)."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def since_last_pass(self) -> float:
        """Seconds since the loop completed a pass (or since the daemon was created, before the first)."""
        return time.monotonic() - self._last_pass

    def run(self) -> None:
        """Serve until :meth:`stop`. Raises :class:`~daemon.errors.ConfigError` when the HTTP port is taken."""
        log.info("daemon_starting", version=__version__, journal=str(self.config.journal.path))
        self._last_pass = time.monotonic()
        try:
            self._serve_http()
        except errors.RetrainError:
            self.launcher.close()
            self.journal.close()
            raise
        self.rulebook.refresh()
        self.recover()
        self._sync_sources()
        self.schedules.start()
        self.schedules.catch_up({n: r.rule for n, r in self.rulebook.rules.items()}, now=self.clock())
        self._start_background()
        log.info("daemon_started", rules=sorted(self.rulebook.rules))
        try:
            while not self._stopping.is_set():
                self.step()
                # Sleep a tick, or less when new events arrive: a label that lands is decided on at once
                # (after a short gap, so a burst of deliveries is taken in a few passes, not one per batch).
                self._wake.wait(self.tick_s)
                self._wake.clear()
                self._stopping.wait(MIN_PASS_GAP_S)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        deadline = time.monotonic() + self.config.shutdown.timeout_s
        self.schedules.stop()
        for source in self.folders.values():
            source.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        for listener in self.listeners.values():
            listener.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        if self._http is not None:
            self._http.should_exit = True
        self._reconcile_now.set()
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if self._http_socket is not None:
            self._http_socket.close()
        self.launcher.close()
        self.journal.close()
        log.info("daemon_stopped", note="running pipelines are left alone; the next start re-attaches")

    def step(self) -> None:
        """One pass of the loop; never raises for a bad rule, a source or a run."""
        try:
            if self.rulebook.refresh().changed:
                self._sync_sources()
            rule_map = {name: loaded.rule for name, loaded in self.rulebook.rules.items()}
            self.drift.run_due(rule_map)
            for rule in rule_map.values():
                if self._stopping.is_set():
                    return
                self.decide(rule)
            self.watch()
        except errors.RetrainError as exc:
            self.metrics.loop_errors.inc()
            log.warning("loop_step_failed", error=str(exc), action="will retry next tick")
        except Exception:  # a bug or an unexpected library error must not stop the daemon
            self.metrics.loop_errors.inc()
            log.exception("loop_step_crashed", action="will retry next tick")
        self.last_loop_at = self.clock()
        self._last_pass = time.monotonic()

    def _sync_sources(self) -> None:
        rule_map = {name: loaded.rule for name, loaded in self.rulebook.rules.items()}
        self.schedules.sync(rule_map)
        found, problems = datasets.locations(rule_map.values())
        for problem in problems:
            log.warning("dataset_conflict", error=problem.render())
        for name, location in found.items():
            if location.path is not None and name not in self.folders:
                source = watching.FolderSource(
                    location=location,
                    sink=self.sink,
                    clock=self.clock,
                    polling=self.config.sources.folder_polling,
                    poll_interval_s=self.config.sources.folder_poll_interval_s,
                    rescan_interval_s=self.config.sources.folder_rescan_interval_s,
                )
                try:
                    source.start()
                except errors.PermanentError as exc:
                    log.error(
                        "folder_not_watched", dataset=name, error=str(exc), action="retried on the next rule reload"
                    )
                    continue
                self.folders[name] = source
                log.info("folder_watched", dataset=name, path=str(location.path))
            elif location.bucket is not None and name not in self.reconcilers:
                store = self._s3_store()
                if store is None:
                    log.error(
                        "s3_dataset_not_watched",
                        dataset=name,
                        reason="an s3:// dataset needs sources.s3.endpoint (RETRAIN_SOURCES__S3__ENDPOINT)",
                    )
                    continue
                self.reconcilers[name] = reconciling.S3Reconciler(
                    store=store, location=location, sink=self.sink, clock=self.clock
                )
                self._reconcile_now.set()
                if self.config.sources.minio_listen and location.bucket not in self.listeners:
                    listener = listening.MinioListener(
                        client=store.client,
                        endpoint=store.endpoint,
                        bucket=location.bucket,
                        locations=self._locations,
                        sink=self.sink,
                        on_gap=lambda bucket: self._reconcile_now.set(),
                    )
                    listener.start()
                    self.listeners[location.bucket] = listener
        for name in set(self.folders) - set(found):
            self.folders.pop(name).stop()
        for name in set(self.reconcilers) - set(found):
            del self.reconcilers[name]

    def _locations(self) -> dict[str, datasets.DatasetLocation]:
        found, _ = datasets.locations(loaded.rule for loaded in self.rulebook.rules.values())
        return found

    def _s3_store(self) -> s3.S3Store | None:
        if self._store is None and self.config.sources.s3.endpoint:
            self._store = s3.S3Store(s3.make_client(self.config.sources.s3), endpoint=self.config.sources.s3.endpoint)
        return self._store

    def _start_background(self) -> None:
        """The reconcile thread."""
        thread = threading.Thread(target=self._reconcile_loop, name="reconcile", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_http(self) -> None:
        """Start the HTTP server (probes, metrics, webhook, API) on its own thread; the port is bound here,
        so a taken port fails the start with a clear message instead of a log line in a thread."""
        http = self.config.http
        if not http.enabled:
            return
        import socket

        import uvicorn

        from daemon.http import app as http_app
        from daemon.sources import webhook

        family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((http.host, http.port))
        except OSError as exc:
            sock.close()
            raise errors.ConfigError(
                f"cannot listen on {http.host}:{http.port}: {exc.strerror or exc}; choose another http.port "
                "(RETRAIN_HTTP__PORT) or stop what uses it",
                field="http.port",
            ) from exc
        self.http_port = int(sock.getsockname()[1])
        webhook_token = self.config.sources.webhook_token
        api_token = http.api_token
        context = http_app.Context(
            journal=self.journal,
            rulebook=self.rulebook,
            board=self.board,
            metrics=self.metrics,
            registry=self.registry,
            receiver=webhook.WebhookReceiver(
                token=webhook_token.get_secret_value() if webhook_token else None,
                max_body_bytes=self.config.sources.webhook_max_body_bytes,
                sink=self.sink,
                locations=self._locations,
            ),
            api_token=api_token.get_secret_value() if api_token else None,
            clock=self.clock,
            since_last_pass=self.since_last_pass,
            liveness_timeout_s=http.liveness_timeout_s,
        )
        server = uvicorn.Server(
            uvicorn.Config(http_app.create_app(context), log_level="warning", access_log=False, lifespan="off")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="http", daemon=True)
        thread.start()
        self._http = server
        self._http_socket = sock
        self._threads.append(thread)
        log.info(
            "http_listening",
            host=http.host,
            port=self.http_port,
            webhook="on" if webhook_token else "off (set sources.webhook_token)",
            api_writes="on" if api_token else "off (set http.api_token)",
        )

    def _reconcile_loop(self) -> None:
        """Reconcile every S3 dataset at start-up, every reconcile_interval_s, and after a listen gap."""
        while not self._stopping.is_set():
            self._reconcile_now.clear()
            for name, reconciler in list(self.reconcilers.items()):
                if self._stopping.is_set():
                    return
                try:
                    reconciler.run_once()
                except errors.RetrainError as exc:
                    log.warning("reconcile_failed", dataset=name, error=str(exc), action="retry next interval")
                except Exception:  # keep the thread alive whatever the library raised
                    log.exception("reconcile_crashed", dataset=name, action="retry next interval")
            self._reconcile_now.wait(self.config.sources.reconcile_interval_s)

    # --- deciding and launching ---------------------------------------------------------------------
    def decide(self, rule: rules.Rule) -> decisions.Decision:
        now = self.clock()
        with logs.bound(rule=rule.name):
            st = self.journal.rule_state(rule, now=now)
            decision = deciding.decide(rule, st, now)
            if isinstance(decision, decisions.Skip):
                self.metrics.decisions.labels(rule.name, "skip", decision.code.value).inc()
                previous = self.journal.decisions(rule.name, limit=1)
                self.journal.record_skip(decision, at=now)
                if not previous or previous[0].code != decision.code.value:
                    log.info("rule_waiting", code=decision.code.value, reason=decision.reason)
                return decision
            if not self.journal.record_intent(decision, at=now):
                return decision
            failpoints.hit("intent_written")
            self.metrics.decisions.labels(rule.name, "launch", decision.trigger).inc()
            log.info("rule_fired", run_key=decision.run_key, trigger=decision.trigger, reason=decision.reason)
            if st.pending.last_at is not None and decision.trigger == "new_labels":
                latency = (self.clock() - st.pending.last_at).total_seconds()
                self.metrics.launch_latency.labels(decision.trigger).observe(max(0.0, latency))
            self.submit(rule, decision.run_key)
            return decision

    def spec_for(self, rule: rules.Rule, run: runs.RunRecord) -> dict[str, Any]:
        """The launcher spec of a run: its manifest file, written from the journal, and the arguments."""
        from pipelines import training

        folder = self.runs_root / run.run_key
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        items = self.journal.snapshot_of(run.snapshot) if run.snapshot else []
        manifest = {
            "dataset": rule.dataset_name,
            "source": rule.dataset.source,
            "fingerprint": run.snapshot or "",
            "items": [list(item) for item in items or []],
            "classes": rule.dataset.classes,
        }
        manifest_path.write_text(json.dumps(manifest))
        s3 = self.config.sources.s3
        return {
            "image": self.config.kfp.trainer_image,
            "shape": dataclasses.asdict(training.Shape.of(rule)),
            "pipeline": self.config.pipeline.model_dump(mode="json") | {"retries": 0},
            "arguments": training.arguments(
                rule=rule,
                run_key=run.run_key,
                manifest_uri=f"file://{manifest_path.resolve()}",
                mlflow_tracking_uri=self.tracking_uri,
                s3_endpoint=s3.endpoint or "",
                s3_secure=s3.secure,
                code_version=__version__,
            ),
        }

    def submit(self, rule: rules.Rule, run_key: ids.RunKey) -> None:
        run = self.journal.get_run(run_key)
        if run is None:
            return
        try:
            status = self.launcher.submit(run_key, self.spec_for(rule, run))
        except errors.TemporaryError as exc:
            log.info("run_waiting_for_launcher", run_key=run_key, reason=str(exc))
            return
        failpoints.hit("submitted")
        self.journal.update_run(
            run_key,
            runs.RunState.RUNNING,
            at=self.clock(),
            backend=self.launcher.name,
            backend_run_id=status.backend_run_id,
        )

    # --- watching and recovering --------------------------------------------------------------------
    def watch(self) -> None:
        """Move active runs forward from what the launcher knows; journal outcomes."""
        rule_map = self.rulebook.rules
        for run in self.journal.runs(states=runs.ACTIVE, limit=1000):
            with logs.bound(rule=run.rule, run_key=run.run_key):
                if time.monotonic() < self._backoff.get(run.run_key, (0, 0.0))[1]:
                    continue
                try:
                    status = self.launcher.find(run.run_key)
                except errors.TemporaryError as exc:
                    failures = self._backoff.get(run.run_key, (0, 0.0))[0] + 1
                    wait = min(300.0, self.config.kfp.poll_interval_s * 2 ** min(failures - 1, 8))
                    self._backoff[run.run_key] = (failures, time.monotonic() + wait)
                    log.warning("run_poll_failed", error=str(exc), retry_in_s=wait)
                    continue
                self._backoff.pop(run.run_key, None)
                if status is None:
                    loaded = rule_map.get(run.rule)
                    if loaded is None:
                        self.journal.update_run(
                            run.run_key, runs.RunState.ABANDONED, at=self.clock(), error="its rule no longer exists"
                        )
                        log.warning("run_abandoned", reason="rule removed before the run could start")
                    else:
                        self.submit(loaded.rule, run.run_key)  # an intent the launcher never received
                    continue
                self._report_progress(run.run_key)
                if status.state is runs.RunState.RUNNING:
                    overdue = (self.clock() - run.created_at).total_seconds() > self.config.kfp.run_timeout_s
                    if overdue and run.run_key not in self._overdue:
                        self._overdue.add(run.run_key)
                        log.warning(
                            "run_overdue",
                            running_s=round((self.clock() - run.created_at).total_seconds()),
                            limit_s=self.config.kfp.run_timeout_s,
                            action="reported, not killed: stop it in KFP (or kill its process) to free the rule",
                        )
                    if run.state is not runs.RunState.RUNNING:
                        self.journal.update_run(
                            run.run_key,
                            runs.RunState.RUNNING,
                            at=self.clock(),
                            backend=self.launcher.name,
                            backend_run_id=status.backend_run_id,
                        )
                    continue
                try:
                    self.finish(run, status)
                except errors.TemporaryError as exc:
                    log.warning("run_outcome_pending", error=str(exc), action="recorded once MLflow answers")

    def finish(self, run: runs.RunRecord, status: launcher_base.RunStatus) -> None:
        failpoints.hit("run_finished")
        now = self.clock()
        output = status.output or self._outcome_from_registry(run, status)
        promotion: dict[str, Any] = {
            k: output[k] for k in ("decision", "reason", "version", "previous_champion") if k in output
        }
        model = str(output.get("model", ""))
        record = None
        if promotion and (status.state is runs.RunState.SUCCEEDED or promotion.get("decision") == "promoted"):
            record = journal_base.PromotionRecord(
                model=model,
                version=promotion.get("version"),
                previous_version=promotion.get("previous_champion"),
                run_key=run.run_key,
                kind=outcomes.PromotionKind(str(promotion.get("decision"))),
                actor="daemon",
                reason=str(promotion.get("reason")),
                metrics=output.get("candidate") or {},
                at=now,
            )
        self.journal.update_run(
            run.run_key,
            status.state,
            at=now,
            backend=self.launcher.name,
            backend_run_id=status.backend_run_id,
            metrics=output.get("candidate") or {},
            promotion=promotion,
            error=status.error,
            record=record,
        )
        if record is not None:
            self.metrics.promotions.labels(model, record.kind).inc()
            succeeded = status.state is runs.RunState.SUCCEEDED
            (log.info if succeeded else log.warning)(
                "run_succeeded" if succeeded else "run_ended_after_promotion",
                state=status.state.value,
                model=model,
                version=promotion.get("version"),
                decision=promotion.get("decision"),
                reason=promotion.get("reason"),
            )
        else:
            log.warning("run_ended", state=status.state.value, error=errors.truncate(status.error or ""))

    def _outcome_from_registry(self, run: runs.RunRecord, status: launcher_base.RunStatus) -> dict[str, Any]:
        """The gate's outcome from the model version the run registered, for a run that left no outcome file:
        a cluster run (the pipeline's own record is in MLflow), or a run whose process died after its
        promotion step. A dead run counts as promoted only if the champion alias really points at its
        version. Raises what the registry raises (MLflow down: the run stays active and is retried)."""
        loaded = self.rulebook.rules.get(run.rule)
        if loaded is None:
            return {}
        model = loaded.rule.model.registered_name
        found = self.registry.outcome_of(model, run.run_key)
        if not found or status.state is runs.RunState.SUCCEEDED:
            return found
        if self.registry.champion(model) != found["version"]:
            return {}  # registered, never promoted: nothing changed in production
        return found | {
            "decision": "promoted",
            "reason": f"recovered from MLflow: v{found['version']} is champion; the run ended before reporting "
            f"({status.error or status.state.value}). {found.get('reason') or ''}".strip(),
        }

    def _report_progress(self, run_key: str) -> None:
        """Log the training progress lines the pipeline child printed since last time."""
        path = self.runs_root / run_key / "log.txt"
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return
        seen = self._progress.get(run_key, 0)
        for line in lines[seen:]:
            if PROGRESS_MARK in line:
                try:
                    progress = json.loads(line.split(PROGRESS_MARK, 1)[1])
                except ValueError:
                    continue
                log.info("training_progress", run_key=run_key, **progress)
        self._progress[run_key] = len(lines)

    def recover(self) -> None:
        """Resolve every active run of the journal against the launcher (start-up, before anything new)."""
        for run in self.journal.runs(states=runs.ACTIVE, limit=1000):
            status = self.launcher.find(run.run_key)
            log.info(
                "run_recovered",
                run_key=run.run_key,
                journal_state=run.state.value,
                launcher_state=status.state.value if status else "never submitted",
            )
        self.watch()
