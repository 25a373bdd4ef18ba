"""The ``retrain`` command line: the top layer, where settings are built and logging is configured.

Configuration errors exit with status 2 and list every problem found; a command that cannot do its work
(an unknown rule, an unreachable service) exits with status 1 and says why.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

import click
import yaml

from daemon import __version__, errors, explaining, logs, settings, settings_sources
from daemon.cli import common, operations
from daemon.journal import base, sqlite
from daemon.rules import loading

#: Exit status when the settings are invalid.
EXIT_CONFIG = 2
#: The options of the ``retrain`` group, accepted after the subcommand too (``retrain status --set k=v``).
GLOBAL_OPTIONS = ("--config", "--set", "--log-level", "--log-format")


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with every global option (and its value) moved before the subcommand, in their order."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest += args[index:]
            break
        if arg.split("=", 1)[0] in GLOBAL_OPTIONS:
            width = 1 if "=" in arg else 2
            front += args[index : index + width]
            index += width
            continue
        rest.append(arg)
        index += 1
    return front + rest


class RetrainGroup(click.Group):
    """The ``retrain`` group: its options work before or after the subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args))


@click.group(cls=RetrainGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, "--version", "-V", prog_name="retrain", package_name="retrain-daemon")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML settings file (default: $RETRAIN_CONFIG, else the embedded defaults).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one setting by its dotted name, e.g. --set kfp.launcher=kfp. Repeatable.",
)
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), help="Lowest level written.")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "json", "console"]),
    help="Log line format (auto: by terminal).",
)
@click.pass_context
def main(
    ctx: click.Context,
    config_file: Path | None,
    overrides: tuple[str, ...],
    log_level: str | None,
    log_format: str | None,
) -> None:
    """Event-driven retraining daemon for object detectors.

    Watches MinIO buckets and dataset folders, applies the rules in rules/*.yaml, launches Kubeflow
    Pipelines runs that validate, tune, train and evaluate YOLO models, and promotes a new MLflow model
    version to 'champion' only when it beats the current one. The options above work before or after the
    command.
    """
    flags = list(overrides)
    if log_level:
        flags.append(f"logging.level={log_level}")
    if log_format:
        flags.append(f"logging.format={log_format}")
    try:
        built = settings.load(config_file=config_file, environ=os.environ, overrides=flags)
    except errors.ConfigErrors as exc:
        for error in exc.errors:
            click.echo(f"retrain: invalid settings: {error.render()}", err=True)
        sys.exit(EXIT_CONFIG)
    logs.configure(built.logging)
    ctx.obj = built


@main.command()
@click.option(
    "--dry-run",
    is_flag=True,
    help="Watch and decide, but start nothing: each launch is journaled and logged as 'would launch'.",
)
@click.pass_context
def up(ctx: click.Context, dry_run: bool) -> None:
    """Run the daemon: sources, rule engine, launcher, run watcher. Stops cleanly on SIGTERM/SIGINT."""
    import signal

    from daemon import reactor

    stop_asked: list[str] = []
    daemon: reactor.Reactor | None = None

    def on_signal(signum: int, _frame: object) -> None:
        logs.get_logger(__name__).info("daemon_stopping", signal=signal.Signals(signum).name)
        stop_asked.append(signal.Signals(signum).name)
        if daemon is not None:
            daemon.stop()

    # Installed before the daemon is built: a SIGTERM while it starts (kubelet may send one at any time)
    # still ends in a clean stop with exit code 0.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon = reactor.Reactor(common.settings_of(ctx), dry_run=dry_run)
    except errors.RetrainError as exc:
        click.echo(f"retrain up: {exc}", err=True)
        sys.exit(EXIT_CONFIG if isinstance(exc, errors.ConfigError) else 1)
    if stop_asked:
        daemon.stop()
    try:
        daemon.run()
    except errors.RetrainError as exc:
        click.echo(f"retrain up: {exc}", err=True)
        sys.exit(EXIT_CONFIG if isinstance(exc, errors.ConfigError) else 1)
    if daemon.lost_leadership:
        from daemon.runtime import leading

        click.echo("retrain up: this replica lost the leader's lease; restart it to stand by", err=True)
        sys.exit(leading.EXIT_LOST_LEADERSHIP)


@main.group()
def rules() -> None:
    """Validate and inspect rule files."""


