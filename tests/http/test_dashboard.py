"""The web dashboard in a real browser (Playwright driving Chromium) against a real daemon.

The journal is filled the way the daemon fills it (intents, the outcome recorder's run ends and promotion
records, a rollback record, a pause, labelled COCO photos dropped into the watched folder), the daemon is
started on it, and the page must show exactly that state; its buttons must reach the journal through the
token-guarded API, and a wrong token must be refused with a message.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from daemon import reactor, settings
from daemon.http import metrics as metrics_
from daemon.journal import base as journal_base
from daemon.journal import sqlite as journal_sqlite
from daemon.launchers import base as launcher_base
from daemon.model import decisions, ids, outcomes, rules, runs, state
from daemon.registry import mlflow as registry
from daemon.rules import reloading
from daemon.runtime import recording
from daemon.sources import base as source_base
from pipelines import synthetic
from tests.http.test_http import drop_labelled_images
from tests.support import apps, browser
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(300)

SHELVES = """name: shelves
dataset: {{source: "file://{data}"}}
model: {{registered_name: shelves-detector}}
triggers:
  - new_labels: {{min_new_labels: 5, quiet_period: 1h, max_wait: 6h}}
  - schedule: {{cron: "0 3 * * *"}}
limits: {{cooldown: 0s}}
"""
NIGHT = """name: night
dataset: {{source: "file://{data}"}}
model: {{registered_name: night-detector}}
triggers:
  - schedule: {{cron: "30 2 * * 0"}}
"""
T0 = datetime.now(UTC) - timedelta(days=3)
#: The versions the gate judged: (version, decision, mAP50-95, hours after T0).
JUDGED = [("1", "promoted", 0.30, 1), ("2", "rejected", 0.25, 20), ("3", "promoted", 0.42, 40)]
PER_CLASS_CANDIDATE = {"person": 0.5, "car": 0.3}
PER_CLASS_CHAMPION = {"person": 0.4, "car": 0.35}


@dataclass
class Dashboard:
    daemon: reactor.Reactor
    url: str
    journal: journal_base.Journal


def judged(journal: journal_base.Journal, recorder: recording.OutcomeRecorder) -> None:
    """Three runs of shelves, ended through the daemon's own outcome recorder, then a rollback of v3."""
    previous: str | None = None
    for version, decision, score, hours in JUDGED:
        at = T0 + timedelta(hours=hours)
        key = ids.RunKey(f"shelves-run{version}")
        launch = decisions.Launch(
            rule="shelves",
            run_key=key,
            trigger=decisions.TriggerKind.NEW_LABELS,
            reason=f"{version}0 new labels",
            snapshot=None,
            params={"model": {"registered_name": "shelves-detector"}, "dataset": {"source": "file:///data"}},
        )
        assert journal.record_intent(launch, at=at)
        journal.update_run(key, runs.RunState.SUBMITTED, at=at, backend="local", backend_run_id=f"pid-{version}")
        run = journal.get_run(key)
        assert run is not None
        outcome = outcomes.GateOutcome(
            model="shelves-detector",
            version=version,
            decision=outcomes.GateDecision(decision),
            reason=f"v{version} {decision} by the gate",
            previous_champion=previous,
            candidate=outcomes.Evaluation(map50_95=score, map50=score + 0.2, per_class=PER_CLASS_CANDIDATE),
            champion=outcomes.Evaluation(map50_95=0.3, map50=0.5, per_class=PER_CLASS_CHAMPION) if previous else None,
            run_id=f"{version}" * 32,
        )
        recorder.clock = lambda at=at: at + timedelta(minutes=30)
        status = launcher_base.RunStatus(
            run_key=key, state=runs.RunState.SUCCEEDED, backend_run_id=f"pid-{version}", output=outcome.to_json()
        )
        recorder.finish(run, status)
        if decision == "promoted":
            previous = version
    journal.record_promotion(
        journal_base.PromotionRecord(
            model="shelves-detector",
            version="1",
            previous_version="3",
            run_key=None,
            kind=outcomes.PromotionKind.ROLLBACK,
            actor="cli:ops",
            reason="v3 misses small parcels",
            metrics={},
            at=T0 + timedelta(hours=50),
        )
    )


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with browser.chromium() as found:
        yield found


