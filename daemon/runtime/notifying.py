"""The notifier: tells operators what happened, from the journal's outbox, through Apprise.

Run outcomes reach the outbox with the run's end (one transaction, :mod:`daemon.journal.sqlite.running`);
this worker adds the notices of sources that stay disconnected (``notify.source_down_after_s``) and of
refused rule files, then delivers every due notice to each target (the settings' ``notify.targets`` and the
rule's ``notify``), each an environment variable holding an Apprise URL. A target that fails is retried
with a doubling wait; the targets that have a notice are journaled, so neither a retry nor a restart sends
one twice to a target that had it. Messages name targets by their variable, never by URL (URLs carry
tokens).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from daemon import errors, logs, redaction, settings
from daemon.journal import base as journal_base
from daemon.model import notices
from daemon.rules import reloading
from daemon.sources import base as source_base
from daemon.sources import drifting

log = logs.get_logger(__name__)


class Sender(Protocol):
    def __call__(self, url: str, *, title: str, body: str, kind: notices.NoticeKind) -> None:
        """Deliver one message to ``url``; raise :class:`DeliveryFailed` when it was not delivered."""


class DeliveryFailed(Exception):
    """A target did not take the message (its message names no URL)."""


_FAILURES = (
    notices.NoticeKind.FAILED,
    notices.NoticeKind.ABANDONED,
    notices.NoticeKind.WAITING,
    notices.NoticeKind.SOURCE_DOWN,
)


def apprise_send(url: str, *, title: str, body: str, kind: notices.NoticeKind) -> None:
    """Send with Apprise (imported on first use). Apprise's own log lines may show URLs, and with them tokens:
    they are silenced; the notifier records each failure itself, naming the target's variable."""
    import apprise

    logging.getLogger("apprise").setLevel(logging.CRITICAL + 1)
    box = apprise.Apprise()
    if not box.add(url):
        raise DeliveryFailed("not a URL the installed Apprise can send to")
    if kind is notices.NoticeKind.PROMOTED:
        level = apprise.NotifyType.SUCCESS
    elif kind in _FAILURES:
        level = apprise.NotifyType.FAILURE
    else:
        level = apprise.NotifyType.WARNING if kind is notices.NoticeKind.RULE_REJECTED else apprise.NotifyType.INFO
    if not box.notify(title=title, body=body, notify_type=level):
        raise DeliveryFailed("the target refused the message or could not be reached")


class Notifier:
    """One pass: watch sources and rule files, then deliver what is due.

    Args:
        config: the ``notify`` settings.
        journal: the outbox.
        board: the sources' statuses.
        rulebook: the rules in force (their ``notify`` targets) and the refused rule files.
        clock: the current time.
        environ: where target variables are read (the process environment).
        send: delivers one message (Apprise; tests may pass another real transport).
    """

    def __init__(
        self,
        *,
        config: settings.NotifySettings,
        journal: journal_base.Journal,
        board: source_base.StatusBoard,
        rulebook: reloading.RuleBook,
        clock: Callable[[], datetime],
        environ: Mapping[str, str],
        send: Sender = apprise_send,
    ) -> None:
        self.config = config
        self.journal = journal
        self.board = board
        self.rulebook = rulebook
        self.clock = clock
        self.environ = environ
        self.send = send
        self._down_since: dict[str, datetime] = {}
        self._recorded: set[str] = set()
        for name in config.targets:
            if not environ.get(name):
                log.warning("notify_target_unset", variable=name, note="its notices fail until it is set")

    def work(self) -> None:
        now = self.clock()
        self.watch_sources(now)
        self.watch_rules(now)
        self.deliver(now)

    def _record(self, notice: notices.Notice) -> None:
        if notice.id not in self._recorded:
            self.journal.record_notice(notice)
            self._recorded.add(notice.id)

    def watch_sources(self, now: datetime) -> None:
        """A source down for ``source_down_after_s`` is told once per disconnection. Down as ``/readyz`` sees it:
        not connected, with an error (drift checks read MLflow; they are reported, not told as sources)."""
        threshold = timedelta(seconds=self.config.source_down_after_s)
        for status in self.board.all():
            if status.connected or not status.last_error or status.name == drifting.NAME:
                self._down_since.pop(status.name, None)
                continue
            since = self._down_since.setdefault(status.name, now)
            if now - since >= threshold:
                error = redaction.redact(status.last_error)
                self._record(notices.source_down(status.name, since=since, at=now, error=error))

    def watch_rules(self, now: datetime) -> None:
        """Each refused version of a rule file is told once, with all of its errors."""
        by_file: dict[str, list[str]] = {}
        for error in self.rulebook.errors:
            by_file.setdefault(str(error.file or self.rulebook.folder), []).append(error.render())
        for file, found in sorted(by_file.items()):
            self._record(notices.rule_rejected(file, "; ".join(found), at=now))

    def _targets(self, notice: notices.Notice) -> list[str]:
        found = list(self.config.targets)
        loaded = self.rulebook.rules.get(notice.rule) if notice.rule else None
        if loaded is not None:
            found += [name for name in loaded.rule.notify if name not in found]
        return found

    def deliver(self, now: datetime) -> None:
        """Every due notice to each target that does not have it yet; retried later when one fails."""
        for pending in self.journal.due_notices(now):
            notice = pending.notice
            wanted = self._targets(notice) if notice.kind.value in self.config.events else []
            delivered = set(pending.delivered_to)
            problems = []
            for name in (t for t in wanted if t not in delivered):
                url = self.environ.get(name)
                if not url:
                    problems.append(f"{name}: the environment variable is not set")
                    continue
                try:
                    title, body = redaction.redact(notice.title), redaction.redact(notice.body)
                    self.send(url, title=title, body=body, kind=notice.kind)
                except DeliveryFailed as exc:
                    problems.append(f"{name}: {exc}")
                except Exception as exc:  # a transport's own error: told by its class, never by its URL
                    problems.append(f"{name}: {exc.__class__.__name__}")
                else:
                    delivered.add(name)
            self._settle(pending, delivered=tuple(sorted(delivered)), problems=problems, now=now)

    def _settle(
        self, pending: journal_base.PendingNotice, *, delivered: tuple[str, ...], problems: list[str], now: datetime
    ) -> None:
        notice = pending.notice
        error = "; ".join(problems) or None
        attempts = pending.attempts + 1
        retry_at = None
        if error is not None and attempts < self.config.max_attempts:
            wait = min(self.config.retry_initial_s * 2 ** (attempts - 1), self.config.retry_max_s)
            retry_at = now + timedelta(seconds=wait)
        try:
            self.journal.notice_attempted(notice.id, delivered_to=delivered, error=error, retry_at=retry_at, at=now)
        except errors.RetrainError as exc:
            log.warning("notice_not_recorded", notice=notice.id, error=str(exc))
            return
        if error is None:
            if delivered:
                log.info("notice_delivered", notice=notice.id, kind=notice.kind.value, targets=list(delivered))
        elif retry_at is not None:
            log.warning(
                "notice_retrying", notice=notice.id, attempt=attempts, retry_at=retry_at.isoformat(), error=error
            )
        else:
            log.error("notice_given_up", notice=notice.id, attempts=attempts, error=error)
