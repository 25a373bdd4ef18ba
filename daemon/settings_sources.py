"""Where settings come from, for :mod:`daemon.settings`: pydantic-settings sources that remember origins.

pydantic-settings merges the layers (defaults < file < environment < flags) and parses nested
environment variables (``RETRAIN_SOURCES__S3__ENDPOINT``; JSON for mappings and lists). The sources here
add what users need from an error message: where each value came from (``settings.yaml:12``,
``environment variable RETRAIN_KFP__TOKEN``, ``--set http.port``).

Environment variables are read from the mapping the caller passes (the CLI passes ``os.environ``; tests
pass a dict), and only those that are settings. Kubernetes adds service-link variables for every Service
of the namespace to every pod (``RETRAIN_DAEMON_SERVICE_HOST``, ``RETRAIN_DAEMON_PORT_80_TCP_ADDR``...):
they share the prefix and are not ours, so they are left alone. A variable shaped like a setting
(``RETRAIN_<GROUP>__<FIELD>``) that names no setting is still an error, with the closest name suggested.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource

from daemon import constants, errors, yamlfile

#: The variables Kubernetes derives from a Service's name (``<NAME>_SERVICE_HOST`` and friends), documented
#: at https://kubernetes.io/docs/concepts/services-networking/service/#environment-variables.
SERVICE_LINK = re.compile(
    r"^[A-Z0-9_]+?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)?)$"
)
#: Variables with the prefix that are not settings but are the daemon's own.
SPECIAL = frozenset({constants.ENV_CONFIG_FILE, constants.ENV_FAILPOINT, constants.ENV_FAILPOINT_MARKERS})


@dataclass
class Origins:
    """Where each value came from, by dotted field path."""

    by_path: dict[str, str] = field(default_factory=dict)

    def record(self, path: Iterable[str], origin: str) -> None:
        self.by_path[".".join(path)] = origin

    def of(self, dotted: str) -> str:
        """The origin of ``dotted``, of its closest ancestor (a value inside a JSON mapping), or of the first
        value set below it (``--set htp.port=1`` is the origin of the unknown ``htp``)."""
        probe = dotted
        while probe:
            if probe in self.by_path:
                return self.by_path[probe]
            probe = probe.rpartition(".")[0]
        below = sorted(path for path in self.by_path if path.startswith(f"{dotted}."))
        return self.by_path[below[0]] if dotted and below else "defaults"


def known_fields(model: type[BaseModel], path: list[str]) -> list[str]:
    """The valid field names at ``path`` inside ``model`` (for "did you mean" suggestions)."""
    current: type[BaseModel] = model
    for part in path:
        found = current.model_fields.get(part)
        annotation = found.annotation if found is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(current.model_fields)


def suggest(word: str, choices: Iterable[str]) -> str:
    """``; did you mean 'x'?`` for the closest of ``choices``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def settings_variables(
    environ: Mapping[str, str], *, model: type[BaseModel]
) -> tuple[dict[str, str], list[errors.ConfigError]]:
    """The environment variables that are settings, and errors for those that look like misspelt ones."""
    prefix, delimiter = constants.ENV_PREFIX, constants.ENV_NESTED_DELIMITER
    groups = list(model.model_fields)
    ours: dict[str, str] = {}
    problems: list[errors.ConfigError] = []
    for name, value in environ.items():
        if not name.startswith(prefix) or name in SPECIAL:
            continue
        rest = name[len(prefix) :]
        group, sep, _ = rest.partition(delimiter)
        if sep and group and group.lower() in groups:
            ours[name] = value
        elif SERVICE_LINK.match(rest):
            continue  # a Kubernetes service-link variable: not a setting
        elif sep and group:
            problems.append(
                errors.ConfigError(
                    f"unknown setting group {group.lower()!r}{suggest(group.lower(), groups)} "
                    f"(from environment variable {name})",
                    field=rest.lower().replace(delimiter, "."),
                )
            )
        else:
            problems.append(
                errors.ConfigError(
                    f"environment variable {name} is not a setting: settings are {prefix}<GROUP>{delimiter}<FIELD>"
                    + _spelled_out(rest, model=model)
                )
            )
    return ours, problems


def _spelled_out(rest: str, *, model: type[BaseModel]) -> str:
    """``; did you mean RETRAIN_JOURNAL__PATH?`` for ``JOURNAL_PATH`` (one underscore where two belong)."""
    parts = rest.split("_")
    for cut in range(1, len(parts)):
        group, leaf = "_".join(parts[:cut]).lower(), "_".join(parts[cut:]).lower()
        if leaf in known_fields(model, [group]):
            spelled = f"{constants.ENV_PREFIX}{group.upper()}{constants.ENV_NESTED_DELIMITER}{leaf.upper()}"
            return f"; did you mean {spelled}?"
    return f", e.g. {constants.ENV_PREFIX}KFP{constants.ENV_NESTED_DELIMITER}HOST"


class EnvironmentSource(EnvSettingsSource):
    """``RETRAIN_<GROUP>__<FIELD>`` variables from a given mapping (not necessarily ``os.environ``)."""

    def __init__(self, settings_cls: type[BaseSettings], *, variables: Mapping[str, str]) -> None:
        self._variables = dict(variables)
        super().__init__(
            settings_cls,
            case_sensitive=False,
            env_prefix=constants.ENV_PREFIX,
            env_nested_delimiter=constants.ENV_NESTED_DELIMITER,
        )

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._variables.items()}


class MappingSource(PydanticBaseSettingsSource):
    """A tree of values from one place (the settings file, or the ``--set`` flags)."""

    def __init__(self, settings_cls: type[BaseSettings], *, tree: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.tree = tree

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.tree.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self.tree


def _walk_leaves(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> Iterable[tuple[str, ...]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _walk_leaves(value, (*prefix, str(key)))
        else:
            yield (*prefix, str(key))


def _set_path(tree: dict[str, Any], path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[path[-1]] = value


def file_tree(path: Path, origins: Origins) -> dict[str, Any]:
    """The settings file as a tree, each leaf's line recorded. Raises :class:`errors.ConfigError`."""
    documents = yamlfile.load_file(path)
    if not documents:
        return {}
    if len(documents) > 1:
        raise errors.ConfigError("a settings file holds one YAML document", file=path)
    document = documents[0]
    if not isinstance(document.value, dict):
        raise errors.ConfigError("a settings file must be a mapping of groups", file=path, line=1)
    for leaf in _walk_leaves(document.value):
        origins.record(leaf, f"{path}:{document.line_of(leaf)}")
    return document.value


def record_environment(variables: Mapping[str, str], origins: Origins) -> None:
    """Remember which variable set which setting."""
    for name in variables:
        path = name[len(constants.ENV_PREFIX) :].lower().split(constants.ENV_NESTED_DELIMITER)
        origins.record(path, f"environment variable {name}")


def overrides_tree(overrides: Iterable[str], origins: Origins) -> dict[str, Any]:
    """``KEY=VALUE`` flags as a tree. Raises :class:`errors.ConfigError` for a malformed one."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise errors.ConfigError(f"--set expects KEY=VALUE, e.g. kfp.launcher=kfp; got {item!r}")
        path = key.strip().split(".")
        _set_path(tree, path, value)
        origins.record(path, f"--set {key.strip()}")
    return tree