@rules.command("check")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.pass_context
def rules_check(ctx: click.Context, paths: tuple[Path, ...]) -> None:
    """Validate rule files (default: the rules folder). Exit 0 when all are valid, 1 otherwise.

    Every error is printed as FILE:LINE: rule 'NAME': field 'FIELD': MESSAGE.
    """
    targets = list(paths) or [common.settings_of(ctx).rules.path]
    result = loading.load_paths(targets)
    if not result.errors and not loading.rule_files([t for t in targets if t.exists()]):
        click.echo(f"no rule files (*.yaml, *.yml) in {', '.join(str(t) for t in targets)}", err=True)
        sys.exit(1)
    for error in result.errors:
        click.echo(error.render())
    if not result.ok:
        click.echo(f"{len(result.errors)} error(s) in {', '.join(str(t) for t in targets)}", err=True)
        sys.exit(1)
    files = sorted({loaded.file for loaded in result.rules.values()})
    click.echo(f"{len(result.rules)} rule(s) valid in {len(files)} file(s): {', '.join(sorted(result.rules))}")


@main.command()
@click.argument("rule")
@click.option("--history", default=10, show_default=True, help="How many recent decisions to show.")
@click.pass_context
def explain(ctx: click.Context, rule: str, history: int) -> None:
    """Explain what RULE sees now, why it would or would not fire, and its recent decisions."""
    config = common.settings_of(ctx)
    loaded = loading.load_paths([config.rules.path])
    found = loaded.rules.get(rule)
    if found is None:
        for error in loaded.errors:
            click.echo(error.render(), err=True)
        known = ", ".join(sorted(loaded.rules)) or "none"
        hint = settings_sources.suggest(rule, loaded.rules)
        click.echo(
            f"retrain explain: no valid rule {rule!r}{hint} in {config.rules.path} (valid rules: {known})", err=True
        )
        sys.exit(1)
    journal_path = config.journal.path
    if common.journal_exists(config):
        journal: base.Journal = common.open_journal(config)
        where = journal.path
    else:
        journal = sqlite.SqliteJournal(":memory:")
        where = f"{journal_path} (does not exist yet: the daemon has not run; an empty journal is shown)"
    try:
        for line in explaining.explain(found, journal, now=datetime.now(UTC), history=history, journal_name=where):
            click.echo(line)
    finally:
        journal.close()


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the same document as GET /api/v1/status).")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show rules with pending data, active runs, recent decisions and the champion of each model."""
    config = common.settings_of(ctx)
    loaded = loading.load_paths([config.rules.path])
    if not config.journal.path.exists() and not as_json:  # the rules as an empty journal sees them
        click.echo(f"no journal at {config.journal.path} yet: the daemon has not run")
    journal = common.journal_or_empty(config)
    try:
        now = datetime.now(UTC)
        data = explaining.status_data(loaded.rules, journal, now=now)
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        for line in explaining.status_lines(data, now=now):
            click.echo(line)
    finally:
        journal.close()


@main.command()
@click.argument("rule")
@click.option("--reason", default="manual trigger", show_default=True, help="Why, recorded in the journal.")
@click.pass_context
def trigger(ctx: click.Context, rule: str, reason: str) -> None:
    """Launch RULE now, through the same path (and the same dedupe) as an automatic trigger.

    The request is journaled; the running daemon answers it on its next pass (cooldown does not apply,
    concurrency and the already-trained-snapshot check do).
    """
    import getpass

    from daemon import operating

    config = common.settings_of(ctx)
    loaded = loading.load_paths([config.rules.path])
    try:  # refused before the journal is opened (it may not exist yet)
        operating.check_trigger(loaded.rules, rule, s3_configured=config.sources.s3.endpoint is not None)
    except operating.UnknownRule as exc:
        click.echo(f"retrain trigger: {exc} in {config.rules.path}", err=True)
        sys.exit(1)
    except operating.TriggerRefused as exc:
        click.echo(f"retrain trigger: {exc}", err=True)
        sys.exit(1)
    journal = common.open_journal(config)
    try:
        request = operating.request_trigger(
            journal, loaded.rules, rule, reason=reason, actor=getpass.getuser(), at=datetime.now(UTC)
        )
    finally:
        journal.close()
    click.echo(f"manual trigger for {rule} journaled ({request[:12]}); the daemon answers it on its next pass")
    address = _daemon_address(config)
    if address is not None:
        click.echo(
            f"warning: no daemon answers at {address}: the request waits in {config.journal.path} until one runs",
            err=True,
        )


