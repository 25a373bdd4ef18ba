"""Tuning: N trials over a search space that matters (optimizer and lr0 by default), asked from Optuna's TPE
as the pipeline asks them, each trained and evaluated on the same data by the pipeline's own steps.

Prints each trial's parameters, validation mAP50-95 and seconds, how many distinct models the trials
trained (weights digests), the spread of mAP, the best against the median, and the wall time. A search
space that reached nothing (Ultralytics' ``optimizer=auto`` ignoring lr0) shows as one distinct model.

    python benchmarks/tuning.py [--trials 8] [--epochs 30] [--images 96] [--imgsz 128] [--device auto]
    python benchmarks/tuning.py --data tests/data/coco-mini      # a YOLO folder with data.yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit

from pipelines import synthetic
from pipelines.steps import training, tuning

SPACE = {"optimizer": {"choices": ["SGD", "AdamW"]}, "lr0": {"low": 1e-4, "high": 1e-1, "scale": "log"}}


def dataset(root: Path, *, images: int, data: Path | None) -> Path:
    if data is not None:
        target = root / "data"
        shutil.copytree(data, target)
        config = (target / "data.yaml").read_text()
        (target / "data.yaml").write_text(
            f"path: {target}\n" + "\n".join(line for line in config.splitlines() if not line.startswith("path:"))
        )
        return target / "data.yaml"
    target = root / "data"
    synthetic.generate(target, count=images, seed=11, split="train")
    synthetic.generate(target, count=max(8, images // 3), seed=12, split="val")
    names = json.dumps(list(synthetic.CLASSES))
    (target / "data.yaml").write_text(f"path: {target}\ntrain: images/train\nval: images/val\nnames: {names}\n")
    return target / "data.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)  # at 5, no trial learns anything from scratch
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (the first GPU if torch sees one), cpu, 0, ...")
    parser.add_argument("--base", default="yolov8n.yaml", help="a model config (from scratch) or weights file")
    parser.add_argument("--data", type=Path, default=None, help="a YOLO dataset folder with data.yaml")
    args = parser.parse_args()
    stdout, sys.stdout = sys.stdout, sys.stderr  # Ultralytics logs to stdout: only the figures go there
    device = training.device_for(1) if args.device == "auto" else args.device
    asked = tuning.suggest(SPACE, trials=args.trials, seed=tuning.run_seed(args.seed, "benchmark"))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="retrain-bench-") as folder:
        root = Path(folder)
        data_yaml = dataset(root, images=args.images, data=args.data)
        for number, params in enumerate(asked):
            began = time.perf_counter()
            weights = training.train(
                data_yaml=data_yaml,
                base=args.base,
                epochs=args.epochs,
                imgsz=args.imgsz,
                batch=args.batch,
                hyperparameters=params,
                device=device,
                out_dir=root / f"trial-{number}",
            )
            found = training.evaluate(
                weights=weights, data_yaml=data_yaml, imgsz=args.imgsz, device=device, out_dir=root / f"val-{number}"
            )
            results.append(
                {
                    "trial": number,
                    "params": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in params.items()},
                    "map50_95": round(found.map50_95, 4),
                    "map50": round(found.map50, 4),
                    "seconds": round(time.perf_counter() - began, 1),
                    "weights": training.weights_digest(weights)[:16],
                }
            )
    sys.stdout = stdout
    values = [r["map50_95"] for r in results]
    best = max(results, key=lambda r: r["map50_95"])
    median = statistics.median(values)
    emit(
        "tuning",
        {
            "device": device,
            "data": str(args.data) if args.data else f"synthetic, {args.images} train images",
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "space": SPACE,
            "trials": results,
            "distinct_models": len({r["weights"] for r in results}),
            "map50_95_min": min(values),
            "map50_95_max": max(values),
            "map50_95_spread": round(max(values) - min(values), 4),
            "map50_95_median": round(median, 4),
            "best_trial": best["trial"],
            "best_over_median": round(best["map50_95"] - median, 4),
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )


if __name__ == "__main__":
    main()
