"""The documents name only files that exist: every repository path a README cites in backticks is there."""

from __future__ import annotations

import re

import pytest

from tests.support.paths import ROOT

DOCUMENTS = ["README.md", "BENCHMARKS.md", "MUTATION.md", "benchmarks/README.md", "tests/data/README.md"]
#: A path in backticks under one of the repository's top folders (globs and placeholders are not paths).
CITED = re.compile(r"`((?:tests|daemon|pipelines|benchmarks|deploy|requirements|rules|docs)/[A-Za-z0-9_./-]+)`")
#: Named in backticks but not files of this repository: KFP's API resources and per-run result names.
NOT_FILES = {"pipelines/versions", "benchmarks/results/NAME.json"}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_cited_path_exists(document: str) -> None:
    text = (ROOT / document).read_text()
    cited = sorted({m.group(1).rstrip(".") for m in CITED.finditer(text)} - NOT_FILES)
    assert cited or document != "README.md", "the README cites no path: the pattern is broken"
    missing = [path for path in cited if not (ROOT / path).exists()]
    assert not missing, f"{document} cites paths that do not exist: {missing}"


def test_the_readme_cites_the_test_modules_of_each_part() -> None:
    text = (ROOT / "README.md").read_text()
    cited = {m.group(1) for m in CITED.finditer(text)}
    for part in ("tests/faults/test_faults.py", "tests/daemon/test_daemon_e2e.py", "tests/daemon/test_daemon_crash.py"):
        assert part in cited, part
