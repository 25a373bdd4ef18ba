# syntax=docker/dockerfile:1
# Two images from one file (`docker build --target daemon|trainer`):
#   daemon  - the long-running service: python slim, no torch, non-root, journal on a volume, a healthcheck.
#   trainer - what every pipeline component runs in: CUDA PyTorch, ultralytics, this project, and the font
#             Ultralytics draws labels with, so no run tries to download it.
# tests/deploy/test_dockerfile.py lints this file with hadolint and checks the stages, users and entrypoints.
#
# Both stages install exact versions with hashes from requirements/{daemon,trainer}.lock (`make lock`
# writes them from pyproject.toml), then this project with --no-deps: the image holds what CI tested.
# The locks are resolved for linux x86_64 (amd64 nodes). Both bases are pinned by digest (python:3.11-slim's
# multi-platform index); the digest was read from public Dockerfiles, not pulled here (no engine). To bump:
#   docker buildx imagetools inspect python:3.11-slim   # prints the index digest ("Digest: sha256:...")
# and replace the digest on both FROM lines in one commit; `make sbom` afterwards lists what changed.

# ------------------------------------------------------------------------------------------------------
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS daemon
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    RETRAIN_JOURNAL__PATH=/var/lib/retrain/journal.db \
    RETRAIN_KFP__LOCAL_PIPELINE_ROOT=/var/lib/retrain/runs \
    RETRAIN_RULES__PATH=/etc/retrain/rules \
    RETRAIN_HTTP__HOST=0.0.0.0 \
    RETRAIN_HTTP__PORT=8080 \
    RETRAIN_LOGGING__FORMAT=json
WORKDIR /app
# The daemon's dependencies only (daemon.lock: no [train] extra, so no torch or ultralytics in this image, and
# mlflow-skinny, MLflow's REST client, instead of full MLflow: mlflow.tracking_uri must be a server here),
# in a layer of their own that a code change does not rebuild.
COPY requirements/daemon.lock requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/daemon.lock
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && groupadd --system --gid 10001 retrain \
    && useradd --system --uid 10001 --gid retrain --no-create-home --home-dir /tmp retrain \
    && mkdir -p /var/lib/retrain /etc/retrain/rules \
    && chown retrain:retrain /var/lib/retrain
COPY rules /etc/retrain/rules
# The journal (SQLite, WAL): a local disk or a ReadWriteOnce volume, never NFS/SMB.
VOLUME ["/var/lib/retrain"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('RETRAIN_HTTP__PORT', '8080') + '/healthz', timeout=4)"]
ENTRYPOINT ["retrain"]
CMD ["up"]

# ------------------------------------------------------------------------------------------------------
# torch comes from trainer.lock as PyPI's CUDA 13.0 build, the CUDA runtime as nvidia-* wheels beside it:
# GPU nodes need an NVIDIA driver for CUDA 13 (580 or newer), no CUDA in the image's base.
FROM python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7 AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/opt/yolo \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
WORKDIR /app
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# OpenCV (ultralytics' cv2) loads libGL and GLib at import. Their versions come with the Debian release of
# the pinned base; they are the only packages not pinned by a lock.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install --yes --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*
# The project's [train] extra from trainer.lock (torch, torchvision, ultralytics and all they need).
COPY requirements/trainer.lock requirements/
RUN pip install --no-cache-dir --require-hashes --no-deps -r requirements/trainer.lock
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
# Ultralytics looks for Arial.ttf (Arial.Unicode.ttf for non-Latin class names) in YOLO_CONFIG_DIR/Ultralytics
# and downloads it when missing; matplotlib's bundled DejaVu Sans stands in under those names.
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && groupadd --system --gid 10002 trainer \
    && useradd --system --uid 10002 --gid trainer --no-create-home --home-dir /tmp trainer \
    && font="$(python -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf"))')" \
    && mkdir -p /opt/yolo/Ultralytics \
    && cp "$font" /opt/yolo/Ultralytics/Arial.ttf \
    && cp "$font" /opt/yolo/Ultralytics/Arial.Unicode.ttf \
    && chown -R trainer:trainer /opt/yolo \
    && chmod -R a+rwX /opt/yolo
# Not the daemon's uid (10001): a task pod shares no user with the daemon's pod.
USER 10002:10002
# KFP replaces the command of every component (python -m kfp.dsl.executor_main ...); this default only
# serves `docker run trainer` by hand.
ENTRYPOINT ["python", "-m", "pipelines.local_run"]
