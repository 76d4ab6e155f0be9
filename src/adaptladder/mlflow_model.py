"""The MLflow pyfunc model of a saved rung ("models from code": no pickle in the logged model).

MLflow copies this file into the logged model and runs it on ``mlflow.pyfunc.load_model``;
the rung itself travels as the artifact ``model_dir`` (adaptladder's safe format: skops /
safetensors / JSON with content hashes) and is read with :func:`adaptladder.rungs.load_rung`.
Input: a DataFrame with a ``text`` column (else its first column), a list of strings or one
string. Output: the same frame as ``adaptladder predict``: ``label`` and ``proba_<label>``.
"""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.pyfunc import PythonModel


def _texts(model_input: Any) -> list[str]:
    import pandas as pd

    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series):
        return [str(x) for x in model_input.tolist()]
    if isinstance(model_input, pd.DataFrame):
        col = "text" if "text" in model_input.columns else model_input.columns[0]
        return [str(x) for x in model_input[col].tolist()]
    if isinstance(model_input, dict):
        value = model_input.get("texts", model_input.get("text", []))
        return [value] if isinstance(value, str) else [str(x) for x in value]
    return [str(x) for x in model_input]


class AdaptladderModel(PythonModel):
    def load_context(self, context: Any) -> None:
        from adaptladder.rungs import load_rung

        self.rung = load_rung(context.artifacts["model_dir"])

    # no type hints on predict: MLflow would read them as a (list-of-instances) schema; the signature is logged
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        from adaptladder.winner import _prediction_frame

        return _prediction_frame(self.rung, _texts(model_input))


mlflow.models.set_model(AdaptladderModel())
