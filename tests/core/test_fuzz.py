"""Malformed input, fuzzed (hypothesis): rule files and label files. Nothing crashes, every refusal names
the file, and nothing bad takes effect (the last good rules stay; bad label lines are reported, not counted).
Webhook bodies are fuzzed against the real app in tests/test_webhook.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from daemon.engine import labels
from daemon.rules import loading, reloading
from pipelines.steps import validating
from tests.support.budget import examples

pytestmark = pytest.mark.faults

GOOD = """name: fuzzed
dataset: {source: "s3://datasets/fuzzed/"}
model: {registered_name: fuzzed-detector}
triggers:
  - new_labels: {min_new_labels: 10, quiet_period: 5m}
limits: {cooldown: 1h}
"""

yaml_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["name", "dataset", "model", "triggers", "limits", "training", "promotion", "enabled", "tuning"]


def mutated_rules() -> st.SearchStrategy[str]:
    """The good rule with fields dropped, replaced by random YAML values or added."""
    base = yaml.safe_load(GOOD)

    def mutate(changes: dict[str, object], drop: list[str]) -> str:
        document = {k: v for k, v in base.items() if k not in drop}
        document.update(changes)
        return yaml.safe_dump(document)

    return st.builds(
        mutate,
        st.dictionaries(st.sampled_from(FIELDS), yaml_values, max_size=3),
        st.lists(st.sampled_from(FIELDS), max_size=2),
    )


rule_texts = st.one_of(
    mutated_rules(),
    st.text(max_size=300),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.builds(lambda cut: GOOD[:cut], st.integers(0, len(GOOD))),
)


@settings(max_examples=examples(300), deadline=None)
@given(text=rule_texts)
@example(text="\x08")  # a control character once escaped the YAML reader's error handling
def test_any_rule_text_is_parsed_or_refused_with_its_file_named(text: str) -> None:
    result = loading.parse_text(text, file="fuzzed.yaml")
    for error in result.errors:
        assert error.render().startswith("fuzzed.yaml"), error.render()
    for loaded in result.rules:
        assert loaded.rule.name  # whatever parsed is a complete, valid rule


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=rule_texts)
def test_a_fuzzed_edit_never_replaces_the_last_good_rule(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "rules"
    folder.mkdir(exist_ok=True)
    path = folder / "fuzzed.yaml"
    path.write_text(GOOD)
    book = reloading.RuleBook(folder)
    book.refresh()
    good = book.rules["fuzzed"].rule
    path.write_text(text)
    book.refresh()
    fresh = loading.parse_text(text, file=str(path))
    if fresh.errors or not fresh.rules:
        assert book.rules.get("fuzzed") is not None and book.rules["fuzzed"].rule == good  # last good stays
    else:
        assert {r.rule.name for r in fresh.rules} == set(book.rules)


label_lines = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(
            st.integers(-3, 90).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=4)
        ),
        min_size=0,
        max_size=7,
    ).map(" ".join),
)


@settings(max_examples=examples(400), deadline=None)
@given(lines=st.lists(label_lines, max_size=8))
def test_any_label_file_is_counted_leniently_and_checked_strictly(lines: list[str]) -> None:
    text = "\n".join(lines)
    counts = labels.class_counts(text)
    problems = validating.check_label(text, name="bad.txt", classes=80)
    assert all(key.isdigit() and n > 0 for key, n in counts.items())
    assert all(problem.startswith("bad.txt:") for problem in problems)
    if not problems:
        # A clean file: every counted box is a valid line with a class in range.
        boxes = [line.split() for line in text.splitlines() if line.strip()]
        assert sum(counts.values()) == len(boxes)
        assert all(0 <= int(float(parts[0])) < 80 for parts in boxes)
