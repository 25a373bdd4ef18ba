"""Dataset folders with real files and real inotify (and the polling observer for network volumes)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.journal import sqlite
from daemon.model import events
from daemon.sources import base, datasets, observing, watching
from tests.support.waiting import stays


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def journal() -> Iterator[sqlite.SqliteJournal]:
    j = sqlite.SqliteJournal(":memory:")
    yield j
    j.close()


def make_source(root: Path, journal: sqlite.SqliteJournal, **kwargs: object) -> watching.FolderSource:
    location = datasets.DatasetLocation(name="forklifts", source=f"file://{root}", path=root)
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    options: dict[str, object] = {"poll_interval_s": 0.1, "rescan_interval_s": 600.0, "settle_s": 1.0}
    options.update(kwargs)
    return watching.FolderSource(location=location, sink=sink, clock=lambda: datetime.now(UTC), **options)  # type: ignore[arg-type]


def keys(journal: sqlite.SqliteJournal) -> list[str]:
    return sorted(i.key for i in journal.inventory("forklifts"))


@pytest.fixture
def watched(tmp_path: Path, journal: sqlite.SqliteJournal) -> Iterator[tuple[Path, watching.FolderSource]]:
    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    source = make_source(root, journal)
    source.start()
    yield root, source
    source.stop()


def test_a_closed_file_counts_with_its_classes(
    watched: tuple[Path, watching.FolderSource], journal: sqlite.SqliteJournal
) -> None:
    root, _ = watched
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n2 0.1 0.1 0.1 0.1\n")
    assert wait_for(lambda: keys(journal) == ["labels/train/a.txt"])
    assert journal.labels_without_counts("forklifts", limit=10) == []


def test_a_slowly_written_file_counts_once_when_complete(
    watched: tuple[Path, watching.FolderSource], journal: sqlite.SqliteJournal
) -> None:
    root, _ = watched
    path = root / "labels" / "train" / "slow.txt"
    with path.open("w") as handle:
        for i in range(6):
            handle.write(f"{i % 3} 0.5 0.5 0.1 0.1\n")
            handle.flush()
            time.sleep(0.3)
        assert keys(journal) == []  # still open: not counted
    assert wait_for(lambda: keys(journal) == ["labels/train/slow.txt"])
    stays(lambda: journal.event_count() == 1, 1.5, "one event (past the settle time nothing more arrives)")
    [item] = journal.inventory("forklifts")
    assert item.size == path.stat().st_size


def test_renamed_into_place_counts_and_temporary_files_do_not(
    watched: tuple[Path, watching.FolderSource], journal: sqlite.SqliteJournal
) -> None:
    root, _ = watched
    part = root / "labels" / "train" / "b.txt.part"
    part.write_text("1 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / ".hidden.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (root / "labels" / "train" / "c.tmp").write_text("x")
    (root / "labels" / ".staging").mkdir()
    (root / "labels" / ".staging" / "d.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    os.rename(part, root / "labels" / "train" / "b.txt")
    assert wait_for(lambda: keys(journal) == ["labels/train/b.txt"])
    stays(lambda: keys(journal) == ["labels/train/b.txt"], 1.5, "only the renamed file counted")
    assert journal.event_count() == 1


def test_a_file_moved_in_from_outside_counts(
    watched: tuple[Path, watching.FolderSource], journal: sqlite.SqliteJournal, tmp_path: Path
) -> None:
    root, _ = watched
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"\xff\xd8\xff" + b"0" * 100)
    os.rename(outside, root / "images" / "train" / "e.jpg")
    assert wait_for(lambda: keys(journal) == ["images/train/e.jpg"])
    [item] = journal.inventory("forklifts")
    assert item.item is events.ItemKind.IMAGE


def test_deleting_a_file_deletes_it_from_the_inventory(
    watched: tuple[Path, watching.FolderSource], journal: sqlite.SqliteJournal
) -> None:
    root, _ = watched
    path = root / "labels" / "train" / "f.txt"
    path.write_text("0 0.5 0.5 0.1 0.1\n")
    assert wait_for(lambda: keys(journal) == ["labels/train/f.txt"])
    path.unlink()
    assert wait_for(lambda: keys(journal) == [])


@pytest.fixture(params=["own-inotify", "watchdog"])
def either_watcher(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The daemon's own inotify reader (Linux), and watchdog's native observer (what a macOS or Windows laptop
    gets; on Linux it is watchdog's inotify, which stands in for FSEvents here)."""
    monkeypatch.setattr(observing, "OWN_INOTIFY", request.param == "own-inotify")
    return str(request.param)


