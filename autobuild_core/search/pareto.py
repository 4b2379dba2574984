"""Pareto fronts and 2-D hypervolume.

Multi-objective results are compared by the hypervolume their front dominates relative to a
reference point; dividing by the hypervolume of the true front (from a full benchmark table)
gives a ratio in [0, 1] that is comparable across budgets and devices. Objectives are mixed
("maximize" accuracy, "minimize" latency), so everything is first mapped to minimisation.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def _signs(directions: Sequence[str]) -> np.ndarray:
    bad = [d for d in directions if d not in ("maximize", "minimize")]
    if bad:
        raise ValueError(f"directions must be 'maximize' or 'minimize', got {bad}")
    return np.array([-1.0 if d == "maximize" else 1.0 for d in directions])


def to_minimization(points, directions: Sequence[str]) -> np.ndarray:
    pts = np.asarray(points, dtype=float).reshape(-1, len(directions))
    return pts * _signs(directions)


def non_dominated(points, directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (ties: every copy is kept).

    Sort-and-sweep would be faster for two objectives, but fronts here come from at most a few
    thousand evaluations and the pairwise test works for any number of objectives.
    """
    pts = to_minimization(points, directions)
    n = len(pts)
    if n == 0:
        return []
    keep = []
    for i in range(n):
        le = np.all(pts <= pts[i], axis=1)
        lt = np.any(pts < pts[i], axis=1)
        if not np.any(le & lt):
            keep.append(i)
    return keep


def hypervolume_2d(points, reference: Sequence[float], directions: Sequence[str] = ("maximize", "minimize")) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (in the objectives' own units).

    Points that do not strictly improve on the reference in both objectives add nothing.
    """
    if len(directions) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives")
    pts = to_minimization(points, directions)
    ref = to_minimization([reference], directions)[0]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    order = np.lexsort((pts[:, 1], pts[:, 0]))  # by first objective, ties by the second
    area, best_y = 0.0, ref[1]
    for x, y in pts[order]:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)
