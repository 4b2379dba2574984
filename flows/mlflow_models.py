"""The ranker and the winners as MLflow "models from code" (pyfunc, no pickles) with signatures.

``save_ranker_model`` and ``save_winner_model`` write an MLflow model directory whose code is
``flows/model_code/*.py`` and whose artifacts are the ranker's safetensors + JSON or the winner's
JSON; the recorder logs it to the run and registers it (``autobuild-ranker-<space>``,
``autobuild-winner-<space>``) with aliases. The requirements are pinned to the running versions
instead of inferred (inference loads the model in a subprocess).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from importlib import metadata
from pathlib import Path
from typing import Sequence

MODEL_CODE = Path(__file__).resolve().parent / "model_code"
#: the local packages the model code imports, copied into each model (``code_paths``)
CODE_PACKAGES = ("autobuild_core", "search_spaces")
_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "safetensors", "torch_geometric", "pydantic")


def ranker_model_name(space: str) -> str:
    return f"autobuild-ranker-{space}"


def winner_model_name(space: str) -> str:
    return f"autobuild-winner-{space}"


def pip_requirements() -> list[str]:
    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return out


def _code_paths() -> list[str]:
    root = MODEL_CODE.parents[1]
    return [str(root / p) for p in CODE_PACKAGES if (root / p).is_dir()]


@contextlib.contextmanager
def _quiet():
    """Saving validates the input example against the signature: keep its info line, its advice to
    add type hints (the signature is given explicitly) and its progress bars out of the run's log."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    log = logging.getLogger("mlflow.pyfunc")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*type hints.*")
            yield
    finally:
        log.setLevel(level)


def arch_string(arch) -> str:
    """A native encoding as the string the models take (JSON for dicts and lists)."""
    return arch if isinstance(arch, str) else json.dumps(arch, default=str)


def save_ranker_model(path: Path, ranker_dir: Path, space, target: str, direction: str, example_archs: Sequence) -> Path:
    """Write the ranker pyfunc to ``path`` (must not exist); ``example_archs`` (native encodings)
    give the input example and the signature."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from autobuild_core.train import TrainedRanker

    path = Path(path)
    cfg_file = path.parent / f"{path.name}-config.json"
    cfg_file.write_text(json.dumps({"space": space.name, "target": target, "direction": direction}), encoding="utf-8")
    example = [arch_string(a) for a in list(example_archs)[:5]]
    sign = 1.0 if direction == "maximize" else -1.0
    preds = sign * TrainedRanker.load(ranker_dir).predict([space.parse(a) for a in list(example_archs)[:5]])
    with _quiet():
        mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE / "ranker.py"),
                                 artifacts={"ranker": str(ranker_dir), "config": str(cfg_file)},
                                 signature=infer_signature(example, preds), input_example=example,
                                 code_paths=_code_paths(), pip_requirements=pip_requirements())
    return path


def save_winner_model(path: Path, winner: dict, space_name: str) -> Path:
    """Write one winner's pyfunc to ``path`` (must not exist): its architecture and recorded metrics."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    path = Path(path)
    wfile = path.parent / f"{path.name}-winner.json"
    body = {"arch": winner["arch"], "space": space_name, "rank": winner["rank"], "metrics": winner.get("metrics") or {},
            "search_metrics": winner.get("search_metrics") or {}, "target": winner.get("target")}
    wfile.write_text(json.dumps(body, default=str), encoding="utf-8")
    names = sorted(body["metrics"]) or ["target"]
    example = list(names)
    out = pd.DataFrame({"arch": [arch_string(winner["arch"])] * len(names), "metric": names,
                        "value": [float(body["metrics"].get(n, float("nan"))) for n in names]})
    with _quiet():
        mlflow.pyfunc.save_model(str(path), python_model=str(MODEL_CODE / "winner.py"), artifacts={"winner": str(wfile)},
                                 signature=infer_signature(example, out), input_example=example,
                                 code_paths=_code_paths(), pip_requirements=pip_requirements())
    return path