# watchdog 7 warns from its reader thread when `mkdir -p` makes two levels at once (it adds one callback twice):
# harmless in the daemon, an error under this suite's warning filters, where it ends watchdog's thread.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_directory_made_after_start_is_watched(
    tmp_path: Path, journal: sqlite.SqliteJournal, either_watcher: str
) -> None:
    root = tmp_path / "forklifts"
    root.mkdir()
    source = make_source(root, journal, settle_s=30.0)  # periodic rescans off; a settle that never comes
    source.start()
    try:
        (root / "labels" / "val").mkdir(parents=True)
        time.sleep(0.5)  # the new directories' watches (and the rescan that follows, which finds them empty)
        (root / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        assert wait_for(lambda: keys(journal) == ["labels/val/a.txt"], timeout_s=10)
        assert by_source(journal) == {"folder": 1}  # inotify saw it close, not a rescan
    finally:
        source.stop()


def test_a_directory_moved_out_is_deleted_and_no_longer_watched(
    tmp_path: Path, journal: sqlite.SqliteJournal, either_watcher: str
) -> None:
    root = tmp_path / "forklifts"
    (root / "labels" / "old").mkdir(parents=True)
    (root / "labels" / "old" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    source = make_source(root, journal)
    source.start()
    try:
        assert wait_for(lambda: keys(journal) == ["labels/old/a.txt"], timeout_s=10)  # once settled
        away = tmp_path / "elsewhere"
        os.rename(root / "labels" / "old", away)
        assert wait_for(lambda: keys(journal) == [], timeout_s=10)
        (away / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # outside the folder now: must not count
        stays(lambda: keys(journal) == [], 1.5, "a file written in a directory moved out of the folder ignored")
    finally:
        source.stop()


def test_a_directory_moved_within_is_watched_under_its_new_name(
    tmp_path: Path, journal: sqlite.SqliteJournal, either_watcher: str
) -> None:
    root = tmp_path / "forklifts"
    (root / "labels" / "incoming" / "deep").mkdir(parents=True)
    (root / "labels" / "incoming" / "deep" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    source = make_source(root, journal)
    source.start()
    try:
        assert wait_for(lambda: keys(journal) == ["labels/incoming/deep/a.txt"], timeout_s=10)
        os.rename(root / "labels" / "incoming", root / "labels" / "train")
        assert wait_for(lambda: keys(journal) == ["labels/train/deep/a.txt"], timeout_s=10)
        (root / "labels" / "train" / "deep" / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        expected = ["labels/train/deep/a.txt", "labels/train/deep/b.txt"]
        assert wait_for(lambda: keys(journal) == expected, timeout_s=10)
        stays(lambda: keys(journal) == expected, 1.0, "nothing under the old name")
    finally:
        source.stop()


def test_the_folder_itself_gone_is_a_clear_failure_that_deletes_nothing(
    tmp_path: Path, journal: sqlite.SqliteJournal
) -> None:
    """The own inotify reader hears the folder itself go (watchdog's observer does not: there, the next
    periodic rescan finds it gone)."""
    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    source = make_source(root, journal)
    source.start()
    try:
        assert wait_for(lambda: keys(journal) == ["labels/train/a.txt"], timeout_s=10)
        os.rename(root, tmp_path / "elsewhere")  # as an unmounted volume: the files are not deleted, only gone
        assert wait_for(lambda: source.failed is not None, timeout_s=10)
        assert "forklifts is gone" in str(source.failed)
        assert keys(journal) == ["labels/train/a.txt"]  # a vanished folder deletes nothing
    finally:
        source.stop()


def test_a_watcher_that_stops_reporting_is_replaced_by_the_supervisor(
    tmp_path: Path, journal: sqlite.SqliteJournal
) -> None:
    """The inotify descriptor turns unusable under the reader (here: /dev/null put in its place): the source
    says it failed, and the supervisor's next pass watches the folder afresh; files keep counting."""
    from daemon import settings
    from daemon.rules import loading
    from daemon.runtime import supervising
    from daemon.sources import inotify

    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    text = f"""name: forklifts
dataset: {{source: "file://{root}"}}
model: {{registered_name: forklifts-detector}}
triggers:
  - new_labels: {{min_new_labels: 5}}
"""
    [loaded] = loading.parse_text(text, file="forklifts.yaml").rules
    sink = base.EventSink(journal=journal, board=base.StatusBoard(), clock=lambda: datetime.now(UTC))
    supervisor = supervising.SourceSupervisor(
        config=settings.load(environ={}), sink=sink, store=None, clock=lambda: datetime.now(UTC)
    )
    supervisor.sync({"forklifts": loaded.rule})
    supervisor.work()
    first = supervisor.folders["forklifts"]
    try:
        watcher = first._watcher
        assert isinstance(watcher, inotify.InotifyWatcher) and watcher._inotify is not None
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, watcher._inotify.fileno())  # poll says readable, the FIONREAD ioctl fails
        os.close(null)
        (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # wakes the reader: it fails
        assert wait_for(lambda: first.failed is not None, timeout_s=10)
        assert "inotify stopped reporting" in str(first.failed)
        supervisor.work()
        assert supervisor.folders["forklifts"] is not first
        (root / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.1 0.1\n")
        # a.txt, missed by the failed reader, is found by the new source's start-up scan once it settles
        assert wait_for(lambda: keys(journal) == ["labels/train/a.txt", "labels/train/b.txt"], timeout_s=20)
    finally:
        for folder in supervisor.folders.values():
            folder.stop()


def test_start_up_scan_counts_what_arrived_while_down(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    for i in range(5):
        (root / "labels" / "train" / f"{i}.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    old = time.time() - 60
    for path in (root / "labels" / "train").iterdir():
        os.utime(path, (old, old))
    source = make_source(root, journal)
    source.start()
    try:
        assert len(keys(journal)) == 5  # counted by the start-up scan, before any event
    finally:
        source.stop()


def by_source(journal: sqlite.SqliteJournal) -> dict[str, int]:
    with journal.database.reading() as db:
        return {
            row["source"]: row["n"] for row in db.execute("SELECT source, COUNT(*) AS n FROM events GROUP BY source")
        }


def test_a_thousand_files_are_counted_from_inotify_alone(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    """With the periodic rescan off, every file reaches the journal through inotify's close events."""
    root = tmp_path / "forklifts"
    folder = root / "labels" / "train"
    folder.mkdir(parents=True)
    source = make_source(root, journal, rescan_interval_s=3600.0, settle_s=30.0)
    source.start()
    try:
        for i in range(1_000):
            (folder / f"{i:05d}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
        assert wait_for(lambda: len(keys(journal)) == 1_000, timeout_s=60)
        assert by_source(journal) == {"folder": 1_000}  # not one of them from a rescan
    finally:
        source.stop()


def test_ten_thousand_files_at_once_are_all_counted(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    """More events than the inotify queue holds (16,384 by default), the periodic rescan off: what inotify
    delivered is counted, and the rescan that follows the queue's overflow recovers the rest."""
    root = tmp_path / "forklifts"
    folder = root / "labels" / "train"
    folder.mkdir(parents=True)
    source = make_source(root, journal, rescan_interval_s=3600.0, settle_s=0.5)
    source.start()
    try:
        for i in range(10_000):
            (folder / f"{i:05d}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
        assert wait_for(lambda: len(keys(journal)) == 10_000, timeout_s=120)
        assert journal.event_count() == 10_000
        assert by_source(journal).get("folder", 0) > 0  # inotify delivered, whatever the overflow dropped
    finally:
        source.stop()


def test_polling_observer_for_network_volumes(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    source = make_source(root, journal, polling=True, poll_interval_s=0.2, settle_s=0.5)
    source.start()
    try:
        (root / "labels" / "train" / "p.txt").write_text("3 0.5 0.5 0.1 0.1\n")
        assert wait_for(lambda: keys(journal) == ["labels/train/p.txt"], timeout_s=20)
        assert journal.event_count() == 1
    finally:
        source.stop()


def test_a_missing_folder_is_a_clear_error_and_is_not_created(tmp_path: Path, journal: sqlite.SqliteJournal) -> None:
    from daemon import errors

    source = make_source(tmp_path / "not-mounted", journal)
    with pytest.raises(errors.PermanentError, match="dataset folder .*not-mounted of forklifts does not exist"):
        source.start()
    assert not (tmp_path / "not-mounted").exists()


def test_a_hard_link_appearing_without_a_close_counts_once_settled(
    tmp_path: Path, journal: sqlite.SqliteJournal
) -> None:
    """A hard link makes a file appear with no write and no close (inotify sends IN_CREATE alone): it counts
    once its size and modification time have stayed the same for the settle time."""
    root = tmp_path / "forklifts"
    (root / "labels" / "train").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_text("0 0.5 0.5 0.1 0.1\n")
    source = make_source(root, journal, rescan_interval_s=3600.0, settle_s=0.5)
    source.start()
    try:
        os.link(outside, root / "labels" / "train" / "linked.txt")
        assert wait_for(lambda: keys(journal) == ["labels/train/linked.txt"], timeout_s=20)
        stays(lambda: journal.event_count() == 1, 1.5, "counted once")
        assert by_source(journal) == {"folder": 1}  # from the settle check, not a rescan
    finally:
        source.stop()


def test_label_files_are_read_only_while_a_rule_uses_class_counts(
    tmp_path: Path, journal: sqlite.SqliteJournal
) -> None:
    """Reading every label file as it arrives is the burst's largest cost: with no rule using class counts
    the files are journaled unread; once one does, the counts of those already there are filled in."""
    root = tmp_path / "forklifts"
    folder = root / "labels" / "train"
    folder.mkdir(parents=True)
    needed = False
    source = make_source(root, journal, rescan_interval_s=3600.0, counts_needed=lambda: needed)
    source.start()
    try:
        for i in range(3):
            (folder / f"{i}.txt").write_text("2 0.5 0.5 0.1 0.1\n2 0.1 0.1 0.1 0.1\n")
        assert wait_for(lambda: len(keys(journal)) == 3)
        stays(lambda: len(journal.labels_without_counts("forklifts", limit=10)) == 3, 0.5, "no label file read")
        needed = True
        assert wait_for(lambda: journal.labels_without_counts("forklifts", limit=10) == [])
        with journal.database.reading() as db:
            counts = [row[0] for row in db.execute("SELECT class_counts FROM inventory ORDER BY key")]
        assert counts == ['{"2": 2}'] * 3
    finally:
        source.stop()