@pytest.fixture
def dashboard(tmp_path: Path, coco_mini: Path) -> Iterator[Dashboard]:
    shelves, night = tmp_path / "shelves", tmp_path / "night"
    for data in (shelves, night):
        (data / "images" / "train").mkdir(parents=True)
        (data / "labels" / "train").mkdir(parents=True)
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "shelves.yaml").write_text(SHELVES.format(data=shelves))
    (rules_dir / "night.yaml").write_text(NIGHT.format(data=night))
    (rules_dir / "broken.yaml").write_text("name: broken\ntriggers: nope\n")
    journal_path = tmp_path / "journal.db"
    journal = journal_sqlite.SqliteJournal(journal_path)
    rulebook = reloading.RuleBook(rules_dir)
    recorder = recording.OutcomeRecorder(
        journal=journal,
        mlflow=registry.Mlflow(tracking_uri=apps.NO_MLFLOW),
        rules=lambda: {},
        metrics=metrics_.Metrics(
            board=source_base.StatusBoard(),
            journal=journal,
            rulebook=rulebook,
            clock=lambda: datetime.now(UTC),
            since_last_pass=lambda: 0.0,
        ),
        backend="local",
        clock=lambda: datetime.now(UTC),
    )
    judged(journal, recorder)
    journal.set_pause("night", state.Pause(actor="cli:ops", reason="camera being moved", at=datetime.now(UTC)))
    journal.close()
    drop_labelled_images(coco_mini, shelves, 3)
    env = {
        "RETRAIN_JOURNAL__PATH": str(journal_path),
        "RETRAIN_RULES__PATH": str(rules_dir),
        "RETRAIN_MLFLOW__TRACKING_URI": apps.NO_MLFLOW,
        "RETRAIN_MLFLOW__MAX_RETRIES": "0",
    }
    overrides = [
        "http.port=0",
        f"http.api_token={apps.API_TOKEN}",
        f"kfp.local_pipeline_root={tmp_path / 'runs'}",
        "mlflow.ui_url=http://mlflow.example.test",
    ]
    # A dry run: a trigger from the page is decided on (journaled) and nothing trains.
    daemon = reactor.Reactor(settings.load(environ=env, overrides=overrides), tick_s=0.2, dry_run=True)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    wait_until(lambda: daemon.started.is_set(), 30, "the daemon")
    wait_until(lambda: pending(daemon, "shelves") == 3, 30, "3 pending labels")
    yield Dashboard(daemon=daemon, url=f"http://127.0.0.1:{daemon.http_port}", journal=daemon.journal)
    daemon.stop()
    thread.join(30)
    assert not thread.is_alive()


def pending(daemon: reactor.Reactor, name: str) -> int:
    return daemon.journal.rule_state(rule(daemon, name), now=datetime.now(UTC)).pending.labels


def rule(daemon: reactor.Reactor, name: str) -> rules.Rule:
    return daemon.rulebook.rules[name].rule


@pytest.fixture
def page(chromium: Browser, dashboard: Dashboard) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    requested: list[str] = []
    opened.on("request", lambda request: requested.append(request.url))
    opened.goto(dashboard.url + "/?refresh=500")
    yield opened
    # Offline: the page asked the daemon for everything, and nothing else.
    hosts = {urlsplit(url).netloc for url in requested if not url.startswith("data:")}
    assert hosts == {urlsplit(dashboard.url).netloc}, requested
    context.close()


def screenshot(page: Page, name: str) -> None:
    """The README's pictures: ``RETRAIN_SCREENSHOT_DIR=docs pytest tests/http/test_dashboard.py`` writes them."""
    folder = os.environ.get("RETRAIN_SCREENSHOT_DIR")
    if folder:
        page.screenshot(path=str(Path(folder) / name), full_page=True)


