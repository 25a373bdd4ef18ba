#!/usr/bin/env bash
# Point MinIO's bucket notifications at the retrain daemon's webhook (durable: MinIO queues undelivered
# events in queue_dir and retries them). Needs `mc` with an alias that has admin rights.
#
#   MINIO_ALIAS=prod BUCKET=datasets PREFIXES="pets/ traffic/" \
#   RETRAIN_WEBHOOK_TOKEN="$(kubectl -n retrain get secret retrain-daemon -o jsonpath='{.data.webhook_token}' | base64 -d)" \
#   deploy/minio/setup-webhook.sh
set -euo pipefail
: "${MINIO_ALIAS:?name of the mc alias of your MinIO, e.g. prod}"
: "${BUCKET:?the dataset bucket, e.g. datasets}"
: "${RETRAIN_WEBHOOK_TOKEN:?webhook_token of the retrain-daemon Secret}"
ENDPOINT="${ENDPOINT:-http://retrain-daemon.retrain.svc.cluster.local/events/minio}"
QUEUE_DIR="${QUEUE_DIR:-/export/.retrain-events}"
PREFIXES="${PREFIXES:-}"

mc admin config set "$MINIO_ALIAS" notify_webhook:retrain \
    endpoint="$ENDPOINT" \
    auth_token="Bearer $RETRAIN_WEBHOOK_TOKEN" \
    queue_dir="$QUEUE_DIR" \
    queue_limit=100000 \
    comment="retrain-daemon: dataset changes"
mc admin service restart "$MINIO_ALIAS"   # notification targets load at start

# Created, overwritten and deleted objects. One subscription per dataset prefix (or the whole bucket).
if [ -z "$PREFIXES" ]; then
    mc event add "$MINIO_ALIAS/$BUCKET" arn:minio:sqs::retrain:webhook --event put,delete
else
    for prefix in $PREFIXES; do
        mc event add "$MINIO_ALIAS/$BUCKET" arn:minio:sqs::retrain:webhook --event put,delete --prefix "$prefix"
    done
fi
mc event list "$MINIO_ALIAS/$BUCKET"
