"""Exact values of what operators are told (notices) and of the training progress the dashboard shows, and
the boundaries of a tuning search's choices: every text, id and branch pinned here, where mutation testing
runs (tests/core), not only in the daemon's tests."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from daemon.model import ids, notices, progress, rules, runs

T0 = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def run(state: runs.RunState, *, promotion: dict[str, Any] | None = None, **extra: Any) -> runs.RunRecord:
    return runs.RunRecord(
        run_key=ids.RunKey("demo-r7"),
        rule="demo",
        state=state,
        trigger="new_labels",
        reason="40 new labels",
        snapshot=None,
        created_at=T0,
        updated_at=T0 + timedelta(minutes=5),
        promotion=promotion or {},
        **extra,
    )


@pytest.mark.parametrize(
    ("decision", "verb"),
    [("promoted", "is the new champion"), ("rejected", "was rejected"), ("refused", "was refused")],
)
def test_a_gate_decision_is_told_with_model_version_and_score(decision: str, verb: str) -> None:
    promotion = {"decision": decision, "model": "pets", "version": "4", "reason": "0.51 beats 0.48"}
    notice = notices.for_run(run(runs.RunState.SUCCEEDED, promotion=promotion, metrics={"map50_95": 0.51234}))
    assert notice == notices.Notice(
        id=f"run:demo-r7:{decision}",
        kind=notices.NoticeKind(decision),
        title=f"pets v4 {verb} (mAP50-95 0.5123)",
        body="Run demo-r7 of rule demo: 0.51 beats 0.48",
        at=T0 + timedelta(minutes=5),
        rule="demo",
    )


def test_a_decision_without_score_model_or_reason_still_reads() -> None:
    notice = notices.for_run(run(runs.RunState.SUCCEEDED, promotion={"decision": "rejected", "version": 2}))
    assert notice is not None
    assert notice.title == "the model v2 was rejected"
    assert notice.body == "Run demo-r7 of rule demo: "
    # An integer score is a score too; a text is not.
    scored = notices.for_run(run(runs.RunState.SUCCEEDED, promotion={"decision": "promoted"}, metrics={"map50_95": 1}))
    assert scored is not None and scored.title == "the model vNone is the new champion (mAP50-95 1.0000)"
    worded = notices.for_run(
        run(runs.RunState.SUCCEEDED, promotion={"decision": "promoted"}, metrics={"map50_95": "0.5"})
    )
    assert worded is not None and worded.title == "the model vNone is the new champion"


def test_a_decision_of_a_run_that_then_failed_says_both() -> None:
    promotion = {"decision": "promoted", "model": "pets", "version": "4", "reason": "better"}
    failed = notices.for_run(run(runs.RunState.FAILED, promotion=promotion, error="pod evicted"))
    assert failed is not None and failed.kind is notices.NoticeKind.PROMOTED
    assert failed.body == "Run demo-r7 of rule demo: better (ended failed: pod evicted)"
    silent = notices.for_run(run(runs.RunState.ABANDONED, promotion=promotion))
    assert silent is not None and silent.body == "Run demo-r7 of rule demo: better (ended abandoned: no error message)"


@pytest.mark.parametrize("state", [runs.RunState.FAILED, runs.RunState.ABANDONED])
def test_a_failure_is_told_with_its_error(state: runs.RunState) -> None:
    notice = notices.for_run(run(state, error="base weights not found"))
    assert notice == notices.Notice(
        id=f"run:demo-r7:{state.value}",
        kind=notices.NoticeKind(state.value),
        title=f"run demo-r7 of rule demo {state.value}",
        body="base weights not found",
        at=T0 + timedelta(minutes=5),
        rule="demo",
    )
    bare = notices.for_run(run(state))
    assert bare is not None and bare.body == f"the run ended {state.value} without an error message"


@pytest.mark.parametrize("state", [runs.RunState.INTENDED, runs.RunState.SUBMITTED, runs.RunState.RUNNING])
def test_an_active_run_tells_nothing(state: runs.RunState) -> None:
    assert notices.for_run(run(state, promotion={"decision": "promoted"})) is None


def test_a_success_without_a_readable_decision_tells_nothing() -> None:
    assert notices.for_run(run(runs.RunState.SUCCEEDED)) is None
    assert notices.for_run(run(runs.RunState.SUCCEEDED, promotion={"decision": "unknown"})) is None


def test_a_source_down_notice_counts_whole_minutes_and_is_one_per_disconnection() -> None:
    since = T0
    notice = notices.source_down("minio", since=since, at=T0 + timedelta(seconds=179), error="connection refused")
    digest = hashlib.sha256(since.isoformat().encode()).hexdigest()[:24]
    assert notice == notices.Notice(
        id=f"source:minio:{digest}",
        kind=notices.NoticeKind.SOURCE_DOWN,
        title="source minio disconnected for 2 min",
        body=f"Down since {since.isoformat()}: connection refused. Events meanwhile are caught up by the next "
        "reconcile once it is back.",
        at=T0 + timedelta(seconds=179),
    )
    assert notice.rule is None
    later = notices.source_down("minio", since=since, at=T0 + timedelta(hours=1), error=None)
    assert later.id == notice.id  # the same episode: one notice
    assert later.title == "source minio disconnected for 60 min"
    assert "no error reported" in later.body
    clock_behind = notices.source_down("minio", since=since, at=T0 - timedelta(minutes=3), error=None)
    assert clock_behind.title == "source minio disconnected for 0 min"
    other = notices.source_down("minio", since=since + timedelta(seconds=1), at=T0, error=None)
    assert other.id != notice.id


def test_a_refused_rule_file_is_one_notice_per_file_and_error() -> None:
    notice = notices.rule_rejected("rules/a.yaml", "line 3: bad", at=T0)
    digest = hashlib.sha256(b"rules/a.yaml\0line 3: bad").hexdigest()[:24]
    assert notice == notices.Notice(
        id=f"rules:{digest}",
        kind=notices.NoticeKind.RULE_REJECTED,
        title="rule file rules/a.yaml refused",
        body="line 3: bad. The file's last good version stays in force.",
        at=T0,
    )
    # The parts are kept apart: the same characters split differently are another notice.
    assert notices.rule_rejected("rules/a.yaml", "line 3: badx", at=T0).id != notice.id
    assert notices.rule_rejected("rules/a.yam", "lline 3: bad", at=T0).id != notice.id


def test_notice_kinds_are_the_texts_the_journal_and_targets_use() -> None:
    assert [k.value for k in notices.NoticeKind] == [
        "promoted",
        "rejected",
        "refused",
        "failed",
        "abandoned",
        "waiting",
        "source_down",
        "rule_rejected",
    ]


# --- training progress -------------------------------------------------------------------------------------


def point(epoch: int, value: float) -> progress.EpochPoint:
    return progress.EpochPoint(epoch=epoch, map50_95=value)


def test_progress_points_are_in_epoch_order_and_a_repeated_epoch_replaces_the_earlier() -> None:
    board = progress.ProgressBoard()
    assert board.get("r1") is None
    board.add_point("r1", point(2, 0.2), epochs=None, source="log")
    board.add_point("r1", point(1, 0.1), epochs=30, source="log")
    board.add_point("r1", point(2, 0.25), epochs=None, source="log")  # resumed: epoch 2 reported again
    found = board.get("r1")
    assert found == progress.RunProgress(epochs=30, points=(point(1, 0.1), point(2, 0.25)), source="log")
    assert found.epoch == 2
    assert not found.final and found.mlflow_run_id is None


def test_progress_replaced_from_mlflow_keeps_what_it_does_not_say() -> None:
    board = progress.ProgressBoard()
    board.add_point("r1", point(1, 0.1), epochs=30, source="log")
    board.replace_points("r1", [point(3, 0.3), point(2, 0.2)], epochs=None, mlflow_run_id="abc", source="mlflow")
    assert board.get("r1") == progress.RunProgress(
        epochs=30, points=(point(2, 0.2), point(3, 0.3)), mlflow_run_id="abc", source="mlflow"
    )
    board.replace_points("r1", [], epochs=40, mlflow_run_id=None, source="mlflow")
    again = board.get("r1")
    assert again is not None
    assert (again.epochs, again.points, again.mlflow_run_id, again.epoch) == (40, (), "abc", 0)


def test_progress_marked_final_and_the_board_keeps_the_latest_runs() -> None:
    board = progress.ProgressBoard(keep=2)
    board.add_point("r1", point(1, 0.1), epochs=3, source="log")
    board.mark_final("r1")
    final = board.get("r1")
    assert final is not None and final.final and final.points == (point(1, 0.1),)
    board.mark_final("new")  # a run known only by its end
    assert board.get("new") == progress.RunProgress(final=True)
    board.add_point("r1", point(2, 0.2), epochs=None, source="log")  # r1 is the latest again
    board.add_point("r3", point(1, 0.1), epochs=None, source="log")  # evicts the oldest: "new"
    assert board.get("new") is None
    assert board.get("r1") is not None and board.get("r3") is not None
    board.add_point("r4", point(1, 0.1), epochs=None, source="log")
    assert board.get("r1") is None and board.get("r3") is not None and board.get("r4") is not None


def test_progress_defaults() -> None:
    assert progress.ProgressBoard().keep == 50
    empty = progress.RunProgress()
    assert (empty.epochs, empty.points, empty.final, empty.mlflow_run_id, empty.source, empty.epoch) == (
        None,
        (),
        False,
        None,
        "",
        0,
    )
    assert point(1, 0.5).map50 is None


# --- choices of a tuning search ----------------------------------------------------------------------------


def space(name: str, choices: list[Any]) -> rules.TuneSpec:
    return rules.TuneSpec.model_validate({"trials": 2, "space": {name: {"choices": choices}}})


@pytest.mark.parametrize(
    ("name", "choices"),
    [
        ("imgsz", [32, 64]),
        ("imgsz", [640, 1280]),
        ("batch", [1, 2]),
        ("optimizer", ["auto", "RMSProp"]),
        ("lr0", [0.01, 1]),
        ("momentum", [0, 0.9]),
    ],
)
def test_search_choices_at_their_boundaries_are_accepted(name: str, choices: list[Any]) -> None:
    assert space(name, choices).space[name] == rules.SearchChoice(choices=choices)


@pytest.mark.parametrize(
    ("name", "choices", "message"),
    [
        ("imgsz", [64, 0], "imgsz: 0 is not a multiple of 32 of at least 32"),
        ("imgsz", [64, 48], "imgsz: 48 is not a multiple of 32 of at least 32"),
        ("imgsz", [64, 33], "imgsz: 33 is not a multiple of 32 of at least 32"),
        ("imgsz", [64, "big"], "imgsz: 'big' is not a multiple of 32 of at least 32"),
        ("imgsz", [64, 64.0], "imgsz: 64.0 is not a multiple of 32 of at least 32"),
        ("batch", [4, 0], "batch: 0 is not a positive whole number"),
        ("batch", [4, 2.5], "batch: 2.5 is not a positive whole number"),
        ("batch", [4, "x"], "batch: 'x' is not a positive whole number"),
        ("optimizer", ["SGD", "sgd"], "optimizer: 'sgd' is not one of auto, SGD, Adam, Adamax, AdamW, NAdam, RAdam"),
        ("weight_decay", [0.1, "none"], "weight_decay: 'none' is not a number"),
    ],
)
def test_search_choices_past_their_boundaries_are_refused(name: str, choices: list[Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        space(name, choices)
    assert message in str(caught.value)


def test_the_first_bad_choice_is_named() -> None:
    with pytest.raises(ValidationError) as caught:
        space("imgsz", [16, 48])
    assert "imgsz: 16 is not a multiple" in str(caught.value) and "imgsz: 48" not in str(caught.value)


def test_a_source_down_without_an_error_says_so_exactly() -> None:
    notice = notices.source_down("minio", since=T0, at=T0, error=None)
    assert notice.body == (
        f"Down since {T0.isoformat()}: no error reported. Events meanwhile are caught up by the next reconcile "
        "once it is back."
    )


def test_progress_replaced_for_a_run_not_seen_before() -> None:
    board = progress.ProgressBoard()
    board.replace_points("r9", [point(1, 0.1)], epochs=5, mlflow_run_id="m9", source="mlflow")
    assert board.get("r9") == progress.RunProgress(
        epochs=5, points=(point(1, 0.1),), mlflow_run_id="m9", source="mlflow"
    )


def test_a_search_space_built_from_models_keeps_its_kinds() -> None:
    # Revalidated from model instances (not YAML dicts): a choice stays a choice, a range a range.
    tune = rules.TuneSpec(
        trials=2,
        space={"imgsz": rules.SearchChoice(choices=[320, 640]), "lr0": rules.SearchRange(low=0.001, high=0.1)},
    )
    again = rules.TuneSpec.model_validate(tune.model_dump())
    assert again.space["imgsz"] == rules.SearchChoice(choices=[320, 640])
    assert again.space["lr0"] == rules.SearchRange(low=0.001, high=0.1)
    assert rules.TuneSpec.model_validate(tune).space == tune.space


def test_a_waiting_run_is_told_once_per_wait_with_its_minutes() -> None:
    run = runs.RunRecord(
        run_key=ids.RunKey("pets-1"),
        rule="pets",
        state=runs.RunState.RUNNING,
        trigger="new_labels",
        reason="r",
        snapshot=None,
        created_at=T0,
        updated_at=T0,
    )
    since = T0 - timedelta(minutes=16, seconds=29)
    notice = notices.run_waiting(run, since=since, at=T0, reason="task x has not started")
    assert (notice.kind, notice.rule, notice.body) == (notices.NoticeKind.WAITING, "pets", "task x has not started")
    assert notice.title == "run pets-1 of rule pets has waited 16 min to start"
    assert notice.id == notices.run_waiting(run, since=since, at=T0 + timedelta(hours=1), reason="other").id
    assert notice.id != notices.run_waiting(run, since=since + timedelta(seconds=1), at=T0, reason="x").id
    assert notices.run_waiting(run, since=T0, at=T0, reason="x").title.endswith("waited 1 min to start")
    assert notices.for_run(run) is None  # still active: no outcome notice
    assert run.waiting is None
    waiting = dataclasses.replace(run, error="waiting to start since ...")
    assert waiting.waiting == "waiting to start since ..."
    assert dataclasses.replace(waiting, state=runs.RunState.FAILED).waiting is None
    assert dataclasses.replace(run, error="").waiting is None
