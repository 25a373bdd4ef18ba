"""Supervising sources: every dataset the rules name is watched from where the rules say, or reported.

The loop hands over the rules after every reload (:meth:`SourceSupervisor.sync`, cheap); the supervisor's
worker does the rest, away from the loop:

- a watched folder per ``file://`` dataset, an S3 reconciler per ``s3://`` dataset (and a MinIO listen
  stream per bucket with ``sources.minio_listen``);
- a dataset whose location changed (a rule edit) gets a new source; until that source's first scan has
  brought the journal's inventory in line, the dataset carries a problem and its rules wait, so no run is
  launched on the old location's keys;
- a dataset that cannot be watched (its folder missing: a volume not mounted yet; an S3 dataset without an
  endpoint) is recorded with the reason in the journal (rules skip, ``retrain status`` shows it), on the
  status board (``/readyz``, ``/api/v1/sources``, ``retrain_source_connected``) and retried every
  ``sources.unwatched_retry_s``, so a volume mounted later is picked up without a rule edit;
- sources of datasets no rule names any more are stopped.

Reconciles run in their own worker, every ``sources.reconcile_interval_s`` and after every listen gap. The
class counts of S3 label files a rule needs are read by a third worker (:meth:`SourceSupervisor.count_labels`),
woken by every delivery, so a label notified by the webhook or a listen stream is counted within moments, not
at the next reconcile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from daemon import errors, logs, settings
from daemon.journal import base as journal_base
from daemon.model import decisions, rules
from daemon.runtime import working
from daemon.sources import base as source_base
from daemon.sources import datasets, listening, reconciling, s3, watching

log = logs.get_logger(__name__)


def source_name(location: datasets.DatasetLocation) -> str:
    """The status-board name of a dataset's source."""
    return f"folder:{location.name}" if location.path is not None else f"s3_reconcile:{location.name}"


