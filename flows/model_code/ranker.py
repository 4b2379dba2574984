"""MLflow "model from code": the AutoBuild ranker as a pyfunc.

``predict`` takes architecture strings (a DataFrame column ``arch``, or a list) in the space's
native encoding and returns the predicted target values. The weights load from the safetensors
and JSON files logged beside this file (artifacts ``ranker`` and ``config``); nothing is unpickled.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


def parse_archs(space, model_input) -> list:
    """Architecture strings (JSON for dict/list encodings) -> ``Arch`` objects of ``space``."""
    if isinstance(model_input, pd.DataFrame):
        col = "arch" if "arch" in model_input.columns else model_input.columns[0]
        items = model_input[col].tolist()
    elif isinstance(model_input, (pd.Series, np.ndarray)):
        items = list(np.asarray(model_input).ravel())
    else:
        items = list(model_input)
    out = []
    for s in items:
        text = str(s).strip()
        out.append(space.parse(json.loads(text) if text[:1] in "{[" else text))
    return out


class RankerModel(PythonModel):
    def load_context(self, context):
        from autobuild_core.train import TrainedRanker

        self.config = json.loads(open(context.artifacts["config"], encoding="utf-8").read())
        self.ranker = TrainedRanker.load(context.artifacts["ranker"])
        self.sign = 1.0 if self.config["direction"] == "maximize" else -1.0

    def predict(self, context, model_input: pd.DataFrame, params=None):  # a pandas hint: no warning, no extra validation
        archs = parse_archs(self.ranker.space, model_input)
        return self.sign * np.asarray(self.ranker.predict(archs), dtype=float)


mlflow.models.set_model(RankerModel())
