"""Hot reload: the rules in force, re-read when their files change, never broken by a bad edit.

``RuleBook.refresh()`` hashes every rule file's content (following symlinks, so the symlink swap with which
Kubernetes updates a mounted ConfigMap is seen like any edit) and re-validates the files that changed:

- a valid change applies at once;
- an invalid change is logged with every error and counted, and the file's last good version stays in force;
- a deleted file disables its rules;
- a rule name defined in two files keeps the first (by file name) and reports the second.

The daemon calls ``refresh()`` periodically; nothing in here can raise for a bad rule file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from daemon import errors, logs
from daemon.rules import loading

log = logs.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class RefreshReport:
    """What one refresh changed."""

    applied: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    errors: tuple[errors.ConfigError, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.applied or self.removed)


@dataclass
class _FileState:
    digest: str
    last_good: loading.FileResult | None
    errors: tuple[errors.ConfigError, ...] = ()


@dataclass
class RuleBook:
    """The rules loaded from one folder, kept current by :meth:`refresh`."""

    folder: Path
    rejected_total: int = 0
    """How many invalid changes were refused since start (exported as a metric)."""
    _files: dict[str, _FileState] = field(default_factory=dict)
    _rules: dict[str, loading.LoadedRule] = field(default_factory=dict)
    _conflicts: tuple[errors.ConfigError, ...] = ()
    _folder_state: str = ""

    @property
    def rules(self) -> dict[str, loading.LoadedRule]:
        """The rules in force, by name."""
        return dict(self._rules)

    def in_force(self) -> dict[str, loading.LoadedRule]:
        """The rules in force, by name (for the parts that ask on every pass)."""
        return dict(self._rules)

    @property
    def errors(self) -> list[errors.ConfigError]:
        """Errors that keep some file's latest version (or a duplicate rule) out of force right now."""
        found = [e for state in self._files.values() for e in state.errors]
        return [*found, *self._conflicts]

    def refresh(self) -> RefreshReport:
        """Re-read changed files; apply the valid ones, keep the last good version of the others."""
        applied: list[str] = []
        rejected: list[str] = []
        found_errors: list[errors.ConfigError] = []
        try:
            paths = loading.rule_files([self.folder]) if self.folder.is_dir() else []
        except OSError as exc:
            log.warning("rules_folder_unreadable", folder=str(self.folder), error=str(exc))
            return RefreshReport()
        self._report_folder("missing" if not self.folder.is_dir() else ("empty" if not paths else "rules"))
        seen: set[str] = set()
        for path in paths:
            name = str(path)
            try:
                data = path.read_bytes()
            except OSError as exc:
                # Vanished between listing and reading (a ConfigMap swap in progress): try next time.
                log.info("rule_file_unreadable", file=name, error=str(exc))
                if name in self._files:
                    seen.add(name)
                continue
            seen.add(name)
            digest = hashlib.sha256(data).hexdigest()
            current = self._files.get(name)
            if current is not None and current.digest == digest:
                continue
            result = loading.parse_text(data.decode("utf-8", errors="replace"), file=name)
            if result.errors:
                self.rejected_total += 1
                rejected.append(name)
                found_errors.extend(result.errors)
                kept = current.last_good if current is not None else None
                self._files[name] = _FileState(digest=digest, last_good=kept, errors=result.errors)
                for error in result.errors:
                    log.warning("rule_file_rejected", file=name, error=error.render(), kept_last_good=kept is not None)
            else:
                applied.append(name)
                self._files[name] = _FileState(digest=digest, last_good=result)
        removed = sorted(set(self._files) - seen)
        for name in removed:
            del self._files[name]
            log.info("rule_file_removed", file=name)
        if applied or removed:
            self._rebuild()
            log.info("rules_reloaded", files=applied, removed=removed, rules=sorted(self._rules))
        return RefreshReport(
            applied=tuple(applied), rejected=tuple(rejected), removed=tuple(removed), errors=tuple(found_errors)
        )

    def _report_folder(self, state: str) -> None:
        """Warn when the folder is missing or holds no rule file (once per change): no rule is in force."""
        if state == self._folder_state:
            return
        self._folder_state = state
        if state == "missing":
            log.warning("rules_folder_missing", folder=str(self.folder), note="no rule is in force until it exists")
        elif state == "empty":
            log.warning("rules_folder_empty", folder=str(self.folder), note="no *.yaml rule file: no rule is in force")

    def _rebuild(self) -> None:
        good = [state.last_good for _, state in sorted(self._files.items()) if state.last_good is not None]
        combined = loading.combine(good)
        for error in combined.errors:
            log.warning("rule_rejected", error=error.render())
        self._conflicts = tuple(combined.errors)
        self._rules = combined.rules
