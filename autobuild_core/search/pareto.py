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


def crowding_distance(points) -> np.ndarray:
    """NSGA-II's crowding distance of each point of one front (any directions: it reads only the
    spacing): per objective, the gap between a point's two neighbours over the front's range,
    summed; the extremes of every objective get ``inf``. Larger means a sparser part of the front.
    """
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2:
        raise ValueError("crowding_distance needs a 2-D array of points (rows) by objectives (columns)")
    n = len(pts)
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(pts.shape[1]):
        order = np.argsort(pts[:, j], kind="stable")
        span = pts[order[-1], j] - pts[order[0], j]
        dist[order[0]] = dist[order[-1]] = np.inf
        if span > 0:
            dist[order[1:-1]] += (pts[order[2:], j] - pts[order[:-2], j]) / span
    return dist


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


def hypervolume_improvement_2d(front, candidates, reference: Sequence[float]) -> np.ndarray:
    """For each candidate, the area it adds to the hypervolume of ``front`` (both objectives
    maximised, bounded below by ``reference``), vectorised over the candidates.

    The region ``front`` dominates is a staircase; a candidate (a, b) adds, over each step of the
    staircase left of a, the width of the step times how far b rises above it.

    Example:
        >>> hypervolume_improvement_2d([[2.0, 1.0]], [[1.0, 2.0], [1.0, 0.5]], [0.0, 0.0]).tolist()
        [1.0, 0.0]
    """
    ref = np.asarray(reference, dtype=float)
    cand = np.asarray(candidates, dtype=float).reshape(-1, 2)
    pts = np.asarray(front, dtype=float).reshape(-1, 2)
    if len(pts):
        pts = pts[non_dominated(pts, ("maximize", "maximize"))]
        pts = np.unique(pts, axis=0)  # sorted by the first objective, ascending; the second then descends
    left = np.maximum(np.concatenate([[ref[0]], pts[:, 0]]), ref[0])
    right = np.concatenate([pts[:, 0], [np.inf]])
    height = np.maximum(np.concatenate([pts[:, 1], [ref[1]]]), ref[1])
    width = np.clip(np.minimum(cand[:, :1], right[None, :]) - left[None, :], 0.0, None)
    rise = np.clip(cand[:, 1:] - height[None, :], 0.0, None)
    return (width * rise).sum(1)
