"""Settings: one object of nested groups, built once in the CLI and passed down explicitly.

Sources, lowest precedence first:

1. defaults (``daemon.settings_groups``, every field documented with its unit): the embedded laptop set-up,
   a watched folder, ``kfp.local``, MLflow on a local SQLite file;
2. a YAML settings file (``--config FILE`` or ``RETRAIN_CONFIG``), the same nesting as the groups;
3. environment variables ``RETRAIN_<GROUP>__<FIELD>`` (``RETRAIN_KFP__TOKEN``,
   ``RETRAIN_SOURCES__S3__ENDPOINT``): this is how Kubernetes Secrets reach the daemon;
4. CLI flags (``--set kfp.launcher=kfp`` and the named flags of each command).

pydantic-settings merges the layers and parses nested environment variables; ``daemon.settings_sources``
remembers where each value came from, so that an error names the file and line, the variable or the flag.
Secrets are :class:`pydantic.SecretStr`: their repr, ``str`` and JSON dump read ``**********``; URIs with
credentials in them are shown redacted by :func:`describe`. Only the CLI (``os.environ`` passed to
:func:`load`), the failpoints and the MLflow client's own request policy read the environment.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
from pydantic import model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from daemon import constants, errors, redaction, settings_sources
from daemon.settings_groups import (
    HttpSettings,
    JournalSettings,
    KfpSettings,
    LeaderSettings,
    LoggingSettings,
    MlflowSettings,
    NoticeEvent,
    NotifySettings,
    PipelineSettings,
    RulesSettings,
    S3Settings,
    ShutdownSettings,
    SourcesSettings,
)

__all__ = [
    "HttpSettings",
    "JournalSettings",
    "KfpSettings",
    "LeaderSettings",
    "LoggingSettings",
    "MlflowSettings",
    "NoticeEvent",
    "NotifySettings",
    "PipelineSettings",
    "RulesSettings",
    "S3Settings",
    "ShutdownSettings",
    "SourcesSettings",
    "Settings",
    "describe",
    "load",
]


class Settings(BaseSettings):
    """Everything the daemon can be configured with."""

    model_config = SettingsConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    journal: JournalSettings = JournalSettings()
    leader: LeaderSettings = LeaderSettings()
    sources: SourcesSettings = SourcesSettings()
    kfp: KfpSettings = KfpSettings()
    mlflow: MlflowSettings = MlflowSettings()
    pipeline: PipelineSettings = PipelineSettings()
    http: HttpSettings = HttpSettings()
    logging: LoggingSettings = LoggingSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    rules: RulesSettings = RulesSettings()
    notify: NotifySettings = NotifySettings()

    @model_validator(mode="after")
    def _check_leader_timeouts(self) -> Settings:
        if self.journal.url is not None and self.journal.idle_in_transaction_timeout_s >= self.leader.ttl_s:
            raise ValueError(
                f"journal.idle_in_transaction_timeout_s ({self.journal.idle_in_transaction_timeout_s}) must be "
                f"below leader.ttl_s ({self.leader.ttl_s}): a paused leader's open transaction holds the writers' "
                "lock until the server ends it, and a standby cannot take over before"
            )
        return self

    @model_validator(mode="after")
    def _check_cluster_path(self) -> Settings:
        if self.kfp.launcher == "kfp":
            if not self.kfp.host:
                raise ValueError("launcher kfp needs kfp.host (RETRAIN_KFP__HOST)")
            if not (self.kfp.inputs_uri or "").startswith("s3://"):
                raise ValueError(
                    "launcher kfp needs kfp.inputs_uri (s3://bucket/prefix/): runs on the cluster read their "
                    "inputs from there, never from the daemon's disk"
                )
        if self.kfp.inputs_uri is not None and not self.kfp.inputs_uri.startswith("s3://"):
            raise ValueError(f"kfp.inputs_uri must be s3://bucket/prefix/, got {self.kfp.inputs_uri!r}")
        if self.kfp.inputs_uri is not None and not self.sources.s3.endpoint:
            raise ValueError("kfp.inputs_uri needs sources.s3.endpoint (RETRAIN_SOURCES__S3__ENDPOINT)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags over the environment over the file over the defaults (:func:`load` supplies them)."""
        layers = _LAYERS.get()
        if layers is None:
            return ()
        file, variables, flags = layers
        return (
            settings_sources.MappingSource(settings_cls, tree=flags),
            settings_sources.EnvironmentSource(settings_cls, variables=variables),
            settings_sources.MappingSource(settings_cls, tree=file),
        )


#: The layers :func:`load` hands to :meth:`Settings.settings_customise_sources` while it builds.
_LAYERS: contextvars.ContextVar[tuple[dict[str, Any], dict[str, str], dict[str, Any]] | None] = contextvars.ContextVar(
    "settings_layers", default=None
)


def _translate(exc: pydantic.ValidationError, origins: settings_sources.Origins) -> list[errors.ConfigError]:
    found = []
    for item in exc.errors():
        path = [str(p) for p in item["loc"]]
        dotted = ".".join(path)
        origin = origins.of(dotted) if path else "the combination of settings"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown setting" + settings_sources.suggest(
                path[-1], settings_sources.known_fields(Settings, path[:-1])
            )
        file, _, line = origin.rpartition(":")
        if file and line.isdigit():
            found.append(errors.ConfigError(message, file=file, line=int(line), field=dotted or None))
        else:
            found.append(errors.ConfigError(f"{message} (from {origin})", field=dotted or None))
    return found


def load(
    *,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> Settings:
    """Build the settings from defaults, a file, the environment and CLI overrides.

    Args:
        config_file: a YAML settings file; ``None`` uses ``RETRAIN_CONFIG`` from ``environ`` if set.
        environ: the process environment (the CLI passes ``os.environ``; tests pass a dict). Variables that
            are not settings (Kubernetes service links) are left alone; misspelt settings are errors.
        overrides: ``KEY=VALUE`` strings with dotted keys, from ``--set`` and named flags.

    Returns:
        The validated, frozen settings.

    Raises:
        errors.ConfigErrors: every problem found, each naming where the bad value came from.
    """
    environ = environ if environ is not None else {}
    origins = settings_sources.Origins()
    if config_file is None and environ.get(constants.ENV_CONFIG_FILE):
        config_file = Path(environ[constants.ENV_CONFIG_FILE])
    variables, problems = settings_sources.settings_variables(environ, model=Settings)
    try:
        file = settings_sources.file_tree(config_file, origins) if config_file is not None else {}
        settings_sources.record_environment(variables, origins)
        flags = settings_sources.overrides_tree(overrides, origins)
    except errors.ConfigError as exc:
        raise errors.ConfigErrors([exc, *problems]) from exc
    token = _LAYERS.set((file, variables, flags))
    try:
        built = Settings()
    except pydantic.ValidationError as exc:
        raise errors.ConfigErrors([*_translate(exc, origins), *problems]) from exc
    finally:
        _LAYERS.reset(token)
    if problems:
        raise errors.ConfigErrors(problems)
    return built


def describe(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for display: secrets appear as ``**********``, credentials inside URIs
    as ``***``, paths as strings."""
    shown: dict[str, Any] = redaction.redact_tree(settings.model_dump(mode="json"))
    return shown
