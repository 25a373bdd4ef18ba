"""`retrain explain RULE`: what the rule sees, the decision now with its reason, and the history."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon.journal import sqlite
from tests.support.sim import Simulation, label, make_rule

RETRAIN = shutil.which("retrain") or str(Path(sys.executable).with_name("retrain"))

RULE = """
name: pets
dataset: {source: "s3://datasets/pets/"}
model: {registered_name: pets-detector}
triggers:
  - new_labels: {min_new_labels: 3, quiet_period: 10m}
limits: {cooldown: 1h}
"""


def explain(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    env.update(RETRAIN_RULES__PATH=str(tmp_path / "rules"), RETRAIN_JOURNAL__PATH=str(tmp_path / "journal.db"))
    return subprocess.run([RETRAIN, "explain", *args], capture_output=True, text=True, env=env, timeout=60)


def test_explain_reads_the_journal_and_says_why(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pets.yaml").write_text(RULE)
    now = datetime.now(UTC)
    journal = sqlite.SqliteJournal(tmp_path / "journal.db")
    sim = Simulation(
        rule=make_rule(min_new_labels=3, quiet_period="10m"), journal=journal, now=now - timedelta(hours=2)
    )
    sim.drop([label("a"), label("b"), label("c")])
    sim.advance(timedelta(minutes=11))
    sim.step()  # launches: 3 new labels, quiet
    sim.now = now - timedelta(seconds=30)
    sim.drop([label("d", at=sim.now)])
    journal.close()

    result = explain(tmp_path, "pets")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "pending: 1 new or changed labels" in out
    assert f"active runs: {sim.launches[0].run_key}" in out
    assert "SKIP [below_threshold] 1/3 new labels" in out
    assert f"LAUNCH {sim.launches[0].run_key} [new_labels] 3 new labels (need 3), quiet for 11m" in out


def test_explain_without_a_journal_yet(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pets.yaml").write_text(RULE)
    result = explain(tmp_path, "pets")
    assert result.returncode == 0
    assert "does not exist yet" in result.stdout
    assert "SKIP [no_new_data] no new or changed labels" in result.stdout
    assert not (tmp_path / "journal.db").exists()


def test_explain_unknown_rule(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "pets.yaml").write_text(RULE)
    result = explain(tmp_path, "dogs")
    assert result.returncode == 1
    assert "no valid rule 'dogs'" in result.stderr
    assert "valid rules: pets" in result.stderr
