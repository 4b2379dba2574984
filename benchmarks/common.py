"""Shared plumbing of the ``autobuild bench`` commands: labelled data, JSON output, summaries."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from search_spaces.errors import ConfigError


def labelled_table(space_name: str, table: str | None, dataset: str | None = None):
    """(space, [Arch], [metrics dict]) for every distinct architecture of a labelled table.

    ``table`` is a CSV/JSONL/Parquet path in the space's encoding (for ``transnas_micro``, NASLib's
    ``zc_transbench101_micro.json``); for ``nasbench_graph`` it may be omitted (the benchmark ships
    inside the PyPI package; ``dataset`` picks one, default cora).
    """
    from search_spaces import get_space

    space = get_space(space_name)
    if space_name == "nasbench_graph" and (not table or str(table).startswith("nasbench_graph:")):
        from search_spaces.nasbench_graph import load_bench

        name = str(table).split(":", 1)[1] if table else (dataset or "cora")
        bench = load_bench(name)
        archs = [space.parse(int(k)) for k in bench]
        return space, archs, [dict(m) for m in bench.values()]
    if not table:
        raise ConfigError(f"--table PATH is required for space {space_name!r} (a CSV/JSONL/Parquet file of architectures and metrics).")
    if space_name == "transnas_micro":  # NASLib's JSON, not a CSV/JSONL/Parquet table
        from evaluators.transnas import TransNASTableEvaluator

        ev = TransNASTableEvaluator(table)
    else:
        from evaluators.tables import TableEvaluator

        ev = TableEvaluator(space, table, match="exact")
    items = ev.items()
    return space, [a for a, _ in items], [m for _, m in items]


def targets(metrics: Sequence[dict], target: str | None) -> tuple[np.ndarray, str]:
    from autobuild_core.target import compile_target, default_target

    names = sorted(metrics[0]) if metrics else []
    text = target or default_target(names)
    t = compile_target(text).check_names(names)
    return np.array([t(m) for m in metrics], dtype=float), text


def mean_std(xs) -> tuple[float, float]:
    xs = np.asarray(xs, dtype=float)
    return float(np.nanmean(xs)), float(np.nanstd(xs))


def write_json(path: str | None, payload: dict) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_clean(payload), indent=1))
    print(f"wrote {p}")


def _clean(x):
    """JSON without NaN (written as null) and with numpy scalars as Python numbers."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
