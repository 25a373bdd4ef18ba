# syntax=docker/dockerfile:1
# Two images from one file (`docker build --target daemon|trainer`):
#   daemon  - the long-running service: python slim, no torch, non-root, journal on a volume, a healthcheck.
#   trainer - what every pipeline component runs in: CUDA PyTorch, ultralytics, this project, and the font
#             Ultralytics draws labels with, so no run tries to download it.
# tests/test_dockerfile.py lints this file with hadolint and checks the stages, users and entrypoints.

# ------------------------------------------------------------------------------------------------------
FROM python:3.11-slim AS daemon
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
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
# The daemon's dependencies only: no [train] extra, so no torch or ultralytics in this image.
RUN pip install --no-cache-dir . \
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
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    YOLO_OFFLINE=1 \
    YOLO_CONFIG_DIR=/opt/yolo \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp
WORKDIR /app
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
# The project with its [train] extra (ultralytics; torch and torchvision come with the base image).
# Ultralytics looks for Arial.ttf (Arial.Unicode.ttf for non-Latin class names) in YOLO_CONFIG_DIR/Ultralytics
# and downloads it when missing; matplotlib's bundled DejaVu Sans stands in under those names.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN pip install --no-cache-dir "./[train]" \
    && groupadd --system --gid 10001 retrain \
    && useradd --system --uid 10001 --gid retrain --no-create-home --home-dir /tmp retrain \
    && font="$(python -c 'import matplotlib, pathlib; print(pathlib.Path(matplotlib.get_data_path(), "fonts/ttf/DejaVuSans.ttf"))')" \
    && mkdir -p /opt/yolo/Ultralytics \
    && cp "$font" /opt/yolo/Ultralytics/Arial.ttf \
    && cp "$font" /opt/yolo/Ultralytics/Arial.Unicode.ttf \
    && chown -R retrain:retrain /opt/yolo \
    && chmod -R a+rwX /opt/yolo
USER 10001:10001
# KFP replaces the command of every component (python -m kfp.dsl.executor_main ...); this default only
# serves `docker run trainer` by hand.
ENTRYPOINT ["python", "-m", "pipelines.local_run"]
