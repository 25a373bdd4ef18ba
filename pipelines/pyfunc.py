"""The MLflow pyfunc flavour of a trained detector, so ``models:/NAME@champion`` serves predictions anywhere.

Logged as a *model from code*: MLflow copies this file into the model and runs it when the model is loaded,
so it must stay self-contained (no import of this project): a Python environment with MLflow, Ultralytics,
torch, Pillow and pandas loads and serves the champion.

Input: a DataFrame (or a dict of lists) with an ``image`` column; each cell is an encoded image (JPEG, PNG,
... bytes; base64 in JSON when served over REST, as MLflow does for binary columns) or an image array
(height x width x 3 RGB, or height x width grey, ``uint8``). Params: ``conf`` (minimum confidence, 0.25),
``iou`` (NMS IoU threshold, 0.7), ``device`` (``auto``: the first GPU if there is one, else the CPU; or
``cpu``, ``0``, ``cuda:1``...), ``max_det`` (300).

Output: one row per detection: the input row it was found in (``image``, from 0), class id and name,
confidence and the box corners in pixels of that image.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel  # type: ignore[attr-defined]  # re-exported lazily by mlflow

COLUMNS = ["image", "class_id", "class_name", "confidence", "x1", "y1", "x2", "y2"]
DEFAULT_PARAMS: dict[str, Any] = {"conf": 0.25, "iou": 0.7, "device": "auto", "max_det": 300}


def _picture(value: Any) -> Any:
    """A PIL image (RGB) from encoded bytes or an array; Ultralytics reads PIL images as RGB (arrays it would
    take for OpenCV's BGR)."""
    import io

    import numpy as np
    from PIL import Image

    if isinstance(value, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(value))).convert("RGB")
    array = np.asarray(value)
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be height x width [x 1, 3 or 4 channels], got shape {array.shape}")
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


class YoloDetector(PythonModel):
    """Loads the ``weights`` artifact with Ultralytics and runs it on the given images."""

    def load_context(self, context: Any) -> None:
        # Never download anything at serving time (fonts, requirement checks), and keep Ultralytics' settings
        # file out of the serving user's home.
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(tempfile.gettempdir(), "yolo-pyfunc-config"))
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"])

    # No type hints on the inputs: MLflow 3 would infer a signature from them; the logged signature says it.
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        import pandas as pd

        given = {**DEFAULT_PARAMS, **(params or {})}
        device = None if str(given["device"]) in ("", "auto") else str(given["device"])
        images = list(model_input["image"])
        rows = []
        for index, value in enumerate(images):
            results = self.model.predict(
                _picture(value),
                conf=float(given["conf"]),
                iou=float(given["iou"]),
                max_det=int(given["max_det"]),
                device=device,
                verbose=False,
            )
            for result in results:
                names = result.names
                for box in result.boxes:
                    x1, y1, x2, y2 = (float(v) for v in box.xyxy[0].tolist())
                    cls = int(box.cls[0])
                    rows.append([index, cls, str(names.get(cls, cls)), float(box.conf[0]), x1, y1, x2, y2])
        return pd.DataFrame(rows, columns=COLUMNS)


def signature() -> Any:
    """The model's signature: the ``image`` column in, the detections out, and the params with defaults."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    outputs = Schema(
        [
            ColSpec(DataType.long, "image"),
            ColSpec(DataType.long, "class_id"),
            ColSpec(DataType.string, "class_name"),
            *(ColSpec(DataType.double, name) for name in ("confidence", "x1", "y1", "x2", "y2")),
        ]
    )
    params = ParamSchema(
        [
            ParamSpec("conf", DataType.double, DEFAULT_PARAMS["conf"]),
            ParamSpec("iou", DataType.double, DEFAULT_PARAMS["iou"]),
            ParamSpec("device", DataType.string, DEFAULT_PARAMS["device"]),
            ParamSpec("max_det", DataType.long, DEFAULT_PARAMS["max_det"]),
        ]
    )
    return ModelSignature(inputs=Schema([ColSpec(DataType.binary, "image")]), outputs=outputs, params=params)


mlflow.models.set_model(YoloDetector())
