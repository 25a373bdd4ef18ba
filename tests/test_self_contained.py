"""The suite is self-contained: its real data live in tests/data, and nothing reads beside the checkout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from tests.support import selfcontained
from tests.support.paths import COCO_MINI, DATA, ROOT

#: Where the suite, the benchmarks and the build live: none of them may name the folder beside the checkout.
SCANNED = ["tests", "benchmarks", "Makefile", "pyproject.toml", ".ci"]
BESIDE = re.compile(r"\.\./shared|parents?\[?\d*\]?\s*\.?\s*parent\s*/\s*[\"']shared[\"']|parent / \"shared\"")


def test_opening_a_path_beside_the_checkout_fails_the_test() -> None:
    sibling = ROOT.parent / "beside-the-checkout"  # refused before the open: it need not exist
    if selfcontained.IN_TEMP_FOLDER:  # a clone at /tmp/NAME: every temporary path is beside it, all allowed
        assert not selfcontained.outside(str(sibling))
        return
    beside = sibling / "events" / "minio-put-sample.json"
    with pytest.raises(selfcontained.OutsideCheckout, match="must not read beside the checkout"):
        beside.read_text()
    with pytest.raises(selfcontained.OutsideCheckout):
        os.listdir(sibling)
    with pytest.raises(selfcontained.OutsideCheckout):
        os.listdir(os.path.join(ROOT, "..", sibling.name))  # a relative way out is caught too
    assert str(beside) in selfcontained.refused()
    for path in (str(beside), str(sibling)):
        selfcontained.forget(path)  # refused on purpose: not the session's failure
    assert not selfcontained.refused()


def test_paths_inside_the_checkout_and_elsewhere_are_not_refused(tmp_path: Path) -> None:
    assert not selfcontained.outside(str(ROOT / "tests" / "data"))
    assert not selfcontained.outside(str(tmp_path))
    assert not selfcontained.outside(str(ROOT))
    # A sibling clone is beside it too (unless the checkout sits directly in the temporary folder).
    assert selfcontained.outside(str(ROOT.parent / "main-copy")) is not selfcontained.IN_TEMP_FOLDER
    assert not selfcontained.outside(str(ROOT.parent / ".cache" / "pip"))  # tools' state in a home folder
    (tmp_path / "x").write_text("read")
    assert (tmp_path / "x").read_text() == "read"


def test_no_source_names_the_folder_beside_the_checkout() -> None:
    found: list[str] = []
    for top in SCANNED:
        root = ROOT / top
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file() and p.suffix != ".jpg"]
        for path in files:
            if path == Path(__file__):
                continue
            text = path.read_text(errors="replace")
            found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in BESIDE.finditer(text)]
    assert not found, found


def test_the_real_data_ship_in_the_repository() -> None:
    names = yaml.safe_load((COCO_MINI / "data.yaml").read_text())["names"]
    assert len(names) == 80
    for split, count in (("train", 16), ("val", 8)):
        images = sorted((COCO_MINI / "images" / split).iterdir())
        assert len(images) == count
        for image in images:
            assert (COCO_MINI / "labels" / split / f"{image.stem}.txt").is_file(), image
    assert (DATA / "events" / "minio-put-sample.json").is_file()
    readme = (DATA / "README.md").read_text()
    assert "CC BY 4.0" in readme and "provenance" in readme.lower()
