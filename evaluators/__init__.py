"""Evaluation: the evaluator contract, table and training evaluators, and the evaluation store.

Table evaluators (which import pandas) and the training evaluator (which imports torch training
code) are loaded only when used: ``get_evaluator("train")`` or attribute access such as
``evaluators.TableEvaluator``.
"""

from __future__ import annotations

import importlib

from .base import (
    STATUS_FAILED,
    STATUS_OK,
    EvalRecord,
    EvaluationError,
    Evaluator,
    TransientEvaluationError,
    get_evaluator,
    list_evaluators,
    partial_table_archs,
    register_evaluator,
)
from .noise import NoiseReport, measure_noise, noise_from_records, noise_report
from .store import EvaluationOutcome, EvaluationStore, evaluate_archs

_LAZY = {
    "TableEvaluator": "tables",
    "NB201TableEvaluator": "tables",
    "NASBenchGraphEvaluator": "tables",
    "NATSBenchEvaluator": "tables",
    "TransNASTableEvaluator": "transnas",
    "import_authors_cache": "tables",
    "TrainingEvaluator": "training",
    "OFASurrogateEvaluator": "surrogate",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STATUS_OK", "STATUS_FAILED", "EvalRecord", "Evaluator", "EvaluationError", "TransientEvaluationError",
    "get_evaluator", "list_evaluators", "partial_table_archs", "register_evaluator", "EvaluationStore", "EvaluationOutcome",
    "evaluate_archs", "NoiseReport", "noise_report", "noise_from_records", "measure_noise", *_LAZY,
]
