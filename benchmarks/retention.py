"""Retention: a journal churned by 1M events with retention on stays bounded, and loses nothing a rule needs.

Ninety simulated days of a dataset of 10,000 label files rewritten again and again (1M events in batches of
500 through the sources' ``EventSink``), a rule consuming the data every simulated day (a run recorded in
the journal), and skip decisions as the daemon writes them. Run twice into fresh SQLite journals: once with
the daemon's retention sweep (``daemon.runtime.pruning.Pruner``, 30 days) after each simulated day, once
without. Printed: each journal's size and rows, the sweep's time per day (and its slowest step), ingest
rates, and whether both journals show the rule the same pending data and snapshot.

    python benchmarks/retention.py [--events 1000000] [--files 10000] [--days 90] [--retention-days 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import emit
from prometheus_client import CollectorRegistry, Counter

from daemon import logs, settings
from daemon.engine import deciding
from daemon.journal import sqlite
from daemon.model import decisions, events, ids, runs
from daemon.runtime import pruning
from daemon.sources import base
from tests.support.sim import make_rule

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BATCH = 500


def churn(path: Path, *, total: int, files: int, days: int, retention_days: float | None) -> dict[str, Any]:
    journal = sqlite.SqliteJournal(path)
    rule = make_rule(min_new_labels=1, quiet_period="0s", cooldown="0s")
    now = T0
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: now)
    counter = Counter("retrain_journal_pruned", "bench", ["table"], registry=CollectorRegistry())
    pruner = (
        pruning.Pruner(journal=journal, clock=lambda: now, retention=timedelta(days=retention_days), pruned=counter)
        if retention_days is not None
        else None
    )
    per_day = total // days
    ingest_s = sweep_s = slowest_sweep_s = 0.0
    written = 0
    for day in range(days):
        for start in range(0, per_day, BATCH):
            now = T0 + timedelta(days=day, seconds=start)
            batch = []
            for i in range(start, min(start + BATCH, per_day)):
                n = written + i - start
                key = f"labels/train/{n % files:06d}.txt"
                batch.append(
                    events.SourceEvent(
                        source=events.Source.WEBHOOK,
                        dataset="pets",
                        key=key,
                        kind=events.ChangeKind.CREATED,
                        item=events.classify(key),
                        version=f"v{n}",
                        size=120,
                        time=now,
                        class_counts={"0": 2},
                    )
                )
            began = time.perf_counter()
            sink.deliver("webhook", batch)
            ingest_s += time.perf_counter() - began
            written += len(batch)
        now = T0 + timedelta(days=day, hours=23)
        decision = deciding.decide(rule, journal.rule_state(rule, now=now), now)
        if isinstance(decision, decisions.Launch) and journal.record_intent(decision, at=now):
            journal.update_run(ids.RunKey(decision.run_key), runs.RunState.RUNNING, at=now)
            journal.update_run(ids.RunKey(decision.run_key), runs.RunState.SUCCEEDED, at=now)
        for code in (decisions.SkipCode.NO_NEW_DATA, decisions.SkipCode.COOLDOWN) * 5:
            journal.record_skip(decisions.Skip(rule=rule.name, code=code, reason=f"{code.value} on day {day}"), at=now)
        if pruner is not None:
            began = time.perf_counter()
            pruner.work()
            took = time.perf_counter() - began
            sweep_s += took
            slowest_sweep_s = max(slowest_sweep_s, took)
    # One last batch that no run consumed: pending data both journals must show.
    sink.deliver("webhook", [_late(now)])
    state = journal.rule_state(rule, now=now)
    with journal.database.reading() as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        rows = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("events", "decisions", "inventory")}  # noqa: S608
        free_pages = db.execute("PRAGMA freelist_count").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    journal.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    return {
        "retention_days": retention_days,
        "events_written": written,
        "journal_mb": round(size / 2**20, 1),
        "free_mb_inside": round(free_pages * page_size / 2**20, 1),
        "rows": rows,
        "ingest_events_per_s": round(written / ingest_s),
        "sweeps_s_total": round(sweep_s, 2),
        "sweep_s_per_day_mean": round(sweep_s / days, 3),
        "sweep_s_slowest": round(slowest_sweep_s, 3),
        "_state": (state.pending.labels, state.pending.class_counts, state.snapshot, state.snapshot_items),
    }


def _late(now: datetime) -> events.SourceEvent:
    key = "labels/train/late.txt"
    return events.SourceEvent(
        source=events.Source.WEBHOOK,
        dataset="pets",
        key=key,
        kind=events.ChangeKind.CREATED,
        item=events.classify(key),
        version="late",
        size=1,
        time=now,
        class_counts={"1": 1},
    )


def main() -> None:
    logs.configure(settings.LoggingSettings(level="warning"), stream=sys.stderr)  # stdout is the figures
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--retention-days", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        root = Path(folder)
        kept = churn(
            root / "on.db", total=args.events, files=args.files, days=args.days, retention_days=args.retention_days
        )
        every = churn(root / "off.db", total=args.events, files=args.files, days=args.days, retention_days=None)
    same = kept.pop("_state") == every.pop("_state")
    emit(
        "retention",
        {
            "events": args.events,
            "files": args.files,
            "days": args.days,
            "with_retention": kept,
            "without_retention": every,
            "rules_see_the_same": same,
        },
    )
    assert same, "pruning changed what the rule sees"


if __name__ == "__main__":
    main()
