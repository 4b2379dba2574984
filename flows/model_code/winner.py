"""MLflow "model from code": one AutoBuild winner as a pyfunc.

``predict`` takes metric names (a DataFrame column ``metric``, or a list) and returns the winner's
architecture and those recorded metrics (NaN for a metric it lacks). ``load_module()``
(on ``unwrap_python_model()``) builds the architecture as a runnable ``torch.nn.Module`` with the
space's default input shape or the one given; the evaluators keep no trained weights, so its
weights are freshly initialised. Everything loads from the JSON artifact ``winner``.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class WinnerModel(PythonModel):
    def load_context(self, context):
        self.winner = json.loads(open(context.artifacts["winner"], encoding="utf-8").read())

    @property
    def arch(self) -> str:
        a = self.winner["arch"]
        return a if isinstance(a, str) else json.dumps(a)

    def predict(self, context, model_input: pd.DataFrame, params=None):  # a pandas hint: no warning, no extra validation
        if isinstance(model_input, pd.DataFrame):
            names = model_input[model_input.columns[0]].tolist() if len(model_input.columns) else []
        else:
            names = list(np.asarray(model_input).ravel()) if model_input is not None else []
        metrics = self.winner.get("metrics") or {}
        names = [str(n) for n in names] or sorted(metrics)
        return pd.DataFrame({"arch": [self.arch] * len(names), "metric": names,
                             "value": [float(metrics[n]) if metrics.get(n) is not None else float("nan") for n in names]})

    def load_module(self, num_classes: int | None = None, in_chans: int | None = None, resolution: int | None = None):
        """The winner's architecture as a ``torch.nn.Module`` (untrained weights)."""
        from search_spaces import get_space

        space = get_space(self.winner["space"])
        shape = {**space.default_input, **{k: v for k, v in (self.winner.get("input") or {}).items() if v is not None}}
        given = {"num_classes": num_classes, "in_chans": in_chans, "resolution": resolution}
        shape.update({k: v for k, v in given.items() if v is not None})
        return space.build_model(space.parse(self.winner["arch"]), **shape)


mlflow.models.set_model(WinnerModel())
