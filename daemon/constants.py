"""Names shared by the daemon, the pipelines and the deploy manifests: environment variables and the
progress-line mark. MLflow tag and alias names live in :mod:`daemon.model.tags`."""

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

#: Prefix of the progress lines a pipeline child prints (one JSON object per epoch) for the daemon's log.
PROGRESS_MARK: Final = "RETRAIN_PROGRESS "