class SourceSupervisor:
    """Keeps the sources in line with the rules.

    Args:
        config: the settings (``sources`` group).
        sink: where sources deliver events.
        store: the S3 adapter (None without an endpoint).
        clock: the current time.
    """

    def __init__(
        self,
        *,
        config: settings.Settings,
        sink: source_base.EventSink,
        store: s3.S3Store | None,
        clock: source_base.Clock,
    ) -> None:
        self.config = config
        self.sink = sink
        self.journal: journal_base.Journal = sink.journal
        self.board = sink.board
        self.store = store
        self.clock = clock
        self._lock = threading.Lock()
        self._wanted: dict[str, datasets.DatasetLocation] = {}
        self._counted: set[str] = set()
        self.folders: dict[str, watching.FolderSource] = {}
        self.reconcilers: dict[str, reconciling.S3Reconciler] = {}
        self.listeners: dict[str, listening.MinioListener] = {}
        self._first_scan: set[str] = set()
        self.reconcile_requested = threading.Event()

    # --- from the loop ------------------------------------------------------------------------------
    def sync(self, rule_map: Mapping[str, rules.Rule]) -> None:
        """Take the datasets of the rules in force (the worker acts on them)."""
        found, problems = datasets.locations(rule_map.values())
        for problem in problems:
            log.warning("dataset_conflict", error=problem.render())
        counted = {
            rule.dataset_name
            for rule in rule_map.values()
            if rule.triggers_of(decisions.TriggerKind.CLASS_DRIFT)
            or any(spec.min_per_class for spec in rule.triggers_of(decisions.TriggerKind.NEW_LABELS))
        }
        with self._lock:
            self._wanted = found
            self._counted = counted

    def counts_needed(self, dataset: str) -> bool:
        """Whether a rule on ``dataset`` uses class counts (per-class minimums, class drift): only then are
        label files read (by the S3 reconcile, and by a folder's watcher as they arrive)."""
        with self._lock:
            return dataset in self._counted

    def locations(self) -> dict[str, datasets.DatasetLocation]:
        """The datasets of the rules in force, by name (the webhook and listen streams map keys with it)."""
        with self._lock:
            return dict(self._wanted)

    # --- the worker's pass ------------------------------------------------------------------------------
    def work(self) -> None:
        wanted = self.locations()
        for name in set(self.folders) - set(wanted):
            self.folders.pop(name).stop()
            log.info("folder_unwatched", dataset=name, reason="no rule names it any more")
        for name in set(self.reconcilers) - set(wanted):
            del self.reconcilers[name]
        for name, location in sorted(wanted.items()):
            with logs.bound(dataset=name):
                self._keep(name, location)
        self._sync_listeners(wanted)

    def _keep(self, name: str, location: datasets.DatasetLocation) -> None:
        folder = self.folders.get(name)
        if folder is not None and (folder.location != location or folder.failed is not None):
            reason = folder.failed or f"its source changed to {location.source}"
            self.folders.pop(name).stop()
            log.warning("folder_restarted", reason=reason)
        reconciler = self.reconcilers.get(name)
        if reconciler is not None and reconciler.location != location:
            del self.reconcilers[name]
        if name in self.folders or name in self.reconcilers:
            return
        changed = self._note_location(name, location)
        if location.path is not None:
            self._start_folder(name, location, changed=changed)
        else:
            self._start_reconciler(name, location, changed=changed)

    def _note_location(self, name: str, location: datasets.DatasetLocation) -> str | None:
        """The journal's record of where the dataset was watched from; a problem text when that changed."""
        before = self.journal.dataset_status(name).source
        if before is not None and before != location.source:
            log.warning("dataset_source_changed", before=before, after=location.source, action="rescanning")
            return f"its source changed from {before} to {location.source}: waiting for the first scan"
        return None

    def _unwatched(self, name: str, location: datasets.DatasetLocation, problem: str) -> None:
        text = f"{problem}; retried every {self.config.sources.unwatched_retry_s:g} s"
        status = self.board.get(source_name(location))
        if status.last_error != text:
            log.error("dataset_not_watched", error=text)
        self.board.update(source_name(location), connected=False, last_error=text)
        self.journal.set_dataset_status(name, source=location.source, problem=text, at=self.clock())

    def _watched(self, name: str, location: datasets.DatasetLocation) -> None:
        self.journal.set_dataset_status(name, source=location.source, problem=None, at=self.clock())

    def _start_folder(self, name: str, location: datasets.DatasetLocation, *, changed: str | None) -> None:
        sources = self.config.sources
        folder = watching.FolderSource(
            location=location,
            sink=self.sink,
            clock=self.clock,
            polling=sources.folder_polling,
            poll_interval_s=sources.folder_poll_interval_s,
            rescan_interval_s=sources.folder_rescan_interval_s,
            counts_needed=lambda: self.counts_needed(name),
        )
        if changed is not None:
            self.journal.set_dataset_status(name, source=location.source, problem=changed, at=self.clock())
        try:
            folder.start()  # scans once: the inventory matches the folder when this returns
        except errors.RetrainError as exc:
            self._unwatched(name, location, str(exc))
            return
        self.folders[name] = folder
        self._watched(name, location)
        log.info("folder_watched", path=str(location.path))

    def _start_reconciler(self, name: str, location: datasets.DatasetLocation, *, changed: str | None) -> None:
        if self.store is None:
            self._unwatched(
                name, location, "an s3:// dataset needs sources.s3.endpoint (RETRAIN_SOURCES__S3__ENDPOINT)"
            )
            return
        self.reconcilers[name] = reconciling.S3Reconciler(
            store=self.store,
            location=location,
            sink=self.sink,
            clock=self.clock,
            counts_needed=lambda: self.counts_needed(name),
            shard_objects=self.config.sources.reconcile_shard_objects,
        )
        if changed is not None:
            self.journal.set_dataset_status(name, source=location.source, problem=changed, at=self.clock())
            self._first_scan.add(name)
        else:
            self._watched(name, location)
        self.reconcile_requested.set()

    def _sync_listeners(self, wanted: Mapping[str, datasets.DatasetLocation]) -> None:
        store = self.store
        buckets = {loc.bucket for loc in wanted.values() if loc.bucket is not None}
        if not self.config.sources.minio_listen or store is None:
            buckets = set()
        for bucket in set(self.listeners) - buckets:
            self.listeners.pop(bucket).stop()
        for bucket in buckets - set(self.listeners):
            assert store is not None
            listener = listening.MinioListener(
                client=store.client,
                endpoint=store.endpoint,
                bucket=bucket,
                locations=self.locations,
                sink=self.sink,
                on_gap=lambda _bucket: self.reconcile_requested.set(),
            )
            listener.start()
            self.listeners[bucket] = listener

    # --- the reconcile worker's pass --------------------------------------------------------------------
    def reconcile(self) -> str | None:
        """One reconcile pass (a shard of a large prefix) of every S3 dataset; a dataset whose source changed
        is usable once its first cycle has ended. Returns :data:`working.MORE` when a cycle goes on."""
        self.reconcile_requested.clear()
        more = False
        for name, reconciler in list(self.reconcilers.items()):
            with logs.bound(dataset=name):
                try:
                    result = reconciler.run_once()
                except errors.RetrainError as exc:
                    log.warning("reconcile_failed", error=str(exc), action="retry next interval")
                    continue
                if not result.complete:
                    more = True
                    continue
                if name in self._first_scan:
                    self._first_scan.discard(name)
                    self._watched(name, reconciler.location)
        return working.MORE if more else None

    # --- the counting worker's pass ---------------------------------------------------------------------
    def count_labels(self, *, stopping: Callable[[], bool] = lambda: False) -> int:
        """Read the class counts of the S3 label files not yet counted, for the datasets whose rules use
        them, until none is left (or a stop). Returns how many were stored."""
        stored = 0
        for name, reconciler in list(self.reconcilers.items()):
            if not self.counts_needed(name):
                continue
            with logs.bound(dataset=name):
                while not stopping():
                    try:
                        found, done = reconciler.count_labels()
                    except errors.RetrainError as exc:
                        log.warning("label_counting_failed", error=str(exc), action="retry at the next delivery")
                        break
                    stored += done
                    if found < reconciling.COUNT_LABELS_PER_PASS:
                        break
        return stored

    def stop(self, *, deadline: float) -> None:
        for folder in self.folders.values():
            folder.stop(timeout_s=max(0.1, deadline - time.monotonic()))
        for listener in self.listeners.values():
            listener.stop(timeout_s=max(0.1, deadline - time.monotonic()))
