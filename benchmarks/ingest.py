"""Ingest: events per second from a source into the journal, with dedupe, and the journal's size.

Bursts of 10k and 100k label events (half of them duplicates: every change is delivered twice, as a
webhook retry or a reconcile that sees what the webhook already brought) go through the same
``EventSink.deliver`` the sources use, in batches of 500 (a listing page, a webhook body), into a fresh
SQLite journal on disk (WAL, synchronous=FULL) and, for ``postgres_bursts``, into a fresh database on a
local PostgreSQL 16 server (the suite's, from the pgserver wheel: a Unix socket, fsync on, default
settings; a managed server over the network adds a round trip per statement).

    python benchmarks/ingest.py [--bursts 10000,100000] [--batch 500] [--journals sqlite,postgres]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import emit

from daemon import journal as journals
from daemon.journal import sqlite
from daemon.model import events
from daemon.sources import base


def label_event(index: int) -> events.SourceEvent:
    key = f"labels/train/{index // 1000:04d}/{index:08d}.txt"
    return events.SourceEvent(
        source=events.Source.WEBHOOK,
        dataset="bench",
        key=key,
        kind=events.ChangeKind.CREATED,
        item=events.classify(key),
        version=f"etag-{index:08d}",
        size=120,
        time=datetime.now(UTC),
        class_counts={"person": 2, "car": 1},
    )


def burst(size: int, batch: int, folder: Path, postgres: Any = None) -> dict[str, float | int]:
    path = folder / f"journal-{size}.db"
    journal = sqlite.SqliteJournal(path) if postgres is None else journals.open_target(postgres.create_database())
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    distinct = [label_event(i) for i in range(size // 2)]
    stream = distinct + distinct  # every change twice
    random.Random(size).shuffle(stream)
    new = duplicates = 0
    started = time.perf_counter()
    for i in range(0, len(stream), batch):
        result = sink.deliver("webhook", stream[i : i + batch])
        new += result.new
        duplicates += result.duplicates
    elapsed = time.perf_counter() - started
    if postgres is None:
        journal.close()
        size_bytes = sum(p.stat().st_size for p in folder.glob(f"journal-{size}.db*"))
    else:
        with journal.database.reading() as db:  # type: ignore[attr-defined]
            size_bytes = int(db.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        journal.close()
    assert new == size // 2 and duplicates == size - size // 2, (new, duplicates)
    return {
        "events": size,
        "new": new,
        "duplicates": duplicates,
        "seconds": round(elapsed, 3),
        "events_per_s": round(size / elapsed),
        "journal_bytes": size_bytes,
        "journal_mb_per_million_distinct_events": round(size_bytes / new * 1e6 / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", default="10000,100000", help="burst sizes (events, half duplicates)")
    parser.add_argument("--batch", type=int, default=500, help="events per delivery (one transaction)")
    parser.add_argument("--journals", default="sqlite,postgres", help="backends to measure")
    args = parser.parse_args()
    sizes = [int(size) for size in args.bursts.split(",")]
    figures: dict[str, Any] = {"batch": args.batch}
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        if "sqlite" in args.journals:
            figures["bursts"] = [burst(size, args.batch, Path(folder)) for size in sizes]
        if "postgres" in args.journals:
            from tests.support import services

            server = services.PostgresServer(workdir=Path(folder) / "postgres").start()
            try:
                figures["postgres_bursts"] = [burst(size, args.batch, Path(folder), server) for size in sizes]
            finally:
                server.stop()
    emit("ingest", figures)


if __name__ == "__main__":
    main()
