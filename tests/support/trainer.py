"""The trainer image, as the KFP stand-in's task pods see it: its environment (the Dockerfile's trainer stage),
this virtual environment as its Python, its baked Ultralytics font folder, and no network beyond loopback."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import matplotlib

from tests.support import kubelet
from tests.support.kfp_standin import Cluster, KfpStandIn


def prepare(standin: KfpStandIn) -> None:
    """Give the stand-in's cluster the trainer image's environment."""
    fonts = standin.workspace / "yolo"
    (fonts / "Ultralytics").mkdir(parents=True, exist_ok=True)
    dejavu = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        shutil.copyfile(dejavu, fonts / "Ultralytics" / name)
    for path in (fonts, *fonts.rglob("*")):
        path.chmod(0o777 if path.is_dir() else 0o666)  # the Dockerfile's chmod -R a+rwX /opt/yolo
    env = kubelet.image_env("trainer")
    env.update(
        PATH=f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        YOLO_CONFIG_DIR=str(fonts),  # where the image bakes it (/opt/yolo), kept in the workspace here
        LANG="C.UTF-8",
        # Nothing may reach the internet: every proxy points at a dead port, loopback excepted.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        http_proxy="http://127.0.0.1:9",
        https_proxy="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    standin.cluster.image_env = env


def cluster(*, secrets: dict[str, dict[str, str]], volumes: dict[str, str]) -> Cluster:
    return Cluster(secrets=secrets, volumes=volumes)
