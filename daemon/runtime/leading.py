"""Leading: one replica acts, the others stand by, over a journal they share (PostgreSQL).

A replica starts as a standby: it serves the dashboard, the read API and the webhook (events and manual
requests go to the shared journal, so a delivery to a standby is not lost), and tries to take the lease
every ``leader.poll_interval_s``. The one that takes it leads: sources, decisions, launches, the run
watcher. A thread renews the lease every ``leader.renew_interval_s`` (at most a third of the TTL); a
renewal the database does not answer is retried until the TTL has passed on this process's monotonic
clock. A leader that learns it lost the lease (taken over, a write refused for a newer epoch, or the TTL
passed unrenewed: it was paused or cut off) stops at once and exits with :data:`EXIT_LOST_LEADERSHIP`;
Kubernetes restarts it as a standby. Its journal refuses its acting writes from that moment on anyway
(:mod:`daemon.journal.postgres.database`). A clean stop gives the lease up, so a standby takes over within
one poll instead of one TTL.

A journal without an election (SQLite) makes this replica the leader from the start: one replica by
design.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from daemon import errors, logs, settings
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base

log = logs.get_logger(__name__)

#: ``retrain up``'s exit code after it lost the lease (EX_TEMPFAIL): restarted, it comes back as a standby.
EXIT_LOST_LEADERSHIP = 75

Role = Literal["leader", "standby", "single"]


def default_holder() -> str:
    """This replica's name in the lease: the pod's name (``HOSTNAME``) and the process id (a restarted
    process is a new holder: it never mistakes its last life's lease for its own)."""
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True)
class Standing:
    """What ``/readyz`` and ``/api/v1/status`` say about leadership."""

    role: Role
    holder: str
    """This replica's name in the lease."""
    leader: str | None
    """The replica that leads now, as the database has it (this one while it leads; None: nobody)."""
    epoch: int | None
    lease_expires_in_s: float | None = None


class Leading:
    """This replica's side of the election (see the module).

    Args:
        leadership: the journal's lease (None: no election, this replica leads).
        config: TTL, renewal and poll intervals, the holder's name.
        metrics: ``retrain_leader``, ``retrain_leader_epoch``, ``retrain_lease_renewals_total``.
        on_lost: called once, from the renewal thread or the loop, when leadership is lost.
    """

    def __init__(
        self,
        *,
        leadership: journal_base.Leadership | None,
        config: settings.LeaderSettings,
        metrics: metrics_.Metrics,
        on_lost: Callable[[str], None],
    ) -> None:
        self.leadership = leadership
        self.config = config
        self.metrics = metrics
        self.on_lost = on_lost
        self.holder = config.holder or default_holder()
        self.epoch: int | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._role: Role = "single" if leadership is None else "standby"
        self.metrics.leader.set(1 if leadership is None else 0)

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leads(self) -> bool:
        return self._role in ("leader", "single")

    def wait_for_lease(self, *, stopping: Callable[[], bool], on_wait: Callable[[], None]) -> bool:
        """Block until this replica leads (True) or a stop is asked (False); ``on_wait`` runs once per poll
        (the standby's pass: rules for the dashboard, liveness)."""
        if self.leadership is None:
            return True
        began = time.monotonic()
        announced = False
        while not stopping():
            try:
                epoch = self.leadership.acquire(self.holder, ttl_s=self.config.ttl_s)
            except errors.RetrainError as exc:
                log.warning("lease_unavailable", error=str(exc), action="standing by; will try again")
                epoch = None
            if epoch is not None:
                self._lead(epoch, waited_s=time.monotonic() - began)
                return True
            if not announced:
                announced = True
                log.info("standing_by", holder=self.holder, leader=self.standing().leader)
            on_wait()
            self._stop.wait(self.config.poll_interval_s)
        return False

    def _lead(self, epoch: int, *, waited_s: float) -> None:
        self.epoch = epoch
        self._role = "leader"
        self.metrics.leader.set(1)
        self.metrics.leader_epoch.set(epoch)
        log.info("leadership_acquired", holder=self.holder, epoch=epoch, waited_s=round(waited_s, 3))
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewal", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        assert self.leadership is not None and self.epoch is not None
        while not self._stop.wait(self.config.renew_interval_s):
            if self.check():
                return
            try:
                renewed = self.leadership.renew(self.holder, epoch=self.epoch, ttl_s=self.config.ttl_s)
            except errors.RetrainError as exc:
                self.metrics.lease_renewals.labels(result="failed").inc()
                log.warning("lease_renewal_failed", error=str(exc), action="retrying within the TTL")
                continue
            if not renewed:
                self._lose("another replica holds the lease now (a renewal was refused)")
                return
            self.metrics.lease_renewals.labels(result="ok").inc()

    def check(self) -> bool:
        """Whether leadership was lost (asked by the loop at every pass and by the renewal thread)."""
        if self.lost.is_set():
            return True
        if self._role == "leader" and self.leadership is not None and self.leadership.fenced():
            self._lose("the lease ran out before it was renewed, or a write was refused for a newer epoch")
        return self.lost.is_set()

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        self._role = "standby"
        self.metrics.leader.set(0)
        self.metrics.leader_epoch.set(0)
        self.metrics.lease_renewals.labels(result="lost").inc()
        log.error(
            "leadership_lost",
            holder=self.holder,
            epoch=self.epoch,
            reason=reason,
            action="stopping; restart as standby",
        )
        self.on_lost(reason)

    def standing(self) -> Standing:
        """Who leads, for the probes and the status API (one read of the lease row; none without election)."""
        if self.leadership is None:
            return Standing(role="single", holder=self.holder, leader=self.holder, epoch=None)
        try:
            lease = self.leadership.current()
        except errors.RetrainError:
            return Standing(role=self._role, holder=self.holder, leader=None, epoch=self.epoch)
        return Standing(
            role=self._role,
            holder=self.holder,
            leader=None if lease.expired else lease.holder,
            epoch=self.epoch if self._role == "leader" else lease.epoch,
            lease_expires_in_s=round(lease.expires_in_s, 3),
        )

    def stop(self) -> None:
        """Stop renewing and, if this replica still leads, give the lease up (a clean stop hands over now)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(5)
        if self.leadership is not None and self._role == "leader" and self.epoch is not None and not self.lost.is_set():
            try:
                self.leadership.release(self.holder, epoch=self.epoch)
                log.info("leadership_released", holder=self.holder, epoch=self.epoch)
            except errors.RetrainError as exc:
                log.warning("lease_release_failed", error=str(exc), action="a standby takes over after the TTL")
            self._role = "standby"
            self.metrics.leader.set(0)
