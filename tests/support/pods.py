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
  ``/root``) re-exposed alone, everything else of that parent hidden behind an empty tmpfs;
- for an ``isolated`` pod (the KFP stand-in's task pods), its own PID namespace (it sees its own processes
  only, ``/proc`` remounted) and its own network namespace: loopback only, plus the ``reach`` ports of this
  machine's loopback that its network policy lets it reach (S3, MLflow), each relayed through a Unix socket
  (a forwarder inside the pod's network listens on ``127.0.0.1:PORT``; the caller's side connects to the
  real port). Anything else on this machine (the daemon's API, PostgreSQL) is out of its reach.

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
import fcntl
import json
import os
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
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
    isolated: bool = False
    """Own PID and network namespaces (a pod of another node's pod network, not this machine's processes)."""
    reach: list[int] = field(default_factory=list)
    """Ports of this machine's 127.0.0.1 an isolated pod may reach (relayed), as a NetworkPolicy's egress."""
    relay_dir: str = ""
    """Where the caller's relays listen (one Unix socket per reached port); set by :class:`Pod`."""


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
        self.relays: list[socket.socket] = []
        if spec.isolated:
            relay_dir = Path(tempfile.mkdtemp(prefix="pod-relay-"))  # short: a Unix socket path has 108 bytes
            self.relays = [_relay(relay_dir / f"{port}.sock", port) for port in spec.reach]
            spec = replace(spec, relay_dir=str(relay_dir))
        path = workdir / f"pod-{id(self)}.json"
        path.write_text(json.dumps(asdict(spec)))
        namespaces = ["--pid", "--fork", "--mount-proc", "--net", "--kill-child"] if spec.isolated else []
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    "unshare",
                    "--mount",
                    "--propagation",
                    "private",
                    *namespaces,
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
        code = self.process.wait(timeout_s)
        self.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 9)
            self.process.wait(30)
        self.close()

    def close(self) -> None:
        """Stop the relays of an isolated pod (its network is gone with it)."""
        for listener in self.relays:
            path = Path(listener.getsockname())
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            listener.close()
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # once the last socket of the pod is gone
        self.relays = []


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


def _splice(one: socket.socket, other: socket.socket) -> None:
    """Copy both ways until both sides are done."""
    back = threading.Thread(target=_pipe, args=(other, one), daemon=True)
    back.start()
    _pipe(one, other)
    back.join()
    one.close()
    other.close()


def _relay(path: Path, port: int) -> socket.socket:
    """The caller's side of a reached port: each connection to the Unix socket ``path`` goes to 127.0.0.1:port."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                inner, _ = listener.accept()
                try:
                    outer = socket.create_connection(("127.0.0.1", port), timeout=10)
                except OSError:
                    inner.close()
                    continue
                outer.settimeout(None)
                threading.Thread(target=_splice, args=(inner, outer), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return listener


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


def _loopback_up() -> None:
    """``ip link set lo up`` in the pod's new network namespace (SIOCSIFFLAGS, without iproute2)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
        request = struct.pack("16sH14s", b"lo", 0, b"\0" * 14)
        flags = struct.unpack("16sH", fcntl.ioctl(control, siocgifflags, request)[:18])[1]
        fcntl.ioctl(control, siocsifflags, struct.pack("16sH14s", b"lo", flags | iff_up, b"\0" * 14))


def _forward(relay_dir: str, ports: Sequence[int]) -> None:
    """Inside the pod's network: listen on 127.0.0.1:PORT for each reached port, relay to the caller's socket.

    A child process that keeps the relay folder as its working directory, so the sockets stay reachable after
    the pod's volumes are mounted over the folder's parents; it dies with the pod (PID namespace)."""
    listeners = []
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listeners.append((listener, port))
    if os.fork() != 0:
        for listener, _ in listeners:
            listener.close()
        return
    os.chdir(relay_dir)

    def serve(listener: socket.socket, port: int) -> None:
        while True:
            inner, _ = listener.accept()
            outer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                outer.connect(f"{port}.sock")
            except OSError:
                inner.close()
                continue
            threading.Thread(target=_splice, args=(inner, outer), daemon=True).start()

    for listener, port in listeners:
        threading.Thread(target=serve, args=(listener, port), daemon=True).start()
    threading.Event().wait()


_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes quantity (``64Mi``, ``2Gi``, ``500M``, ``1024``) in bytes."""
    for suffix, factor in _UNITS.items():
        if quantity.endswith(suffix):
            return int(float(quantity.removesuffix(suffix)) * factor)
    return int(float(quantity))


def _tmpfs(mount: Mount) -> None:
    size = f",size={quantity_bytes(mount.size)}" if mount.size else ""
    _mount("-t", "tmpfs", "-o", f"mode=1777{size}", "tmpfs", mount.target)


def _park(paths: dict[str, str], staging: Path, prefix: str) -> dict[str, str]:
    """Bind each host path to a folder of ``staging`` (to be bound back once volumes are mounted over it)."""
    parked = {}
    for index, (key, raw) in enumerate(paths.items()):
        place = staging / f"{prefix}{index}"
        place.mkdir()
        _mount("--bind", raw, str(place))
        parked[key] = str(place)
    return parked


def _enter(spec: dict[str, Any]) -> None:
    mounts = [Mount(**m) for m in spec["mounts"]]
    if spec.get("isolated"):
        _loopback_up()
        if spec.get("reach"):
            _forward(spec["relay_dir"], spec["reach"])
    staging = Path(tempfile.mkdtemp(prefix="pod-staging-", dir="/dev/shm"))
    _expose(spec["expose"], staging)
    if spec.get("passwd"):
        passwd = staging / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text() + spec["passwd"] + "\n")
        _mount("--bind", str(passwd), "/etc/passwd")
    # The image's own files (the interpreter, the project) sit outside the pod's volumes in a real image; here
    # a checkout under /tmp would vanish behind the pod's /tmp. Park them, and put them back over the volumes.
    targets = [Path(m.target) for m in mounts]
    covered = {raw: raw for raw in spec["expose"] if any(Path(raw).is_relative_to(target) for target in targets)}
    image_files = _park(covered, staging, "image")
    # Park every volume first: a volume mounted over /tmp must not hide the source of the next one.
    parked = _park({str(i): m.source for i, m in enumerate(mounts) if m.source is not None}, staging, "volume")
    if spec["read_only_root"]:
        _mount("-o", "remount,bind,ro", "/")
    for index, mount in enumerate(mounts):
        if mount.target == "/dev/shm":
            continue  # last: the staging folder lives there, and a tmpfs over it would hide what is still to bind
        if mount.source is None:
            _tmpfs(mount)
        else:
            _mount("--bind", parked[str(index)], mount.target)
            if mount.read_only:
                _mount("-o", "remount,bind,ro", mount.target)
    for raw, place in image_files.items():
        Path(raw).mkdir(parents=True, exist_ok=True)
        _mount("--bind", place, raw)
        _mount("-o", "remount,bind,ro", raw)  # files of the image: read-only, as its layers are
    for mount in mounts:
        if mount.target == "/dev/shm":
            _tmpfs(mount)
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
    os.chdir(spec["cwd"])
    os.execvpe(spec["argv"][0], spec["argv"], spec["env"])  # noqa: S606 - the container's command


def main(path: str) -> None:
    _enter(json.loads(Path(path).read_text()))


if __name__ == "__main__":
    main(sys.argv[1])
