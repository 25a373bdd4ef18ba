"""The operators' commands on rules and runs: pause, resume, rules list, runs, cancel (added to ``retrain``)."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

import click
import yaml

from daemon import errors, explaining
from daemon.cli import common
from daemon.model import ids
from daemon.model import runs as runs_model
from daemon.rules import loading


def _pause_command(ctx: click.Context, rule: str, reason: str, *, paused: bool) -> None:
    import getpass

    from daemon import operating

    config = common.settings_of(ctx)
    loaded = loading.load_paths([config.rules.path])
    verb = "pause" if paused else "resume"
    try:
        operating.known_rule(loaded.rules, rule)
    except operating.UnknownRule as exc:
        click.echo(f"retrain {verb}: {exc} in {config.rules.path}", err=True)
        sys.exit(1)
    journal = common.open_journal(config)
    try:
        changed = operating.set_paused(
            journal, loaded.rules, rule, paused=paused, reason=reason, actor=getpass.getuser(), at=datetime.now(UTC)
        )
    finally:
        journal.close()
    if paused:
        click.echo(
            f"{rule} paused: it decides nothing until `retrain resume {rule}`" if changed else f"{rule} was paused"
        )
    else:
        click.echo(f"{rule} resumed" if changed else f"{rule} was not paused")


@click.command()
@click.argument("rule")
@click.option("--reason", default="paused by hand", show_default=True, help="Why, recorded in the journal.")
@click.pass_context
def pause(ctx: click.Context, rule: str, reason: str) -> None:
    """Pause RULE: no trigger launches it (manual ones are refused) until it is resumed; survives restarts."""
    _pause_command(ctx, rule, reason, paused=True)


@click.command()
@click.argument("rule")
@click.pass_context
def resume(ctx: click.Context, rule: str) -> None:
    """Resume a paused RULE: what arrived meanwhile is pending as usual."""
    _pause_command(ctx, rule, "", paused=False)


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the rules as GET /api/v1/rules serves them).")
@click.pass_context
def rules_list(ctx: click.Context, as_json: bool) -> None:
    """List the valid rules: state, data, model, triggers and where each is written. Errors go to stderr."""
    config = common.settings_of(ctx)
    loaded = loading.load_paths([config.rules.path])
    journal = common.journal_or_empty(config)
    try:
        found = [(name, item, journal.pause_of(name)) for name, item in sorted(loaded.rules.items())]
    finally:
        journal.close()
    for error in loaded.errors:
        click.echo(error.render(), err=True)
    if as_json:
        data = [
            {
                "name": name,
                "file": item.file,
                "line": item.line,
                "paused": explaining.pause_data(paused),
                "rule": item.rule.model_dump(mode="json"),
            }
            for name, item, paused in found
        ]
        click.echo(json.dumps({"rules": data}, indent=2))
        return
    for name, item, paused in found:
        rule = item.rule
        state = "paused" if paused else ("enabled" if rule.enabled else "disabled")
        kinds = ", ".join(t.kind for t in rule.triggers)
        where = f"{item.file}:{item.line}" if item.line else item.file
        click.echo(f"{name}  {state}  {rule.dataset.source} -> {rule.model.registered_name}  [{kinds}]  ({where})")
    if not found:
        click.echo(f"no valid rule in {config.rules.path}")


@click.command("runs")
@click.argument("run_key", required=False)
@click.option(
    "--state", "state_", type=click.Choice([s.value for s in runs_model.RunState]), help="Only runs in this state."
)
@click.option("--limit", default=20, show_default=True, help="How many runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /api/v1/runs and /api/v1/runs/KEY).")
@click.pass_context
def runs_command(ctx: click.Context, run_key: str | None, state_: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first, or show one RUN_KEY in full."""
    config = common.settings_of(ctx)
    journal = common.journal_or_empty(config)
    try:
        if run_key is not None:
            found = journal.get_run(ids.RunKey(run_key))
            if found is None:
                click.echo(f"retrain runs: no run {run_key!r} in {config.journal.path}", err=True)
                sys.exit(1)
            data = explaining.run_data(found)
            if as_json:
                click.echo(json.dumps(data, indent=2))
            else:
                click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())
            return
        states = None if state_ is None else frozenset({runs_model.RunState(state_)})
        listed = [explaining.run_data(r) for r in journal.runs(states=states, limit=limit)]
    finally:
        journal.close()
    if as_json:
        click.echo(json.dumps({"runs": listed}, indent=2))
        return
    for run in listed:
        score = run["metrics"].get("map50_95")
        figure = f" map50_95={score:.4f}" if isinstance(score, int | float) else ""
        decision = run["promotion"].get("decision", "")
        head = f"{run['created_at']}  {run['run_key']}  {run['rule']}  {run['state']}  {run['trigger']}"
        click.echo(f"{head}{figure} {decision}".rstrip())
    if not listed:
        click.echo("no runs" + (f" in state {state_}" if state_ else ""))


@click.command()
@click.argument("run_key")
@click.option("--reason", default="cancelled by hand", show_default=True, help="Why, kept with the run's end.")
@click.pass_context
def cancel(ctx: click.Context, run_key: str, reason: str) -> None:
    """Stop an active run: its local process group, or its KFP run. The daemon records its end (failed)."""
    import getpass

    from daemon import operating
    from daemon.runtime import wiring

    config = common.settings_of(ctx)
    if not common.journal_exists(config):
        click.echo(f"retrain cancel: no run {run_key!r}: no journal at {config.journal.path} yet", err=True)
        sys.exit(1)
    journal = common.open_journal(config)
    launcher = wiring.make_launcher(config, os.environ)
    try:
        status = operating.cancel_run(journal, launcher, run_key, reason=reason, actor=getpass.getuser())
    except errors.RetrainError as exc:
        click.echo(f"retrain cancel: {exc}", err=True)
        sys.exit(1)
    finally:
        launcher.close()
        journal.close()
    click.echo(f"{run_key}: cancel asked, now {status.state.value}; the daemon records its end on its next poll")
