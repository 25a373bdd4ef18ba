"""Rule files: the schema, the examples in rules/, and `retrain rules check` on broken files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from daemon.model import durations, rules
from daemon.rules import loading

ROOT = Path(__file__).resolve().parents[2]
BROKEN = Path(__file__).parent / "data" / "broken_rules"
RETRAIN = shutil.which("retrain") or str(Path(sys.executable).with_name("retrain"))

MINIMAL = """
name: pets
dataset: {source: "s3://datasets/pets/"}
model: {registered_name: pets-detector}
triggers:
  - new_labels: {min_new_labels: 10}
"""


def check(*paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAIN_")}
    return subprocess.run(
        [RETRAIN, "rules", "check", *map(str, paths)], capture_output=True, text=True, cwd=cwd, env=env, timeout=60
    )


def test_every_example_in_rules_is_valid() -> None:
    result = loading.load_paths([ROOT / "rules"])
    assert result.errors == []
    assert len(result.rules) >= 3
    assert check(ROOT / "rules").returncode == 0
    # The default path is the configured rules folder.
    assert check().returncode == 0


def test_rules_check_reports_every_error_with_file_and_line() -> None:
    result = check(BROKEN.relative_to(ROOT))
    assert result.returncode == 1
    d = "tests/core/data/broken_rules"
    expected = [
        f"{d}/01-typos-and-ranges.yaml:6: rule 'alpha': field 'triggers[0].new_labels.min_new_labels': "
        "Input should be greater than or equal to 1, got 0",
        f"{d}/01-typos-and-ranges.yaml:6: rule 'alpha': field 'triggers[0].new_labels.quiet_priod': "
        "unknown field; did you mean 'quiet_period'?",
        f"{d}/01-typos-and-ranges.yaml:7: rule 'alpha': field 'triggers[1].schedule.cron': "
        "bad cron expression '61 3 * * 0': minute: 61 is out of range 0-59",
        f"{d}/01-typos-and-ranges.yaml:7: rule 'alpha': field 'triggers[1].schedule.timezone': "
        "unknown timezone 'Mars/Olympus': use an IANA name like Europe/Berlin or UTC",
        f"{d}/01-typos-and-ranges.yaml:8: rule 'alpha': field 'triggers[2].class_drift.statistic': "
        "Input should be 'jensen_shannon' or 'psi', got 'wasserstein'",
        f"{d}/01-typos-and-ranges.yaml:8: rule 'alpha': field 'triggers[2].class_drift.threshold': "
        "Input should be greater than 0, got -0.1",
        f"{d}/01-typos-and-ranges.yaml:9: rule 'alpha': field 'limits.cooldown': "
        "'soon' is not a duration: use a number with a unit s, m, h, d or w, e.g. 90s, 10m, 6h, 1h30m",
        f"{d}/01-typos-and-ranges.yaml:9: rule 'alpha': field 'limits.max_concurrent_runs': "
        "Input should be greater than or equal to 1, got 0",
        f"{d}/02-unreadable.yaml:2: unreadable YAML: expected ',' or ']', but got '<stream end>'",
        f"{d}/04-duplicate-name.yaml:6: rule 'beta': field 'name': "
        f"duplicate rule name: already defined at {d}/03-valid-first.yaml:1",
        f"{d}/05-structure.yaml:1: rule 'Delta_Rule': field 'name': 'Delta_Rule' is not a valid rule name: "
        "lower-case letters, digits and '-', starting and ending with a letter or digit, at most 48 characters",
        f"{d}/05-structure.yaml:2: rule 'Delta_Rule': field 'dataset.source': "
        "'http://example/data' is neither s3://bucket/prefix/ nor file:///path",
        f"{d}/05-structure.yaml:3: rule 'Delta_Rule': field 'model.base': "
        "'weights.bin': base must be .pt weights (s3://..., file:///... or a file in the trainer image), "
        "a .yaml model config or models:/...",
        f"{d}/05-structure.yaml:5: rule 'Delta_Rule': field 'triggers[0]': a trigger has exactly one of "
        "new_labels, schedule, class_drift, metric_drift; got new_labels, schedule",
        f"{d}/05-structure.yaml:9: rule 'Delta_Rule': field 'training.tune.space.lr0': "
        "low (0.1) must be below high (0.01)",
        f"{d}/05-structure.yaml:7: rule 'Delta_Rule': field 'trainng': unknown field; did you mean 'training'?",
    ]
    assert result.stdout.splitlines() == expected
    assert "16 error(s)" in result.stderr


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    result = check(tmp_path / "nope.yaml")
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}: no such file or folder" in result.stdout


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing\n")
    result = loading.load_paths([tmp_path])
    assert [e.render() for e in result.errors] == [f"{tmp_path / 'empty.yaml'}:1: the file holds no rule"]


def test_several_rules_per_file_as_documents_and_as_list(tmp_path: Path) -> None:
    second = MINIMAL.replace("name: pets", "name: cats")
    (tmp_path / "docs.yaml").write_text(MINIMAL + "---\n" + second)
    third = "rules:\n" + "".join(
        f"  - name: {n}\n    dataset: {{source: 'file:///d/{n}'}}\n    model: {{registered_name: {n}}}\n"
        "    triggers: [{new_labels: {}}]\n"
        for n in ("dogs", "birds")
    )
    (tmp_path / "list.yaml").write_text(third)
    result = loading.load_paths([tmp_path])
    assert result.errors == []
    assert sorted(result.rules) == ["birds", "cats", "dogs", "pets"]
    assert result.rules["birds"].line == 6


def test_defaults_and_durations() -> None:
    [loaded] = loading.parse_text(MINIMAL, file="m.yaml").rules
    rule = loaded.rule
    trigger = rule.triggers[0].new_labels
    assert trigger is not None
    assert (trigger.quiet_period, trigger.max_wait) == (timedelta(minutes=10), timedelta(hours=6))
    assert rule.limits.cooldown == timedelta(hours=1)
    assert rule.dataset_name == "pets"
    assert rule.model.base == "yolov8n.yaml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("6h", timedelta(hours=6)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("0s", timedelta(0)),
        ("1.5h", timedelta(minutes=90)),
    ],
)
def test_human_durations(text: str, expected: timedelta) -> None:
    assert durations.parse(text) == expected


@pytest.mark.parametrize("text", ["10", "ten minutes", "10 mins", "-5m", "", "5x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        durations.parse(text)


def test_duration_round_trip() -> None:
    assert durations.format(timedelta(minutes=90)) == "1h30m"
    assert durations.format(timedelta(seconds=42)) == "42s"


def test_search_space_compact_and_long_forms() -> None:
    text = MINIMAL + (
        "training:\n  tune:\n    trials: 4\n    parallelism: 2\n"
        "    space: {lr0: [1.0e-4, 1.0e-1, log], momentum: {low: 0.6, high: 0.98}}\n"
    )
    [loaded] = loading.parse_text(text, file="t.yaml").rules
    tune = loaded.rule.training.tune
    assert tune is not None
    assert tune.space["lr0"] == rules.SearchRange(low=1e-4, high=1e-1, scale="log")
    assert tune.space["momentum"].scale == "linear"  # type: ignore[union-attr]


def test_search_space_choices_and_the_optimizer_setting() -> None:
    text = MINIMAL + (
        "training:\n  optimizer: AdamW\n  hyperparameters: {lr0: 0.002}\n  tune:\n    trials: 4\n"
        "    space: {optimizer: {choices: [SGD, AdamW]}, imgsz: {choices: [320, 640]}, lr0: [1.0e-4, 1.0e-1, log]}\n"
    )
    [loaded] = loading.parse_text(text, file="t.yaml").rules
    tune = loaded.rule.training.tune
    assert tune is not None
    assert tune.space["optimizer"] == rules.SearchChoice(choices=["SGD", "AdamW"])
    assert tune.space["imgsz"] == rules.SearchChoice(choices=[320, 640])
    from pipelines import arguments

    assert arguments.fixed_hyperparameters(loaded.rule.training) == {"lr0": 0.002, "optimizer": "AdamW"}
    [auto] = loading.parse_text(MINIMAL, file="m.yaml").rules
    assert arguments.fixed_hyperparameters(auto.rule.training) == {}  # auto: named only when lr0/momentum are set


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            "training: {tune: {trials: 2, parallelism: 3, space: {lr0: [0.001, 0.1]}}}",
            "parallelism (3) exceeds trials (2)",
        ),
        ("training: {tune: {trials: 2, space: {lr0: [0, 0.1, log]}}}", "a log scale needs low > 0"),
        ("training: {tune: {trials: 2, space: {warp: [0.1, 0.2]}}}", "cannot tune warp"),
        ("training: {imgsz: 100}", "multiple of 32"),
        ("training: {tune: {trials: 2, space: {optimizer: {choices: [SGD, Lion]}}}}", "'Lion' is not one of auto"),
        ("training: {tune: {trials: 2, space: {imgsz: {choices: [320, 100]}}}}", "imgsz: 100 is not a multiple"),
        ("training: {tune: {trials: 2, space: {batch: [4, 16]}}}", "batch is tuned from a list"),
        ("training: {tune: {trials: 2, space: {lr0: {choices: [0.01, fast]}}}}", "lr0: 'fast' is not a number"),
        ("training: {tune: {trials: 2, space: {lr0: {choices: [0.01, 0.01]}}}}", "choices repeat a value"),
        ("training: {optimizer: Lion}", "'Lion'"),
        ("promotion: {min_improvement: -0.1}", "greater than or equal to 0"),
        ("promotion: {metric: accuracy}", "got 'accuracy'"),
        ("limits: {cooldown: 30}", "is not a duration"),
    ],
)
def test_schema_rejects(snippet: str, message: str) -> None:
    result = loading.parse_text(MINIMAL + snippet + "\n", file="x.yaml")
    assert result.rules == ()
    assert any(message in e.render() for e in result.errors), [e.render() for e in result.errors]


def test_quiet_period_longer_than_max_wait_is_rejected() -> None:
    text = MINIMAL.replace("{min_new_labels: 10}", "{quiet_period: 2h, max_wait: 1h}")
    [error] = loading.parse_text(text, file="x.yaml").errors
    assert "max_wait (1h) is shorter than quiet_period (2h)" in error.render()
    assert error.line == 6
