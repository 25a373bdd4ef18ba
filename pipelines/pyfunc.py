"""The MLflow pyfunc flavour of a trained detector, so ``models:/NAME@champion`` can serve predictions.

Input: a pandas DataFrame with a ``path`` column (image files). Output: one row per detection with the
image's path, class id, class name, confidence and the box corners in pixels.
"""

from __future__ import annotations

from typing import Any

from mlflow.pyfunc import PythonModel  # type: ignore[attr-defined]  # re-exported lazily by mlflow


class YoloDetector(PythonModel):
    """Loads the ``weights`` artifact with Ultralytics and runs it on the given images."""

    def load_context(self, context: Any) -> None:
        from pipelines.steps import offline

        offline.prepare_offline()
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"])

    # No type hints on the inputs: MLflow 3 would infer a signature from them (and warn that Any validates
    # nothing); the DataFrame's columns are documented above instead.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        confidence = float((params or {}).get("conf", 0.25))
        rows = []
        for path in list(model_input["path"]):
            for result in self.model.predict(str(path), conf=confidence, verbose=False, device="cpu"):
                names = result.names
                for box in result.boxes:
                    x1, y1, x2, y2 = (float(v) for v in box.xyxy[0].tolist())
                    cls = int(box.cls[0])
                    rows.append(
                        {
                            "path": str(path),
                            "class_id": cls,
                            "class_name": names.get(cls, str(cls)),
                            "confidence": float(box.conf[0]),
                            "x1": x1,
                            "y1": y1,
                            "x2": x2,
                            "y2": y2,
                        }
                    )
        return pd.DataFrame(rows, columns=["path", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"])
