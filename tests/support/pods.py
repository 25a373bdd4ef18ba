"""Pods on one machine: a process in its own mount namespace, as another user, seeing only its volumes.

What a container runtime gives a pod, built from what Linux offers root here (no Docker engine runs on
these machines):

- a private mount namespace (``unshare --mount``), so the pod's mounts are its own;
- the root filesystem read-only when the pod spec says ``readOnlyRootFilesystem`` (a bind remount of ``/``
  inside the namespace only), with the pod's volumes bind-mounted at their mount paths, read-only or not,
  and memory-backed ``emptyDir`` volumes as tmpfs (``/dev/shm``);
- another user id and group (``runAsUser``, ``runAsGroup``, ``fsGroup``) and an environment that holds only
  what the spec gives (the image's ``ENV`` and the container's ``env``), nothing of the test's;
- folders the image would hold but this machine keeps under a private parent (the Python interpreter under
  ``/root``) re-exposed alone, everything else of that parent hidden behind an empty tmpfs.

Mount points that do not exist on this machine (``/etc/retrain/rules``, ``/data``) are created as empty
folders, as a container runtime creates them in an image, and removed (when empty) when the last test
session on this machine ends: not when one pod ends, nor when one of two sessions running side by side
ends, since removing a folder that is a mount point in another pod's namespace unmounts it there (a
daemon pod of the other session then sees its rules folder empty: found when a developer's test run
overlapped a CI run on the same machine).

``python -m tests.support.pods SPEC.json`` runs as root inside ``unshare --mount``, sets all of that up,
drops to the pod's user and ``exec``s the container's command. :func:`start` is the caller's side.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Mount:
    """One volume of the pod."""

    target: str
    source: str | None = None
    """Host folder bind-mounted at ``target``; None for a tmpfs."""
    read_only: bool = False
    size: str | None = None
    """Size limit of a tmpfs (``emptyDir`` with ``medium: Memory``)."""


@dataclass(frozen=True, kw_only=True)
class PodSpec:
    """A container to run: command, environment, user, volumes."""

    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)
    cwd: str = "/"
    mounts: list[Mount] = field(default_factory=list)
    read_only_root: bool = False
    expose: list[str] = field(default_factory=list)
    """Host paths the container must reach although a parent folder is private (the interpreter, the repo)."""
    passwd: str | None = None
    """An /etc/passwd line for the user (the image's account), bind-mounted over /etc/passwd."""


def interpreter_paths() -> list[str]:
    """What a process of this virtual environment needs to start: the venv and the interpreter it links."""
    return sorted({str(Path(sys.prefix)), str(Path(sys.base_prefix)), str(Path(__file__).resolve().parents[2])})


class Pod:
    """A started pod: its process (signal it, wait for it) and the mount points made for it.

    The process is the container's command itself (``unshare`` and the set-up ``exec`` into it), so a
    SIGTERM or SIGKILL reaches it as kubelet's would.
    """

    def __init__(self, spec: PodSpec, *, workdir: Path, log: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.made = _make_mount_points([m.target for m in spec.mounts] + (["/etc/passwd"] if spec.passwd else []))
        path = workdir / f"pod-{id(self)}.json"
        path.write_text(json.dumps(asdict(spec)))
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    sys.executable,
                    "-m",
                    "tests.support.pods",
                    str(path),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=Path(__file__).resolve().parents[2],
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(30)


#: The mount points pods created, one per line, by every session on this machine (several processes start
#: pods).
MADE = Path(tempfile.gettempdir()) / "retrain-tests-mount-points.txt"
#: One file per live test session (named by its process id): mount points are removed by the last one.
SESSIONS = Path(tempfile.gettempdir()) / "retrain-tests-sessions"


def session_started() -> None:
    """Register this test session: its pods' mount points stay while it runs."""
    SESSIONS.mkdir(exist_ok=True)
    (SESSIONS / str(os.getpid())).touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_mount_points(targets: Sequence[str]) -> list[Path]:
    """Create missing mount points (as a runtime does in an image); returns what was created."""
    made: list[Path] = []
    for target in targets:
        for candidate in [*reversed(Path(target).parents), Path(target)]:
            if not candidate.exists():
                with contextlib.suppress(FileExistsError):  # another pod's start made it meanwhile
                    candidate.mkdir()
                    made.append(candidate)
    if made:
        with MADE.open("a") as out:
            out.writelines(f"{path}\n" for path in made)
    return made


def remove_mount_points() -> None:
    """At the end of a session: unregister it; the last live session removes the (empty) mount points pods
    created, any session's."""
    (SESSIONS / str(os.getpid())).unlink(missing_ok=True)
    others = [p for p in SESSIONS.glob("*") if p.name.isdigit() and _alive(int(p.name))] if SESSIONS.is_dir() else []
    if others or not MADE.exists():
        return  # another session's pods may still have their volumes mounted there
    for line in sorted(set(MADE.read_text().splitlines()), key=len, reverse=True):
        with contextlib.suppress(OSError):
            Path(line).rmdir()
    MADE.unlink()


# --- inside the namespace (root) --------------------------------------------------------------------------


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def _private_ancestors(path: Path) -> list[Path]:
    """Parents of ``path`` that others cannot traverse."""
    return [p for p in reversed(path.parents) if str(p) != "/" and not os.stat(p).st_mode & stat.S_IXOTH]


def _expose(paths: Sequence[str], staging: Path) -> None:
    """Hide private parents behind an empty tmpfs, re-exposing only ``paths`` below them."""
    hidden: dict[Path, list[Path]] = {}
    for raw in paths:
        path = Path(raw)
        private = _private_ancestors(path)
        if private:
            hidden.setdefault(private[0], []).append(path)
    for parent, wanted in hidden.items():
        keep = []
        for index, path in enumerate(wanted):
            parked = staging / f"keep{index}"
            parked.mkdir(parents=True)
            _mount("--bind", str(path), str(parked))
            keep.append((path, parked))
        _mount("-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(parent))
        for path, parked in keep:
            path.mkdir(parents=True, exist_ok=True)
            _mount("--bind", str(parked), str(path))


def _enter(spec: dict[str, Any]) -> None:
    mounts = [Mount(**m) for m in spec["mounts"]]
    staging = Path(tempfile.mkdtemp(prefix="pod-staging-", dir="/dev/shm"))
    _expose(spec["expose"], staging)
    if spec.get("passwd"):
        passwd = staging / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text() + spec["passwd"] + "\n")
        _mount("--bind", str(passwd), "/etc/passwd")
    # The image's own files (the interpreter, the project) sit outside the pod's volumes in a real image; here
    # a checkout under /tmp would vanish behind the pod's /tmp. Park them, and put them back over the volumes.
    targets = [Path(m.target) for m in mounts]
    image_files: dict[str, str] = {}
    for index, raw in enumerate(spec["expose"]):
        if any(Path(raw).is_relative_to(target) for target in targets):
            place = staging / f"image{index}"
            place.mkdir()
            _mount("--bind", raw, str(place))
            image_files[raw] = str(place)
    # Park every volume first: a volume mounted over /tmp must not hide the source of the next one.
    parked: dict[int, str] = {}
    for index, mount in enumerate(mounts):
        if mount.source is not None:
            place = staging / f"volume{index}"
            place.mkdir()
            _mount("--bind", mount.source, str(place))
            parked[index] = str(place)
    if spec["read_only_root"]:
        _mount("-o", "remount,bind,ro", "/")
    for index, mount in enumerate(mounts):
        if mount.source is None:
            options = "mode=1777" + (f",size={mount.size}" if mount.size else "")
            _mount("-t", "tmpfs", "-o", options, "tmpfs", mount.target)
        else:
            _mount("--bind", parked[index], mount.target)
            if mount.read_only:
                _mount("-o", "remount,bind,ro", mount.target)
    for raw, place in image_files.items():
        Path(raw).mkdir(parents=True, exist_ok=True)
        _mount("--bind", place, raw)
        _mount("-o", "remount,bind,ro", raw)  # files of the image: read-only, as its layers are
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.chdir(spec["cwd"])
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 - the container's command


def main(path: str) -> None:
    _enter(json.loads(Path(path).read_text()))


if __name__ == "__main__":
    main(sys.argv[1])
