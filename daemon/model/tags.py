"""MLflow tag and alias names: the protocol between the pipeline (which writes them on runs and model
versions) and the daemon (which reads them back). One module, so the two can never disagree."""

from typing import Final

#: The registered-model alias that production serves.
CHAMPION_ALIAS: Final = "champion"

#: On runs and model versions: which rule and run produced them, from which data and code.
RULE: Final = "retrain.rule"
RUN_KEY: Final = "retrain.run_key"
DATASET_FINGERPRINT: Final = "retrain.dataset_fingerprint"
CODE_VERSION: Final = "retrain.code_version"

#: On model versions: the gate's decision (``promoted``, ``rejected``, ``refused``) and its reason.
GATE_DECISION: Final = "retrain.gate.decision"
GATE_REASON: Final = "retrain.gate.reason"
#: On model versions: the champion version when the candidate was evaluated (``none`` for the first model).
CHAMPION_AT_EVALUATION: Final = "retrain.champion_at_evaluation"
#: Prefix of the metric tags on model versions: ``retrain.metric.map50_95``.
METRIC_PREFIX: Final = "retrain.metric."
#: On model versions: AP50-95 per class name, as JSON.
PER_CLASS_AP: Final = "retrain.per_class_ap"
#: On model versions: the split the gate decided on (``test`` when the dataset has one, else ``val``: the
#: best epoch and the best trial are always chosen on ``val``), and the class names both models were scored
#: on, as JSON (all of the dataset's, or the ones champion and candidate share).
GATE_SPLIT: Final = "retrain.gate.split"
GATE_CLASSES: Final = "retrain.gate.classes"
#: On model versions: who moved the champion alias to it by hand, and why.
ROLLBACK: Final = "retrain.rollback"

#: On a run's tuning run and on its trials (child runs of it): the run key and the role. Not ``RUN_KEY``,
#: which finds the run's training run.
TUNING_RUN_KEY: Final = "retrain.tuning.run_key"
TUNING_ROLE: Final = "retrain.tuning.role"
#: On trials: their number in the run, their parameters as JSON (MLflow's params are strings) and how they
#: ended (``complete``, or ``pruned`` when the pruner stopped them early).
TRIAL_NUMBER: Final = "retrain.trial.number"
TRIAL_PARAMS: Final = "retrain.trial.params"
TRIAL_STATE: Final = "retrain.trial.state"
