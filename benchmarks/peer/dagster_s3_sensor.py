"""The peer: a Dagster S3 sensor as Dagster's docs write one (``dagster_aws.s3.sensor.get_objects`` with the
cursor at the newest ``LastModified`` seen), loaded by ``dagster-daemon run`` from ``benchmarks/peer/``'s
own virtual environment (requirements/bench.lock: Dagster pins watchdog<7, the daemon uses watchdog 7).

Each new label file becomes a RunRequest for a one-op job (the instance queues runs and launches none, so
what is measured is the sensor's detection, not Dagster's run launcher). For the benchmark, every tick
appends a line to ``$PEER_LOG``: when it ended, how many ListObjectsV2 requests it sent, how long they took,
and the new keys it found.
"""

import json
import os
import time
from datetime import datetime

import boto3
from botocore.config import Config
from dagster import DefaultSensorStatus, Definitions, RunRequest, SensorEvaluationContext, job, op, sensor
from dagster_aws.s3.sensor import get_objects

BUCKET = os.environ["PEER_BUCKET"]
PREFIX = os.environ["PEER_PREFIX"]
INTERVAL_S = int(os.environ.get("PEER_INTERVAL_S", "30"))
LOG = os.environ["PEER_LOG"]


@op
def retrain(context) -> None:  # type: ignore[no-untyped-def]
    context.log.info("would retrain on %s", context.run.tags.get("key"))


@job
def retrain_job() -> None:
    retrain()


def _client():  # type: ignore[no-untyped-def]
    client = boto3.client(
        "s3",
        endpoint_url=os.environ["PEER_S3_URL"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    client.lists = 0

    def count(**_: object) -> None:
        client.lists += 1

    client.meta.events.register("before-send.s3.ListObjectsV2", count)
    return client


@sensor(job=retrain_job, minimum_interval_seconds=INTERVAL_S, default_status=DefaultSensorStatus.RUNNING)
def new_labels(context: SensorEvaluationContext):  # type: ignore[no-untyped-def]
    client = _client()
    since = datetime.fromisoformat(context.cursor) if context.cursor else None
    started = time.perf_counter()
    objects = get_objects(BUCKET, prefix=PREFIX, since_last_modified=since, client=client)
    listed_s = time.perf_counter() - started
    found = [o["Key"] for o in objects if o["Key"].endswith(".txt")] if since else []
    with open(LOG, "a") as log:
        log.write(
            json.dumps({"at": time.time(), "lists": client.lists, "list_s": listed_s, "new": found, "first": not since})
            + "\n"
        )
    for key in found:
        yield RunRequest(run_key=key, tags={"key": key})
    if objects:
        context.update_cursor(max(o["LastModified"] for o in objects).isoformat())


defs = Definitions(jobs=[retrain_job], sensors=[new_labels])
