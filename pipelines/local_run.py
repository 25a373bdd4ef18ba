"""Run the retraining pipeline once with ``kfp.local``, in this process, and write its outcome to a file.

``kfp.local`` keeps its configuration in process-global state and a training run takes minutes, so the
daemon's local launcher starts this module as a child process per run::

    python -m pipelines.local_run SPEC.json

SPEC holds ``pipeline_root``, ``image``, ``shape`` (tune, parallelism, gpus), ``pipeline`` (the
``settings.pipeline`` group) and ``arguments`` (from ``pipelines.arguments.arguments``). The outcome,
``{"state": "succeeded"|"failed", "output": ..., "error": ...}``, is written to ``outcome.json`` beside the
spec (atomically), so a daemon that restarted can read it later.
"""

import json
import sys
import traceback
from pathlib import Path

from daemon import atomicfile


def run(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text())
    outcome_path = spec_path.with_name("outcome.json")
    try:
        from kfp import local

        from daemon import settings
        from pipelines import arguments, graph

        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=spec["pipeline_root"])
        pipeline = graph.build(
            image=spec.get("image", "local"),
            config=settings.PipelineSettings.model_validate(spec.get("pipeline", {})),
            shape=arguments.Shape(**spec.get("shape", {})),
        )
        task = pipeline(**spec["arguments"])
        outcome = {"state": "succeeded", "output": json.loads(task.output)}
        code = 0
    except Exception as exc:  # the outcome file carries any failure to the daemon
        outcome = {
            "state": "failed",
            "error": f"{exc.__class__.__name__}: {exc}"[:2000],
            "trace": traceback.format_exc()[-4000:],
        }
        code = 1
    atomicfile.write_json(outcome_path, outcome)
    return code


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
