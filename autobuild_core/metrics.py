"""Rank metrics used everywhere results are reported (NaN-safe, constant-safe)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(a, b) -> float:
    """Spearman rank correlation; NaN when fewer than two values or either side is constant.

    Args:
        a: first sequence of numbers.
        b: second sequence, same length.

    Example:
        >>> spearman([1, 2, 3], [10, 30, 20])
        0.5
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall(a, b) -> float:
    """Kendall's tau; NaN when fewer than two values or either side is constant.

    Args:
        a: first sequence of numbers.
        b: second sequence, same length.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def rank_report(pred, hop_norms, y) -> dict:
    """Prediction and per-hop embedding-norm rank correlations with the target.

    Args:
        pred: predicted targets, one per architecture.
        hop_norms: ``[n, M+1]`` graph-embedding L1 norms per hop.
        y: true targets.

    Returns:
        ``{"pred_spearman", "pred_kendall", "hop_spearman": [...], "hop_kendall": [...]}``.
    """
    hop_norms = np.asarray(hop_norms)
    return {
        "pred_spearman": spearman(pred, y),
        "pred_kendall": kendall(pred, y),
        "hop_spearman": [spearman(hop_norms[:, m], y) for m in range(hop_norms.shape[1])],
        "hop_kendall": [kendall(hop_norms[:, m], y) for m in range(hop_norms.shape[1])],
    }
