"""Names shared by the daemon, the pipelines and the deploy manifests.

One place for every tag key, alias and environment variable prefix that crosses a process boundary, so that
the daemon that writes a tag and the pipeline that reads it can never disagree.
"""

from typing import Final

#: Prefix of every environment variable the daemon reads (``RETRAIN_JOURNAL__PATH`` sets ``journal.path``).
ENV_PREFIX: Final = "RETRAIN_"
#: Separator between setting groups in environment variable names.
ENV_NESTED_DELIMITER: Final = "__"
#: Environment variable naming the settings file, when ``--config`` is not given.
ENV_CONFIG_FILE: Final = "RETRAIN_CONFIG"
#: Environment variable that arms one failpoint (fault-injection tests only; see ``daemon/failpoints.py``).
ENV_FAILPOINT: Final = "RETRAIN_FAILPOINT"
#: Environment variable naming a folder where every failpoint that fires leaves a marker file first.
ENV_FAILPOINT_MARKERS: Final = "RETRAIN_FAILPOINT_MARKERS"

#: The MLflow registered-model alias that production serves.
CHAMPION_ALIAS: Final = "champion"

#: MLflow tags written on runs and model versions.
TAG_RULE: Final = "retrain.rule"
TAG_RUN_KEY: Final = "retrain.run_key"
TAG_DATASET_FINGERPRINT: Final = "retrain.dataset_fingerprint"
TAG_CODE_VERSION: Final = "retrain.code_version"
TAG_GATE_DECISION: Final = "retrain.gate.decision"
TAG_GATE_REASON: Final = "retrain.gate.reason"
#: Prefix of the metric tags on model versions: ``retrain.metric.map50_95``.
TAG_METRIC_PREFIX: Final = "retrain.metric."
#: Prefix of the progress lines a pipeline child prints (one JSON object per epoch) for the daemon's log.
PROGRESS_MARK: Final = "RETRAIN_PROGRESS "