def _daemon_address(config: settings.Settings) -> str | None:
    """The daemon's address when no daemon answers its liveness probe there (None: one does, or the daemon
    serves no HTTP, so nothing can be told)."""
    import httpx

    if not config.http.enabled:
        return None

    # A daemon listening on every interface is reached on the loopback one.
    host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::", "") else config.http.host  # noqa: S104
    address = f"http://{host}:{config.http.port}"
    try:
        httpx.get(f"{address}/healthz", timeout=2.0)
    except httpx.HTTPError:
        return address
    return None


@main.command()
@click.argument("model")
@click.option("--to", "to_version", help="Model version to make champion (default: the previous champion).")
@click.option("--reason", default="manual rollback", show_default=True, help="Why, recorded in MLflow and the journal.")
@click.pass_context
def rollback(ctx: click.Context, model: str, to_version: str | None, reason: str) -> None:
    """Move MODEL's 'champion' alias back, recording who and why."""
    import getpass

    from daemon import operating
    from daemon.registry import mlflow as registry

    config = common.settings_of(ctx)
    store = registry.local_store(config.mlflow.tracking_uri)
    if store is not None and not store.exists():  # opening it would create (and migrate) an empty store
        click.echo(
            f"retrain rollback: unknown model {model!r}: MLflow has no registered model of that name "
            f"(no MLflow store at {store} yet)",
            err=True,
        )
        sys.exit(1)
    registry.configure(config.mlflow)
    mlflow = registry.Mlflow(tracking_uri=config.mlflow.tracking_uri, registry_uri=config.mlflow.registry_uri)
    journal = common.open_journal(config)
    try:
        done = operating.rollback(
            mlflow, journal, model, to_version=to_version, reason=reason, actor=getpass.getuser(), at=datetime.now(UTC)
        )
    except errors.RetrainError as exc:
        click.echo(f"retrain rollback: {exc}", err=True)
        sys.exit(1)
    finally:
        journal.close()
    click.echo(f"{model}: champion moved from v{done.previous} to v{done.target} by {done.actor} ({reason})")


@main.group()
def pipeline() -> None:
    """Work with the training pipeline."""


@pipeline.command("compile")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="IR YAML file.")
@click.option("--rule", "rule_name", help="Shape the pipeline for this rule (tuning, parallelism, GPUs).")
@click.option("--tune/--no-tune", default=None, help="With or without the tuning fan-out (default: from --rule).")
@click.option("--parallelism", type=click.IntRange(min=1), help="Tuning trials running at once.")
@click.option("--gpus", type=click.IntRange(min=0), help="GPUs per training task.")
@click.pass_context
def pipeline_compile(
    ctx: click.Context,
    output: Path,
    rule_name: str | None,
    tune: bool | None,
    parallelism: int | None,
    gpus: int | None,
) -> None:
    """Compile the training pipeline to KFP IR YAML, ready to upload in the KFP UI and run by hand."""
    from pipelines import arguments, graph

    config = common.settings_of(ctx)
    rule = None
    if rule_name is not None:
        loaded = loading.load_paths([config.rules.path])
        found = loaded.rules.get(rule_name)
        if found is None:
            click.echo(f"retrain pipeline compile: no valid rule {rule_name!r} in {config.rules.path}", err=True)
            sys.exit(1)
        rule = found.rule
    shape = arguments.Shape.of(rule)
    shape = arguments.Shape(
        tune=shape.tune if tune is None else tune,
        parallelism=parallelism or shape.parallelism,
        gpus=shape.gpus if gpus is None else gpus,
    )
    graph.compile_to(output, image=config.kfp.trainer_image, config=config.pipeline, shape=shape)
    click.echo(
        f"wrote {output} (pipeline {arguments.PIPELINE_NAME}: tune={shape.tune}, parallelism={shape.parallelism}, "
        f"gpus={shape.gpus}, image {config.kfp.trainer_image})"
    )


@main.group()
def config() -> None:
    """Inspect the effective settings."""


@config.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as YAML (secrets appear as **********)."""
    click.echo(yaml.safe_dump(settings.describe(common.settings_of(ctx)), sort_keys=False), nl=False)


# The operators' commands on rules and runs live in their own module.
for command in (operations.pause, operations.resume, operations.runs_command, operations.cancel):
    main.add_command(command)
rules.add_command(operations.rules_list)


if __name__ == "__main__":  # pragma: no cover
    main()
