# syntax=docker/dockerfile:1
# Two images from one file:
#   daemon  - the long-running service: python slim, no torch, non-root, journal on a volume.
#   trainer - what pipeline components run in: CUDA PyTorch, ultralytics, this project installed.
# A first version: deploy/ manifests, healthcheck endpoints and the baked-in font come with later work.

FROM python:3.11-slim AS daemon
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RETRAIN_JOURNAL__PATH=/var/lib/retrain/journal.db \
    RETRAIN_RULES__PATH=/etc/retrain/rules \
    RETRAIN_LOGGING__FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
RUN pip install --no-cache-dir . \
    && groupadd --system --gid 10001 retrain \
    && useradd --system --uid 10001 --gid retrain --no-create-home retrain \
    && mkdir -p /var/lib/retrain /etc/retrain/rules \
    && chown retrain:retrain /var/lib/retrain
COPY rules /etc/retrain/rules
VOLUME ["/var/lib/retrain"]
USER 10001:10001
ENTRYPOINT ["retrain"]
CMD ["up"]

FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    YOLO_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY pipelines ./pipelines
RUN pip install --no-cache-dir '.[train]'
