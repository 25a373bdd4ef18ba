"""The suite reads nothing beside the checkout: an audit hook (PEP 578) refuses every open or listing of a
path under the checkout's parent folder that is not inside the checkout (the team's shared folder, a sibling
clone). A fresh clone from a Git host has nothing there; a test that needed it would pass here and fail there.

The hook sees this process's opens (``open``, ``os.open``, ``os.listdir``, ``os.scandir``); the daemons and
pods the tests start are given only paths the tests made, and :mod:`tests.test_self_contained` scans the
sources for the folder's name as well.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from typing import Any

from tests.support.paths import ROOT


class OutsideCheckout(RuntimeError):
    """A test opened a path beside the checkout (not an OSError: code that shrugs off I/O errors must not
    swallow it)."""


_EVENTS = frozenset({"open", "os.listdir", "os.scandir"})
_INSIDE = str(ROOT) + os.sep
_BESIDE = str(ROOT.parent) + os.sep
#: The checkout sits directly in the system's temporary folder (a clone at /tmp/NAME): every temporary path
#: (pytest's, the services') is then beside it, and only the checkout's own siblings could be told apart by
#: name, so temporary paths are allowed. A clone deeper down (/tmp/x/NAME) keeps its siblings refused.
IN_TEMP_FOLDER = os.path.abspath(ROOT.parent) == os.path.abspath(tempfile.gettempdir())
#: Allowed wherever the checkout lies: the interpreter and its libraries (a virtual environment beside the
#: checkout included), and the temporary folder when the checkout sits directly in it.
_ALLOWED = tuple(
    {os.path.abspath(p) + os.sep for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    | ({os.path.abspath(tempfile.gettempdir()) + os.sep} if IN_TEMP_FOLDER else set())
)
_refused: list[str] = []
_lock = threading.Lock()
_installed = False


def outside(path: str) -> bool:
    """Whether an absolute or cwd-relative path lies beside the checkout (under its parent, not in it)."""
    full = os.path.abspath(path) + os.sep
    if not full.startswith(_BESIDE) or full.startswith(_INSIDE) or full.startswith(_ALLOWED):
        return False
    # Hidden folders beside it are tools' state, not data (a clone in a home folder: ~/.cache, ~/.config).
    return not full[len(_BESIDE) :].startswith(".")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if event not in _EVENTS or not args:
        return
    path = args[0]
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, str) or not outside(path):
        return
    with _lock:
        _refused.append(os.path.abspath(path))
    raise OutsideCheckout(f"{event} {os.path.abspath(path)}: the suite must not read beside the checkout ({ROOT})")


def mutation_copy() -> bool:
    """Whether this is mutmut's copy of the repository (``mutants/`` inside the checkout), where the checkout
    itself is beside the copy."""
    return ROOT.name == "mutants" and (ROOT.parent / "pyproject.toml").is_file()


def guard() -> None:
    """Install the hook once per process (audit hooks cannot be removed); not in mutmut's copy."""
    global _installed
    if not _installed and not mutation_copy():
        sys.addaudithook(_hook)
        _installed = True


def refused() -> list[str]:
    """The paths refused so far in this process."""
    with _lock:
        return list(_refused)


def forget(path: str) -> None:
    """Drop a path from the record (the guard's own test refuses one on purpose)."""
    with _lock:
        _refused[:] = [p for p in _refused if p != path]
