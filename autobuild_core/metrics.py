"""Rank metrics used everywhere results are reported (NaN-safe, constant-safe)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def spearman(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.spearmanr(a, b).statistic)


def kendall(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return float("nan")
    return float(stats.kendalltau(a, b).statistic)


def rank_report(pred, hop_norms, y) -> dict:
    """Prediction and per-hop embedding-norm rank correlations with the target."""
    hop_norms = np.asarray(hop_norms)
    return {
        "pred_spearman": spearman(pred, y),
        "pred_kendall": kendall(pred, y),
        "hop_spearman": [spearman(hop_norms[:, m], y) for m in range(hop_norms.shape[1])],
        "hop_kendall": [kendall(hop_norms[:, m], y) for m in range(hop_norms.shape[1])],
    }