def use_token(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#token-save")


def test_rules_show_the_journals_state(page: Page, dashboard: Dashboard) -> None:
    shelves = page.locator("article.rule[data-rule=shelves]")
    # 3 labelled photos pending against min_new_labels 5: the count and the bar say so.
    expect(shelves.locator(".labels-count")).to_have_text("3 / 5")
    expect(shelves.locator(".bar.labels")).to_have_attribute("aria-valuenow", "3")
    expect(shelves.locator(".bar.labels")).to_have_attribute("aria-valuemax", "5")
    # The decision the engine makes now, and the next schedule slot as a countdown.
    decision = dashboard.daemon.journal.decisions("shelves", limit=1)[0]
    expect(shelves.locator(".decision")).to_contain_text("3/5 new labels")
    assert decision.code == "below_threshold"
    expect(shelves.locator(".next-slot")).to_contain_text("0 3 * * *")
    expect(shelves.locator(".next-slot .countdown")).to_contain_text("in ")
    # The paused rule says who paused it and why, and offers Resume.
    night = page.locator("article.rule[data-rule=night]")
    expect(night.locator(".badge.paused")).to_be_visible()
    expect(night.locator(".paused-by")).to_have_text("paused by cli:ops: camera being moved")
    expect(night.locator("button.resume")).to_be_visible()
    # The refused rule file is named, with the problem.
    expect(page.locator("#rule-errors")).to_contain_text("broken.yaml")
    # Sources and datasets: the watched folders.
    expect(page.locator("table.datasets tr[data-dataset]")).to_have_count(2)
    expect(page.locator("table.datasets")).not_to_contain_text("not watched")


def test_the_model_chart_has_one_point_per_version_and_marks_the_rollback(page: Page, dashboard: Dashboard) -> None:
    model = page.locator("article.model[data-model=shelves-detector]")
    points = model.locator("svg.history circle.point")
    expect(points).to_have_count(len(JUDGED))
    for version, decision, _score, _hours in JUDGED:
        point = model.locator(f"svg.history circle[data-version='{version}']")
        expect(point).to_have_attribute("data-decision", decision)
    expect(model.locator("svg.history circle[data-version='3']")).to_have_class("point promoted rolled-back")
    # Higher mAP is drawn higher: v3 (0.42) above v1 (0.30) above v2 (0.25).
    heights = {
        version: float(model.locator(f"svg.history circle[data-version='{version}']").get_attribute("cy") or "nan")
        for version, *_ in JUDGED
    }
    assert heights["3"] < heights["1"] < heights["2"]
    expect(model.locator("svg.history path.champion-line")).to_have_count(1)
    expect(model.locator("h3")).to_contain_text("champion v1")  # the rollback moved it back
    # Per-class AP of the last candidate (v3) against the champion it was compared with (v1).
    expect(model.locator(".per-class")).to_contain_text("candidate v3")
    expect(model.locator(".per-class")).to_contain_text("champion v1")
    expect(model.locator(".per-class .bar.candidate")).to_have_count(2)
    expect(model.locator(".per-class .bar.champion")).to_have_count(2)
    # Recent runs link to MLflow (mlflow.ui_url) and show the gate's decision.
    row = page.locator("table.recent-runs tr[data-run='shelves-run2']")
    expect(row).to_contain_text("rejected")
    expect(row.locator("a", has_text="MLflow run")).to_have_attribute(
        "href", "http://mlflow.example.test/#/runs/" + "2" * 32
    )
    screenshot(page, "dashboard.png")


def test_a_trigger_from_the_page_reaches_the_journal(page: Page, dashboard: Dashboard) -> None:
    use_token(page, apps.API_TOKEN)
    page.locator("article.rule[data-rule=shelves] button.trigger").click()
    expect(page.locator("#message")).to_contain_text("Trigger of shelves journaled")
    shelves = rule(dashboard.daemon, "shelves")

    def requested() -> bool:
        found = dashboard.journal.rule_state(shelves, now=datetime.now(UTC)).manual
        return any(r.actor == "api:dashboard" and r.reason == "triggered from the dashboard" for r in found)

    wait_until(requested, 10, "the manual request in the journal")
    # The daemon decides on it (a dry run: "would launch"), and the page shows that decision.
    expect(page.locator("article.rule[data-rule=shelves] .decisions")).to_contain_text("would launch", timeout=15000)


def test_a_wrong_token_is_refused_with_a_message_and_changes_nothing(page: Page, dashboard: Dashboard) -> None:
    use_token(page, "not-the-token")
    page.locator("article.rule[data-rule=shelves] button.pause").click()
    expect(page.locator("#message")).to_have_text("Refused: wrong or missing API token: missing or wrong bearer token")
    expect(page.locator("#message")).to_have_class("error")
    assert dashboard.journal.pause_of("shelves") is None
    # Without any token the page says what to do before calling anything.
    page.click("#token-forget")
    page.locator("article.rule[data-rule=shelves] button.trigger").click()
    expect(page.locator("#message")).to_contain_text("Enter the API token")


def test_pause_and_resume_from_the_page(page: Page, dashboard: Dashboard) -> None:
    use_token(page, apps.API_TOKEN)
    page.locator("article.rule[data-rule=night] button.resume").click()
    expect(page.locator("#message")).to_have_text("night resumed.")
    assert dashboard.journal.pause_of("night") is None
    expect(page.locator("article.rule[data-rule=night] button.pause")).to_be_visible()
    page.locator("article.rule[data-rule=night] button.pause").click()
    expect(page.locator("article.rule[data-rule=night] .paused-by")).to_have_text(
        "paused by api:dashboard: paused from the dashboard"
    )
    found = dashboard.journal.pause_of("night")
    assert found is not None and found.actor == "api:dashboard"


def test_usable_at_phone_width(chromium: Browser, dashboard: Dashboard) -> None:
    context = chromium.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(dashboard.url + "/")
    expect(page.locator("article.rule")).to_have_count(2)
    expect(page.locator("svg.history circle.point")).to_have_count(len(JUDGED))
    # Nothing wider than the screen: no sideways scrolling of the page (wide tables scroll in their box).
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    button = page.locator("article.rule[data-rule=shelves] button.trigger")
    box = button.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    context.close()


def test_the_page_and_its_assets_allow_nothing_from_elsewhere(dashboard: Dashboard) -> None:
    answer = httpx.get(dashboard.url + "/", timeout=10)
    assert answer.status_code == 200
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert httpx.get(dashboard.url + asset, timeout=10).status_code == 200
    assert "http" not in httpx.get(dashboard.url + "/static/dashboard.css", timeout=10).text
    history = httpx.get(dashboard.url + "/api/v1/models/shelves-detector/history", timeout=10).json()
    assert [v["version"] for v in history["versions"]] == ["1", "2", "3"] and history["champion"] == "1"
    missing = httpx.get(dashboard.url + "/api/v1/models/nosuch/history", timeout=10)
    assert missing.status_code == 404 and "no model 'nosuch'" in missing.json()["detail"]


TRAINED = """name: boxes
dataset: {{source: "file://{data}"}}
model: {{registered_name: boxes-detector, base: yolov8n.yaml}}
triggers:
  - new_labels: {{min_new_labels: 40, quiet_period: 1s, max_wait: 10m}}
training: {{epochs: {epochs}, imgsz: 64, batch: 16, gpus: 0}}
promotion: {{first_model_min: 0.0}}
limits: {{cooldown: 0s}}
"""
EPOCHS = 6


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_real_run_shows_its_training_curve_live_then_its_version(
    chromium: Browser, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The whole chain: a real training child prints its epochs, the tracker reads them, the page draws them
    while the run trains; then the gate's decision and the new version appear."""
    data = tmp_path / "data"
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "boxes.yaml").write_text(TRAINED.format(data=data, epochs=EPOCHS))
    overrides = [
        f"journal.path={tmp_path / 'journal.db'}",
        f"rules.path={rules_dir}",
        f"mlflow.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        f"kfp.local_pipeline_root={tmp_path / 'runs'}",
        "kfp.poll_interval_s=0.5",
        "http.port=0",
    ]
    daemon = reactor.Reactor(settings.load(environ={}, overrides=overrides), tick_s=0.2)
    thread = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    thread.start()
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    try:
        wait_until(lambda: daemon.started.is_set(), 30, "the daemon")
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{daemon.http_port}/?refresh=500")
        synthetic.generate(data, count=48, seed=1, split="train")
        synthetic.generate(data, count=16, seed=2, prefix="val", split="val")
        # Live: the active run's epoch count and its curve grow while it trains.
        run = page.locator("article.run")
        expect(run.locator(".epoch-count")).to_have_text(re.compile(rf"^[2-{EPOCHS - 1}] / {EPOCHS}$"), timeout=300_000)
        drawn = run.locator("svg.curve circle.point").count()
        assert 2 <= drawn <= EPOCHS
        screenshot(page, "dashboard-run.png")
        # Then the run ends: one version on the chart, the run's row says how the gate decided.
        row = page.locator("table.recent-runs tbody tr")
        expect(row).to_have_count(1, timeout=300_000)
        expect(row).to_contain_text("succeeded")
        expect(row).to_contain_text("promoted v1")
        expect(page.locator("article.model[data-model=boxes-detector] svg.history circle.point")).to_have_count(1)
        [finished] = daemon.journal.runs(limit=5)
        board = daemon.parts.progress.get(finished.run_key)
        assert board is not None and [p.epoch for p in board.points] == list(range(1, EPOCHS + 1))
    finally:
        context.close()
        daemon.stop()
        thread.join(60)


def test_a_run_waiting_to_start_says_what_it_waits_on(chromium: Browser, dashboard: Dashboard) -> None:
    """The run card of a run the tracker reported as waiting (its pod Pending past kfp.pending_timeout_s): the
    journal's record, as /api/v1/dashboard serves it, with the reason on the card. The daemon here tracks its
    runs with the local launcher, which would withdraw the report at its next poll, so the served document is
    given that run on its way to the page."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    reason = (
        "waiting to start since 2026-12-07 21:40 UTC: task train-model has not started: pod retrain-x-123 is "
        "Pending in namespace kubeflow (a missing Secret or image, a ResourceQuota, or no node with the GPU and "
        "memory it asks for; `kubectl describe pod retrain-x-123 -n kubeflow` says which)"
    )

    def with_a_waiting_run(route: Route) -> None:
        served = route.fetch()
        document = served.json()
        waiting = {**document["recent_runs"][0], "run_key": "shelves-waiting", "state": "running"}
        waiting.update(error=reason, progress=None, promotion={}, metrics={})
        document["active_runs"] = [waiting]
        route.fulfill(response=served, json=document)

    page.route("**/api/v1/dashboard*", with_a_waiting_run)
    page.goto(dashboard.url + "/")
    card = page.locator("article.run[data-run=shelves-waiting]")
    expect(card.locator(".badge", has_text="waiting")).to_be_visible()
    expect(card.locator(".reason.waiting")).to_contain_text("pod retrain-x-123 is Pending")
    context.close()
