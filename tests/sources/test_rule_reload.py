"""Hot reload of rule files: valid edits apply, invalid ones keep the last good version, deletes disable."""

from __future__ import annotations

import os
from pathlib import Path

from structlog.testing import capture_logs

from daemon.rules import reloading

RULE = """
name: {name}
dataset: {{source: "s3://datasets/{name}/"}}
model: {{registered_name: {name}-detector}}
triggers:
  - new_labels: {{min_new_labels: {n}}}
"""


def write(path: Path, name: str, n: int = 10) -> None:
    path.write_text(RULE.format(name=name, n=n))


def min_labels(book: reloading.RuleBook, name: str) -> int:
    trigger = book.rules[name].rule.triggers[0].new_labels
    assert trigger is not None
    return trigger.min_new_labels


def test_valid_change_applies_without_restart(tmp_path: Path) -> None:
    write(tmp_path / "pets.yaml", "pets", 10)
    book = reloading.RuleBook(tmp_path)
    assert book.refresh().applied == (str(tmp_path / "pets.yaml"),)
    write(tmp_path / "pets.yaml", "pets", 50)
    report = book.refresh()
    assert report.changed
    assert min_labels(book, "pets") == 50
    assert not book.refresh().changed  # nothing changed, nothing re-read


def test_invalid_change_keeps_the_last_good_version_and_is_counted(tmp_path: Path) -> None:
    write(tmp_path / "pets.yaml", "pets", 10)
    write(tmp_path / "cats.yaml", "cats", 5)
    book = reloading.RuleBook(tmp_path)
    book.refresh()
    (tmp_path / "pets.yaml").write_text(RULE.format(name="pets", n=-3).replace("min_new_labels", "min_new_label"))
    write(tmp_path / "cats.yaml", "cats", 7)
    with capture_logs() as logs:
        report = book.refresh()
    assert report.rejected == (str(tmp_path / "pets.yaml"),)
    assert min_labels(book, "pets") == 10
    assert min_labels(book, "cats") == 7
    assert book.rejected_total == 1
    rejected = [entry for entry in logs if entry["event"] == "rule_file_rejected"]
    assert len(rejected) == 1
    assert (
        "field 'triggers[0].new_labels.min_new_label': unknown field; did you mean 'min_new_labels'?"
        in rejected[0]["error"]
    )
    assert rejected[0]["kept_last_good"] is True
    assert [e.field for e in book.errors] == ["triggers[0].new_labels.min_new_label"]
    # Fixing the file clears the error.
    write(tmp_path / "pets.yaml", "pets", 20)
    book.refresh()
    assert min_labels(book, "pets") == 20
    assert book.errors == []


def test_a_new_broken_file_adds_nothing_and_crashes_nothing(tmp_path: Path) -> None:
    book = reloading.RuleBook(tmp_path)
    (tmp_path / "bad.yaml").write_text("name: [\n")
    report = book.refresh()
    assert report.rejected == (str(tmp_path / "bad.yaml"),)
    assert book.rules == {}


def test_deleted_file_disables_its_rules(tmp_path: Path) -> None:
    write(tmp_path / "pets.yaml", "pets")
    write(tmp_path / "cats.yaml", "cats")
    book = reloading.RuleBook(tmp_path)
    book.refresh()
    (tmp_path / "pets.yaml").unlink()
    assert book.refresh().removed == (str(tmp_path / "pets.yaml"),)
    assert sorted(book.rules) == ["cats"]


def test_duplicate_name_in_a_second_file_is_reported_and_the_first_stays(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "pets", 10)
    book = reloading.RuleBook(tmp_path)
    book.refresh()
    write(tmp_path / "b.yaml", "pets", 99)
    book.refresh()
    assert min_labels(book, "pets") == 10
    assert any("duplicate rule name" in e.render() for e in book.errors)


def test_configmap_symlink_swap_is_seen(tmp_path: Path) -> None:
    """Kubernetes updates a mounted ConfigMap by re-pointing the ..data symlink at a new folder."""
    mount = tmp_path / "rules"
    mount.mkdir()
    first = mount / "..2026_11_23_10_00_00.000000001"
    first.mkdir()
    write(first / "pets.yaml", "pets", 10)
    (mount / "..data").symlink_to(first.name)
    (mount / "pets.yaml").symlink_to("..data/pets.yaml")
    book = reloading.RuleBook(mount)
    book.refresh()
    assert sorted(book.rules) == ["pets"]
    assert min_labels(book, "pets") == 10

    second = mount / "..2026_11_23_10_05_00.000000002"
    second.mkdir()
    write(second / "pets.yaml", "pets", 30)
    tmp_link = mount / "..data_tmp"
    tmp_link.symlink_to(second.name)
    os.replace(tmp_link, mount / "..data")  # the atomic swap kubelet does
    assert book.refresh().changed
    assert min_labels(book, "pets") == 30
