"""The pods of the cluster harness (`tests/support/pods.py`) stay faithful when two test sessions share the
machine: one session's end never unmounts the volumes of another session's pods."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import pods
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]

LOOK = """
import os, sys, time
go, rules, out = sys.argv[1:4]
while not os.path.exists(go):
    time.sleep(0.05)
open(out, "w").write(",".join(sorted(os.listdir(rules))) if os.path.isdir(rules) else "gone")
"""


def test_another_session_ending_leaves_this_session_s_pod_volumes_mounted(tmp_path: Path) -> None:
    """A daemon pod of a CI run saw its rules ConfigMap folder empty ("rule_file_removed" for every rule) when
    a developer's test session on the same machine ended: that session removed the mount points pods had
    made, and removing a folder that is a mount point in another namespace unmounts it there."""
    volume = tmp_path / "rules-volume"
    volume.mkdir()
    (volume / "pets.yaml").write_text("name: pets\n")
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    target = f"/etc/retrain-pods-test-{uuid.uuid4().hex[:8]}/rules"  # does not exist: the pod makes it
    spec = pods.PodSpec(
        argv=[sys.executable, "-c", LOOK, f"{exchange}/go", target, f"{exchange}/seen"],
        env={},
        uid=os.getuid(),
        gid=os.getgid(),
        mounts=[
            pods.Mount(target=target, source=str(volume), read_only=True),
            pods.Mount(target=str(exchange), source=str(exchange)),  # exists: not a made mount point,
        ],
        expose=pods.interpreter_paths(),
    )
    pod = pods.Pod(spec, workdir=tmp_path / "pod", log=tmp_path / "pod.log")
    try:
        wait_until(lambda: Path(target).is_dir(), 60, "the pod's mount point")
        other = subprocess.run(  # another test session on this machine starts and ends
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/core/test_redaction.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert other.returncode == 0, other.stdout[-2000:]
        (exchange / "go").touch()
        assert pod.wait(60) == 0, (tmp_path / "pod.log").read_text()
        assert (exchange / "seen").read_text() == "pets.yaml"
    finally:
        pod.kill()
