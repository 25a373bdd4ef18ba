"""retrain-daemon: an event-driven retraining daemon for object detectors.

Sources watch where data lands, a durable journal records every event before anything acts on it, a pure
rule engine turns journaled state into decisions, launchers run Kubeflow Pipelines (or ``kfp.local``),
and the promotion gate moves the MLflow ``champion`` alias only for a strictly better model.

Layers, bottom to top (checked by import-linter, see ``pyproject.toml``): values (``daemon.model``) ->
pure logic (``daemon.engine``) -> adapters -> the reactor -> ``daemon.cli``.
"""

__version__ = "0.1.0"
