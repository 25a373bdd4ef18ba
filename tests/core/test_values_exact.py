"""The pure core's small functions, value by value: outcomes and their JSON, event keys and ids, durations,
snapshots and run keys, label counting, drift statistics, rule validation messages, the gate's reasons."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

import pytest

from daemon.engine import drift, gating, labels, snapshots
from daemon.model import durations, events, outcomes, rules
from daemon.rules import loading

# --- outcomes -------------------------------------------------------------------------------------------------------


def test_an_evaluation_round_trips_through_json_with_nan_as_null() -> None:
    evaluation = outcomes.Evaluation(
        map50_95=0.4, map50=0.6, per_class={"cat": 0.5, "dog": math.nan}, split="test", images=12
    )
    data = evaluation.to_json()
    assert data == {
        "map50_95": 0.4,
        "map50": 0.6,
        "per_class": {"cat": 0.5, "dog": None},
        "split": "test",
        "images": 12,
    }
    back = outcomes.Evaluation.from_json(data)
    assert (back.map50_95, back.map50, back.per_class["cat"], back.split, back.images) == (0.4, 0.6, 0.5, "test", 12)
    assert math.isnan(back.per_class["dog"])
    assert outcomes.Evaluation.from_json({"map50_95": "0.3"}) == outcomes.Evaluation(map50_95=0.3, map50=0.0)
    assert evaluation.metric("map50_95") == 0.4 and evaluation.metric("map50") == 0.6


def test_a_gate_outcome_round_trips_through_json() -> None:
    outcome = outcomes.GateOutcome(
        model="pets-detector",
        version="3",
        decision=outcomes.GateDecision.REJECTED,
        reason="not better",
        previous_champion="2",
        candidate=outcomes.Evaluation(map50_95=0.3, map50=0.5),
        champion=outcomes.Evaluation(map50_95=0.4, map50=0.6, per_class={"cat": 0.4}),
        recovered=True,
        run_id="abc123",
    )
    data = outcome.to_json()
    assert data == {
        "model": "pets-detector",
        "version": "3",
        "decision": "rejected",
        "reason": "not better",
        "previous_champion": "2",
        "candidate": {"map50_95": 0.3, "map50": 0.5, "per_class": {}, "split": "val", "images": None},
        "champion": {"map50_95": 0.4, "map50": 0.6, "per_class": {"cat": 0.4}, "split": "val", "images": None},
        "recovered": True,
        "run_id": "abc123",
    }
    assert outcomes.GateOutcome.from_json(data) == outcome
    assert not outcome.promoted
    minimal = outcomes.GateOutcome.from_json({"model": "m", "version": 7, "decision": "promoted"})
    assert minimal == outcomes.GateOutcome(model="m", version="7", decision=outcomes.GateDecision.PROMOTED, reason="")
    assert minimal.promoted and minimal.to_json()["candidate"] is None and minimal.to_json()["recovered"] is False
    assert minimal.run_id is None
    assert outcomes.GateOutcome.from_json({**data, "previous_champion": 5}).previous_champion == "5"
    with pytest.raises(ValueError, match="'maybe' is not a valid GateDecision"):
        outcomes.GateOutcome.from_json({**data, "decision": "maybe"})
    with pytest.raises(KeyError):
        outcomes.GateOutcome.from_json({"version": "1", "decision": "promoted"})


def test_only_promotions_and_rollbacks_move_the_champion() -> None:
    assert [k.value for k in outcomes.PromotionKind if k.moves_champion] == ["promoted", "rollback"]


# --- events ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("labels/train/a.txt", events.ItemKind.LABEL),
        ("labels/a.TXT", events.ItemKind.LABEL),  # suffixes in any case (materializing writes them lower-case)
        ("images/val/deep/a.JPG", events.ItemKind.IMAGE),
        ("images/a.webp", events.ItemKind.IMAGE),
        ("images/a.txt", events.ItemKind.OTHER),
        ("labels/a.jpg", events.ItemKind.OTHER),
        ("labels/.hidden.txt", events.ItemKind.OTHER),
        ("labels/", events.ItemKind.OTHER),
        ("a.txt", events.ItemKind.OTHER),
        ("notes/labels.txt", events.ItemKind.OTHER),
        ("images/noextension", events.ItemKind.OTHER),
    ],
)
def test_classify(key: str, kind: events.ItemKind) -> None:
    assert events.classify(key) is kind


@pytest.mark.parametrize(
    ("key", "kind"),
    [
        ("a.txt", events.ItemKind.LABEL),  # images and labels side by side, with or without split folders
        ("train/a.txt", events.ItemKind.LABEL),
        ("valid/deep/a.TXT", events.ItemKind.LABEL),
        ("a.jpg", events.ItemKind.IMAGE),
        ("test/a.PNG", events.ItemKind.IMAGE),
        ("classes.txt", events.ItemKind.OTHER),  # the class list darknet-style exports put beside the labels
        ("train/Classes.txt", events.ItemKind.OTHER),
        ("README.txt", events.ItemKind.OTHER),
        ("license.TXT", events.ItemKind.OTHER),
        (".a.txt", events.ItemKind.OTHER),
        ("data.yaml", events.ItemKind.OTHER),
        ("a.txt.bak", events.ItemKind.OTHER),
    ],
)
def test_classify_a_flat_folder(key: str, kind: events.ItemKind) -> None:
    assert events.classify(key, layout="flat") is kind


def test_classify_with_other_folder_names() -> None:
    assert events.classify("ann/x.txt", labels_dir="ann", images_dir="pix") is events.ItemKind.LABEL
    assert events.classify("pix/x.png", labels_dir="ann", images_dir="pix") is events.ItemKind.IMAGE
    assert events.classify("labels/x.txt", labels_dir="ann", images_dir="pix") is events.ItemKind.OTHER


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("labels/café.txt", None),
        (b"labels/caf\xe9.txt".decode("utf-8", "surrogateescape"), "the name is not valid UTF-8"),
        ("labels/a\ud800.txt", "the name is not valid UTF-8"),
        ("labels/a\0b.txt", "the name holds a NUL character"),
        ("k" * 1024, None),
        ("k" * 1025, "the name is longer than 1024 bytes"),
        ("é" * 512, None),  # 1024 bytes in UTF-8
        ("é" * 513, "the name is longer than 1024 bytes"),
    ],
)
def test_key_problems(key: str, problem: str | None) -> None:
    assert events.key_problem(key) == problem


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("plain.txt", "plain.txt"),
        (b"caf\xe9.txt".decode("utf-8", "surrogateescape"), "caf\\xe9.txt"),
        ("a\ud800b", "a\\ud800b"),
        ("x\0y", "x\\x00y"),
        ("é", "é"),
    ],
)
def test_escaped_names(key: str, shown: str) -> None:
    assert events.escaped(key) == shown


def test_versions_and_event_ids() -> None:
    assert events.version_of(etag='"abc"', size=1, mtime_ns=2) == "abc"
    assert events.version_of(etag=None, size=10, mtime_ns=20) == "10:20"
    assert events.version_of(etag="", size=10, mtime_ns=20) == "10:20"
    present = events.event_id(dataset="d", key="k", kind=events.ChangeKind.CREATED, version="v", generation=0)
    digest = hashlib.sha256(b"d\0k\0present\0v\x000").hexdigest()[:32]
    assert present == digest
    assert present == events.event_id(dataset="d", key="k", kind=events.ChangeKind.CHANGED, version="v", generation=0)
    deleted = events.event_id(dataset="d", key="k", kind=events.ChangeKind.DELETED, version="v", generation=0)
    assert deleted == hashlib.sha256(b"d\0k\0deleted\0v\x000").hexdigest()[:32]
    again = events.event_id(dataset="d", key="k", kind=events.ChangeKind.CREATED, version="v", generation=1)
    assert len({present, deleted, again}) == 3


# --- durations, snapshots, labels --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("10m", 600), ("1h30m", 5400), ("2d", 172800), ("1w", 604800), (" 1H 5M ", 3900), ("0.5h", 1800)],
)
def test_parse_durations(text: str, seconds: float) -> None:
    assert durations.parse(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10x", "1h30", "-1m", "h1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration: use a number with a unit s, m, h, d or w"):
        durations.parse(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (-5, "0s"),
        (0.9, "0s"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (61, "1m1s"),
        (3600, "1h"),
        (5400, "1h30m"),
        (86400, "1d"),
        (90061, "1d1h1m1s"),
        (604800, "7d"),
    ],
)
def test_format_durations(seconds: float, text: str) -> None:
    assert durations.format(timedelta(seconds=seconds)) == text


def test_fingerprints_and_run_keys() -> None:
    manifest = [("b", "2"), ("a", "1")]
    expected = hashlib.sha256(b"a\x001\nb\x002\n").hexdigest()
    assert snapshots.fingerprint(manifest) == expected
    assert snapshots.fingerprint(reversed(manifest)) == expected
    assert snapshots.fingerprint([]) is None
    assert snapshots.data_run_key("pets", expected) == f"pets-d{expected[:16]}"
    slot = datetime(2026, 11, 23, 3, 0, tzinfo=UTC) + timedelta(hours=1, minutes=5)
    assert snapshots.schedule_run_key("pets", slot) == "pets-s202611230405"
    assert snapshots.observation_run_key("pets", "0123456789abcdef0123") == "pets-m0123456789abcdef"


def test_label_counting_is_lenient() -> None:
    text = "0 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\n0 0.1 0.1 0.1 0.1\n\nx 1 1 1 1\n2 0.5 0.5\n-1 0.5 0.5 0.1 0.1\n"
    assert labels.class_counts(text) == {"0": 2, "1": 1}
    assert labels.class_counts("") == {}
    # Polygons (segmentation labels) are objects too, as training sees them: 3 points or more, an odd count.
    polygons = (
        "2 0.1 0.1 0.5 0.1 0.3 0.4\n2 0.1 0.1 0.5 0.1 0.3 0.4 0.2 0.2\n0 0.1 0.1 0.5 0.1 0.3\n0 1 2 3 4 5 6 7 8\n"
    )
    assert labels.class_counts(polygons) == {"2": 2, "0": 1}  # not the 6-number line


# --- drift --------------------------------------------------------------------------------------------------------


def test_drift_statistics_by_hand() -> None:
    assert drift.jensen_shannon({"a": 1}, {"a": 5}) == 0.0
    assert drift.jensen_shannon({"a": 1}, {"b": 1}) == 1.0
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); JS = (KL(p||m) + KL(q||m)) / 2
    p_m = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    q_m = math.log2(1 / 0.75)
    assert drift.jensen_shannon({"a": 1, "b": 1}, {"a": 2}) == pytest.approx((p_m + q_m) / 2)
    assert drift.psi({"a": 1}, {"a": 3}) == 0.0
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert drift.psi({"a": 1, "b": 1}, {"a": 1, "b": 3}) == pytest.approx(expected)
    one_sided = (1 - 1e-4) * math.log(1 / 1e-4) + (1e-4 - 1) * math.log(1e-4 / 1)
    assert drift.psi({"a": 1}, {"b": 1}) == pytest.approx(one_sided)
    assert drift.divergence("psi", {"a": 1, "b": 1}, {"a": 1, "b": 3}) == pytest.approx(expected)
    assert drift.divergence("jensen_shannon", {"a": 1}, {"b": 1}) == 1.0


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ({}, {"a": 1}, "both histograms need at least one count"),
        ({"a": 1}, {"a": 0}, "at least one count"),
        ({"a": 2, "b": -1}, {"a": 1}, "counts cannot be negative"),
    ],
)
def test_drift_refuses_unusable_histograms(reference: dict[str, int], current: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        drift.psi(reference, current)


def test_an_unknown_statistic_is_named() -> None:
    with pytest.raises(ValueError, match="unknown statistic 'kl': use one of jensen_shannon, psi"):
        drift.divergence("kl", {"a": 1}, {"a": 1})


# --- rule validation messages ---------------------------------------------------------------------------------------


def errors_of(text: str) -> list[str]:
    return [e.message for e in loading.parse_text(text, file="r.yaml").errors]


BASE = "name: r\ndataset: {source: 's3://datasets/r/'}\ntriggers: [{new_labels: {}}]\n"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("{registered_name: m, base: 'models:/m'}", "'models:/m': use models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("{registered_name: m, base: 's3://X/y.pt'}", "'s3://X/y.pt' is not s3://bucket/key.pt"),
        ("{registered_name: m, base: 'file://rel/y.pt'}", "must be an absolute file URI"),
        ("{registered_name: m, base: 'w.bin'}", "base must be .pt weights"),
        (
            "{registered_name: m, base: 'models:/m@champion', base_if_no_champion: 'models:/n@champion'}",
            "base_if_no_champion cannot itself be a registered model",
        ),
        ("{registered_name: m, base: 'models:/m@champion', base_if_no_champion: 'x.bin'}", "base must be .pt weights"),
    ],
)
def test_bad_bases(model: str, message: str) -> None:
    assert any(message in e for e in errors_of(f"{BASE}model: {model}\n")), errors_of(f"{BASE}model: {model}\n")


@pytest.mark.parametrize(
    "model",
    [
        "{registered_name: m, base: 'models:/m@champion'}",
        "{registered_name: m, base: 'models:/m/3'}",
        "{registered_name: m, base: 's3://models/y.pt'}",
        "{registered_name: m, base: 'file:///data/y.pt'}",
        "{registered_name: m, base: 'yolov8n.yml'}",
        "{registered_name: m, base: 'models:/m@champion', base_if_no_champion: 'yolov8n.yaml'}",
    ],
)
def test_good_bases(model: str) -> None:
    assert errors_of(f"{BASE}model: {model}\n") == []


def test_class_ids_by_name_or_id() -> None:
    [loaded] = loading.parse_text(
        BASE.replace("'s3://datasets/r/'", "'s3://datasets/r/', classes: [cat, dog]") + "model: {registered_name: m}\n",
        file="r.yaml",
    ).rules
    assert [loaded.rule.class_id(n) for n in ("cat", "dog", "0", "7", "emu")] == ["0", "1", "0", "7", "emu"]
    [plain] = loading.parse_text(BASE + "model: {registered_name: m}\n", file="r.yaml").rules
    assert plain.rule.class_id("cat") == "cat"


@pytest.mark.parametrize(
    ("trigger", "classes", "message"),
    [
        ("{min_per_class: {'5': 1}}", "[cat, dog]", "class id 5 is not in dataset.classes (0-1)"),
        ("{min_per_class: {cat: 1}}", None, "class 'cat' is a name: set dataset.classes, or use its class id"),
        ("{min_per_class: {emu: 1}}", "[cat, dog]", "unknown class 'emu'; dataset.classes are cat, dog"),
    ],
)
def test_per_class_minimums_name_known_classes(trigger: str, classes: str | None, message: str) -> None:
    dataset = f"{{source: 's3://datasets/r/'{', classes: ' + classes if classes else ''}}}"
    text = f"name: r\ndataset: {dataset}\nmodel: {{registered_name: m}}\ntriggers: [{{new_labels: {trigger}}}]\n"
    assert any(message in e for e in errors_of(text)), errors_of(text)
    fine = text.replace("'5'", "'1'").replace("emu", "dog")
    if classes:
        assert errors_of(fine) == []


@pytest.mark.parametrize(
    ("fragment", "message"),
    [
        ("triggers: [{new_labels: {max_wait: 0s, quiet_period: 0s}}]", "max_wait must be longer than 0s"),
        (
            "triggers: [{new_labels: {quiet_period: 2h, max_wait: 1h}}]",
            "max_wait (1h) is shorter than quiet_period (2h): the quiet period could never end a wait",
        ),
        ("training: {hyperparameters: {lr: 0.1}}", "unknown hyperparameter lr: tunable are"),
        ("training: {tune: {trials: 2, space: {foo: [0, 1]}}}", "cannot tune foo: tunable are"),
        ("renamed_from: Bad_Name", "'Bad_Name' is not a valid rule name"),
    ],
)
def test_more_rule_messages(fragment: str, message: str) -> None:
    text = BASE + "model: {registered_name: m}\n" + fragment + "\n"
    if fragment.startswith("triggers"):
        text = text.replace("triggers: [{new_labels: {}}]\n", "")
    assert any(message in e for e in errors_of(text)), errors_of(text)


# --- the gate's reasons ----------------------------------------------------------------------------------------


def scores(value: float, **per_class: float) -> outcomes.Evaluation:
    return outcomes.Evaluation(map50_95=value, map50=value + 0.1, per_class=per_class)


@pytest.mark.parametrize(
    ("candidate", "champion", "policy", "verdict"),
    [
        (
            scores(0.1),
            None,
            rules.PromotionSpec(first_model_min=0.1),
            gating.Verdict(promote=True, reason="first model: map50_95 0.1000 >= first_model_min 0.1"),
        ),
        (
            scores(0.0999999999),
            None,
            rules.PromotionSpec(first_model_min=0.1),  # within the float tolerance
            gating.Verdict(promote=True, reason="first model: map50_95 0.1000 >= first_model_min 0.1"),
        ),
        (
            scores(0.09),
            None,
            rules.PromotionSpec(first_model_min=0.1),
            gating.Verdict(promote=False, reason="first model: map50_95 0.0900 < first_model_min 0.1"),
        ),
        (
            scores(0.5),
            scores(0.4),
            rules.PromotionSpec(min_improvement=0.05),
            gating.Verdict(promote=True, reason="map50_95 0.5000 beats champion 0.4000 by +0.1000 (> 0.05)"),
        ),
        (
            scores(0.45),
            scores(0.4),
            rules.PromotionSpec(min_improvement=0.05),
            gating.Verdict(
                promote=False,
                reason=(
                    "map50_95 0.4500 vs champion 0.4000: improvement +0.0500 is not more than min_improvement 0.05"
                ),
            ),
        ),
        (
            scores(0.5, cat=0.3),
            scores(0.4, cat=0.4),
            rules.PromotionSpec(max_class_drop=0.1),
            gating.Verdict(promote=True, reason="map50_95 0.5000 beats champion 0.4000 by +0.1000 (> 0)"),
        ),
        (
            scores(0.5, cat=0.29),
            scores(0.4, cat=0.4),
            rules.PromotionSpec(max_class_drop=0.1),
            gating.Verdict(
                promote=False, reason="map50_95 improves +0.1000 but class cat drops 0.1100 (> max_class_drop 0.1)"
            ),
        ),
        (
            scores(0.5),
            scores(0.4),
            rules.PromotionSpec(metric="map50"),
            gating.Verdict(promote=True, reason="map50 0.6000 beats champion 0.5000 by +0.1000 (> 0)"),
        ),
    ],
)
def test_gate_verdicts_exactly(
    candidate: outcomes.Evaluation,
    champion: outcomes.Evaluation | None,
    policy: rules.PromotionSpec,
    verdict: gating.Verdict,
) -> None:
    assert gating.gate(candidate=candidate, champion=champion, policy=policy) == verdict


def test_the_largest_class_drop_is_reported() -> None:
    verdict = gating.gate(
        candidate=scores(0.9, a=0.5, b=0.1, c=0.4),
        champion=scores(0.4, a=0.7, b=0.6, c=0.45),
        policy=rules.PromotionSpec(max_class_drop=0.1),
    )
    assert verdict.reason.endswith("class b drops 0.5000 (> max_class_drop 0.1)")


def test_label_counting_skips_what_training_would_not_see_and_counts_a_class_by_its_number() -> None:
    text = (
        "0 0.5 0.5 0.1 0.1\n"
        "00 0.5 0.5 0.1 0.1\n"  # class 0 written with a leading zero
        "007 0.5 0.5 0.1 0.1\n"
        "1 nan 0.5 0.1 0.1\n"
        "1 0.5 inf 0.1 0.1\n"
        "1 0.5 0.5 -inf 0.1\n"
        "\u00b3 0.5 0.5 0.1 0.1\n"  # a superscript three: str.isdigit says yes, int() says no
        "\u0663 0.5 0.5 0.1 0.1\n"  # an Arabic-Indic three
        "2 0.1 0.1 0.5 0.1 nan 0.4\n"  # a polygon with a NaN point
        "2 0.1 0.1 0.5 0.1 0.3 0.4\n"
    )
    assert labels.class_counts(text) == {"0": 2, "7": 1, "2": 1}
