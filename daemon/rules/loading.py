"""Loading rule files: YAML in, validated :class:`~daemon.model.rules.Rule` values or precise errors out.

Every problem is reported at once as ``file:line: rule 'x': field 'y': message``: unreadable YAML, unknown
fields (with the closest valid name), bad values, duplicate rule names across files. A file with errors
contributes no rules; other files are unaffected.

A rule file holds one rule, several YAML documents (``---``) of one rule each, or ``rules: [...]``.
In a folder, ``*.yaml`` and ``*.yml`` files are read in name order; hidden entries (ConfigMap's ``..data``)
are skipped.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydantic

from daemon import errors, yamlfile
from daemon.model import rules


@dataclass(frozen=True, kw_only=True)
class LoadedRule:
    """A valid rule and where it was written."""

    rule: rules.Rule
    file: str
    line: int | None


@dataclass(frozen=True, kw_only=True)
class FileResult:
    """What one file gave: its rules, or its errors (a file with errors gives no rules)."""

    file: str
    rules: tuple[LoadedRule, ...] = ()
    errors: tuple[errors.ConfigError, ...] = ()


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """Rules by name and every error found."""

    rules: dict[str, LoadedRule] = field(default_factory=dict)
    errors: list[errors.ConfigError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def rule_files(paths: Sequence[Path]) -> list[Path]:
    """Expand folders into their rule files; keep files as given."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(
                sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith("."))
            )
        else:
            found.append(path)
    return found


def _model_at(path: Sequence[str | int]) -> type[pydantic.BaseModel] | None:
    """The schema class a location points into, to suggest field names."""
    current: Any = rules.Rule
    for part in path:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return None
        annotation = fields[part].annotation
        current = _unwrap(annotation)
    return current if isinstance(current, type) and issubclass(current, pydantic.BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg
        inner = _unwrap(arg)
        if inner is not None and inner is not arg:
            return inner
    return annotation


#: Error types whose message does not repeat the bad value: the message adds it.
_SHOW_INPUT = frozenset(
    {
        "literal_error",
        "greater_than",
        "greater_than_equal",
        "less_than",
        "less_than_equal",
        "int_parsing",
        "float_parsing",
        "bool_parsing",
        "int_from_float",
        "multiple_of",
        "string_pattern_mismatch",
    }
)


def _message(item: Any, location: Sequence[str | int]) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        parent = _model_at(location[:-1])
        known = list(parent.model_fields) if parent is not None else []
        close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; valid: {', '.join(known)}" if known else "")
        return f"unknown field{hint}"
    if kind == "missing":
        return "required field is missing"
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind in _SHOW_INPUT:
        message += f", got {item.get('input')!r}"
    return message


def _field_path(location: Sequence[str | int]) -> str:
    text = ""
    for part in location:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _validate(value: Any, *, file: str, document: yamlfile.Document, base: tuple[str | int, ...]) -> FileResult:
    name = value.get("name") if isinstance(value, dict) else None
    rule_name = name if isinstance(name, str) else None
    try:
        rule = rules.Rule.model_validate(value)
    except pydantic.ValidationError as exc:
        found = []
        for item in exc.errors():
            location: list[str | int] = [part for part in item["loc"] if part not in rules.UNION_TAGS]
            found.append(
                errors.ConfigError(
                    _message(item, location),
                    file=file,
                    line=document.line_of((*base, *location)),
                    rule=rule_name,
                    field=_field_path(location) or None,
                )
            )
        return FileResult(file=file, errors=tuple(found))
    return FileResult(file=file, rules=(LoadedRule(rule=rule, file=file, line=document.line_of(base)),))


def parse_text(text: str, *, file: str) -> FileResult:
    """Validate the rules in one file's text."""
    try:
        documents = yamlfile.parse_documents(text, file=file)
    except errors.ConfigError as exc:
        return FileResult(file=file, errors=(exc,))
    loaded: list[LoadedRule] = []
    found: list[errors.ConfigError] = []
    if not documents:
        found.append(errors.ConfigError("the file holds no rule", file=file, line=1))
    for document in documents:
        value = document.value
        entries: list[tuple[Any, tuple[str | int, ...]]]
        if isinstance(value, dict) and set(value) == {"rules"}:
            items = value["rules"]
            if not isinstance(items, list) or not items:
                found.append(
                    errors.ConfigError("'rules' must be a non-empty list", file=file, line=document.line_of(("rules",)))
                )
                continue
            entries = [(item, ("rules", i)) for i, item in enumerate(items)]
        else:
            entries = [(value, ())]
        for entry, base in entries:
            if not isinstance(entry, dict):
                found.append(
                    errors.ConfigError(
                        f"a rule must be a mapping of fields, got {type(entry).__name__}",
                        file=file,
                        line=document.line_of(base),
                    )
                )
                continue
            result = _validate(entry, file=file, document=document, base=base)
            loaded.extend(result.rules)
            found.extend(result.errors)
    if found:
        return FileResult(file=file, errors=tuple(found))
    return FileResult(file=file, rules=tuple(loaded))


def load_file(path: Path) -> FileResult:
    """Read and validate one rule file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return FileResult(file=str(path), errors=(errors.ConfigError(f"cannot read file: {exc}", file=path),))
    return parse_text(text, file=str(path))


def combine(results: Iterable[FileResult]) -> LoadResult:
    """Merge file results, reporting rule names defined twice (the second one is the error)."""
    combined = LoadResult()
    for result in results:
        combined.errors.extend(result.errors)
        for loaded in result.rules:
            first = combined.rules.get(loaded.rule.name)
            if first is not None:
                combined.errors.append(
                    errors.ConfigError(
                        f"duplicate rule name: already defined at {first.file}:{first.line}",
                        file=loaded.file,
                        line=loaded.line,
                        rule=loaded.rule.name,
                        field="name",
                    )
                )
                continue
            combined.rules[loaded.rule.name] = loaded
    return combined


def load_paths(paths: Sequence[Path]) -> LoadResult:
    """Load every rule file under ``paths`` (files or folders)."""
    files = rule_files(paths)
    missing = [p for p in paths if not p.exists()]
    result = combine(load_file(f) for f in files if f.exists())
    for path in missing:
        result.errors.append(errors.ConfigError("no such file or folder", file=path))
    return result
