"""YAML with line numbers: load a document and remember where each value stood.

Rule files and the settings file are edited by hand, so every error has to point at a line. PyYAML's
``safe_load`` forgets positions; this module composes the node tree once, builds the Python value from it
and keeps a map from each key path to its 1-based line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from daemon import errors

#: A path into a YAML document: mapping keys and sequence indexes, e.g. ``("triggers", 0, "cron")``.
KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, kw_only=True)
class Document:
    """One YAML document: its value and the line of every key path in it."""

    value: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """The line of ``path``, or of its closest ancestor that has one (for missing fields)."""
        probe = tuple(path)
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe[:-1]
        return self.lines.get((), None)


def _index(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], *, file: str) -> None:
    """Record the line of every key path under ``node`` and reject duplicate keys."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "<complex key>"
            if key in seen:
                raise errors.ConfigError(f"duplicate key {key!r}", file=file, line=key_node.start_mark.line + 1)
            seen.add(key)
            child = (*path, key)
            lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, lines, file=file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, file=file)


def parse_documents(text: str, *, file: str) -> list[Document]:
    """Parse every document in ``text``.

    Raises:
        errors.ConfigError: the text is not valid YAML (with the line of the problem) or uses a
            duplicate key.
    """
    try:
        loader = yaml.SafeLoader(text)  # reads the text at once: control characters fail here
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"unreadable YAML: {exc}", file=file) from exc
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[KeyPath, int] = {}
            _index(node, (), lines, file=file)
            documents.append(Document(value=loader.construct_document(node), lines=lines))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise errors.ConfigError(f"unreadable YAML: {problem}", file=file, line=line) from exc
    except yaml.YAMLError as exc:
        raise errors.ConfigError(f"unreadable YAML: {exc}", file=file) from exc
    finally:
        loader.dispose()
    return documents


def load_file(path: Path) -> list[Document]:
    """Read and parse a YAML file.

    Raises:
        errors.ConfigError: the file cannot be read or is not valid YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise errors.ConfigError(f"cannot read file: {exc}", file=path) from exc
    return parse_documents(text, file=str(path))
