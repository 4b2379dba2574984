"""A surrogate oracle for OFA-MobileNetV3 (about 2.2 x 10^19 subnets at resolution 224).

The measured ImageNet table (725 subnets) cannot be searched: any search would leave it at once.
As NAS-Bench-301 does for DARTS, a model fitted on the measured table stands in for the real
evaluation: a ridge regression on one-hot OFA features (kernel and expansion per active slot, so
padding never counts, plus each stage's depth), fitted on load and checked by 5-fold
cross-validation. It is additive over slots, so its optimum is exact (per-slot argmax per depth).
Everything searched against it measures search on the surrogate, not ImageNet accuracy.
Fit quality and the benchmark: docs/evaluation.md ("Surrogate benchmarks").
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from search_spaces.errors import ConfigError, EncodingError

from .base import Evaluator, space_of, to_arch
from .tables import TableEvaluator, file_sha256

RESOLUTION = 224
ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
CV_FOLDS = 5
CV_SEED = 0
METRIC = "top1"


def surrogate_space():
    """The OFA-MobileNetV3 space at the table's only resolution (224): 7371^5 subnets."""
    from search_spaces.ofa_mbv3 import OFAMobileNetV3Space

    return OFAMobileNetV3Space(resolutions=(RESOLUTION,))


class _Features:
    """One-hot design of an MBConv macro space: per slot its kernel and expansion one-hots (zero
    when the slot is padding), then each stage's depth one-hot."""

    def __init__(self, space):
        from search_spaces._mbconv import EXPAND_CHOICES, KERNEL_CHOICES

        fmt = space.format(space.sample(1, seed=0)[0])
        self.n_slots = len(fmt["ks"])
        self.kernels, self.expands = tuple(KERNEL_CHOICES), tuple(EXPAND_CHOICES)
        self.stage_depths = [tuple(st.depths) for st in space.spec.stages]
        self.stage_start = np.cumsum([0] + [max(d) for d in self.stage_depths])[:-1].tolist()
        self.per_slot = len(self.kernels) + len(self.expands)
        self.depth_offset = self.n_slots * self.per_slot
        self.depth_cols = [self.depth_offset + sum(len(d) for d in self.stage_depths[:s]) for s in range(len(self.stage_depths))]
        self.width = self.depth_offset + sum(len(d) for d in self.stage_depths)

    def row(self, fmt: dict) -> np.ndarray:
        x = np.zeros(self.width)
        for s, (start, depths) in enumerate(zip(self.stage_start, self.stage_depths)):
            d = int(fmt["d"][s]) if s < len(fmt["d"]) else depths[0]
            x[self.depth_cols[s] + depths.index(d)] = 1.0
            for j in range(d):
                i = start + j
                x[i * self.per_slot + self.kernels.index(int(fmt["ks"][i]))] = 1.0
                x[i * self.per_slot + len(self.kernels) + self.expands.index(int(fmt["e"][i]))] = 1.0
        return x


def _ridge_path(X: np.ndarray, y: np.ndarray, alphas: Sequence[float]) -> list[tuple[float, np.ndarray]]:
    """``(intercept, coefficients)`` of a ridge fit (centred, intercept unpenalised) for each
    alpha, from one eigendecomposition of the Gram matrix."""
    xm, ym = X.mean(0), y.mean()
    Xc = X - xm
    evals, V = np.linalg.eigh(Xc.T @ Xc)
    proj = V.T @ (Xc.T @ (y - ym))
    out = []
    for a in alphas:
        w = V @ (proj / (evals + a))
        out.append((float(ym - xm @ w), w))
    return out


def _folds(n: int, k: int, seed: int) -> list[np.ndarray]:
    return np.array_split(np.random.default_rng(seed).permutation(n), k)


def _pick_alpha(X, y, seed: int) -> float:
    """The alpha of ``ALPHAS`` with the lowest k-fold CV error on ``(X, y)``."""
    sq = np.zeros(len(ALPHAS))
    for f in _folds(len(y), CV_FOLDS, seed):
        tr = np.setdiff1d(np.arange(len(y)), f)
        for i, (b, w) in enumerate(_ridge_path(X[tr], y[tr], ALPHAS)):
            sq[i] += ((X[f] @ w + b - y[f]) ** 2).sum()
    return float(ALPHAS[int(np.argmin(sq))])


def cross_validate(X: np.ndarray, y: np.ndarray, k: int = CV_FOLDS, seed: int = CV_SEED) -> dict:
    """Nested k-fold figures of the ridge surrogate: the regularisation is chosen inside each
    training fold, so the held-out predictions never saw their own labels.

    Args:
        X: one-hot design.
        y: measured top-1.
        k: folds.
        seed: shuffling seed.

    Returns:
        ``spearman``, ``kendall``, ``rmse``, ``r2`` and ``mae`` over the pooled held-out predictions,
        the per-fold Spearman, and the table's standard deviation for scale.
    """
    from scipy.stats import kendalltau, spearmanr

    pred = np.empty_like(y)
    per_fold = []
    for i, f in enumerate(_folds(len(y), k, seed)):
        tr = np.setdiff1d(np.arange(len(y)), f)
        b, w = _ridge_path(X[tr], y[tr], [_pick_alpha(X[tr], y[tr], seed + 1 + i)])[0]
        pred[f] = X[f] @ w + b
        per_fold.append(float(spearmanr(pred[f], y[f])[0]))
    resid = pred - y
    return {"folds": k, "seed": seed, "n": int(len(y)), "spearman": float(spearmanr(pred, y)[0]), "kendall": float(kendalltau(pred, y)[0]),
            "rmse": float(np.sqrt((resid ** 2).mean())), "mae": float(np.abs(resid).mean()),
            "r2": float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()), "spearman_per_fold": per_fold, "table_std": float(y.std())}


class OFASurrogateEvaluator(Evaluator):
    """Predicted ImageNet top-1 of any OFA-MobileNetV3 w1.0 subnet at resolution 224, from a ridge
    surrogate fitted on a measured table when constructed (milliseconds; no model file).

    Args:
        path: the measured table (``ofa_mbv3_w10_top1.jsonl`` layout: ``ks``, ``e``, ``d``, ``r``,
            ``top1``), read as strictly as :class:`~evaluators.tables.TableEvaluator` reads it.
        alpha: ridge regularisation; default: chosen by 5-fold CV on the table among ``ALPHAS``.

    Attributes:
        cv: :func:`cross_validate` figures (nested 5-fold) of the surrogate on its table.
        alpha: the regularisation used.
        table_archs: the distinct measured subnets it was fitted on, in file order.

    Example:
        >>> ev = OFASurrogateEvaluator("ofa_mbv3_w10_top1.jsonl")  # doctest: +SKIP
        >>> ev.cv["spearman"], ev.optimum()[1]  # doctest: +SKIP
    """

    name = "ofa_mbv3_surrogate"
    version = "1"
    deterministic = True
    batch_size = 1024
    metric_units = {METRIC: "%"}

    def __init__(self, path: str | os.PathLike, alpha: float | None = None):
        from threadpoolctl import threadpool_limits

        # 135-column fits: a multi-threaded BLAS only adds thread start-up and contention
        with threadpool_limits(1):
            self._fit(path, alpha)

    def _fit(self, path, alpha) -> None:
        self.space = surrogate_space()
        table = TableEvaluator(self.space, path, metrics=[METRIC])
        self.path = table.path
        self._sha = file_sha256(self.path)
        self._feat = _Features(self.space)
        rows = table.items(self.space)
        X = np.stack([self._feat.row(self.space.format(a)) for a, _ in rows])
        y = np.array([m[METRIC] for _, m in rows], dtype=float)
        self.n_train = len(y)
        self.table_best = float(y.max())
        self.alpha = float(alpha) if alpha is not None else _pick_alpha(X, y, CV_SEED)
        if not self.alpha > 0:
            raise ConfigError(f"surrogate alpha must be positive, got {alpha!r}")
        self.intercept, self.coef = _ridge_path(X, y, [self.alpha])[0]
        self.cv = cross_validate(X, y)
        self.table_archs = [a for a, _ in rows]

    # ---- the contract ----------------------------------------------------------------------
    def settings(self) -> dict:
        return {"table_sha256": self._sha, "model": "ridge-onehot-v1", "alpha": self.alpha, "resolution": RESOLUTION}

    def metric_names(self) -> list[str]:
        return [METRIC]

    def predict(self, archs: Sequence) -> np.ndarray:
        """Predicted top-1 of ``archs`` (``Arch`` objects or OFA encodings).

        Raises:
            EncodingError: an architecture is not an OFA-MobileNetV3 subnet at resolution 224.
        """
        X = np.stack([self._feat.row(self.space.format(to_arch(self.space, a))) for a in archs]) if len(archs) else np.zeros((0, self._feat.width))
        return X @ self.coef + self.intercept

    def evaluate_one(self, space, arch, seed: int = 0) -> dict[str, float]:
        space = space_of(space)
        if space.name != self.space.name:
            raise ConfigError(f"the OFA surrogate predicts {self.space.name!r} subnets, not {space.name!r} ones")
        r = arch.global_dict.get("r")
        if r != RESOLUTION:
            raise EncodingError(f"the surrogate was fitted at resolution {RESOLUTION} only (the table's), not r={r}; "
                                "search the space returned by surrogate_space()")
        return {METRIC: float(self.predict([arch])[0])}

    def evaluate(self, space, archs: Sequence, seed: int = 0):
        space = space_of(space)
        parsed = [to_arch(space, a) for a in archs]
        ok = [i for i, a in enumerate(parsed) if space.name == self.space.name and a.global_dict.get("r") == RESOLUTION]
        preds = dict(zip(ok, self.predict([parsed[i] for i in ok]).tolist())) if ok else {}
        out = []
        for i, a in enumerate(parsed):
            if i in preds:
                out.append(self.make_record(space, a, seed, {METRIC: preds[i]}))
            else:
                out.extend(super().evaluate(space, [a], seed))  # the per-architecture path words the failure
        return out

    # ---- the benchmark's reference points ---------------------------------------------------
    def optimum(self):
        """The surrogate's best subnet and its predicted top-1. Exact: the model is a sum of
        per-slot and per-depth terms, so each stage takes, for each depth, the best kernel and
        expansion per active slot, and keeps the best depth."""
        f, w = self._feat, self.coef
        nk = len(f.kernels)
        units = []
        for s, (start, depths) in enumerate(zip(f.stage_start, f.stage_depths)):
            best = None
            for di, d in enumerate(depths):
                total, layers = w[f.depth_cols[s] + di], []
                for j in range(d):
                    base = (start + j) * f.per_slot
                    ki, ei = int(np.argmax(w[base:base + nk])), int(np.argmax(w[base + nk:base + f.per_slot]))
                    total += w[base + ki] + w[base + nk + ei]
                    layers.append((f.expands[ei], f.kernels[ki]))
                if best is None or total > best[0]:
                    best = (total, layers)
            units.append(best[1])
        arch = self.space.assemble([tuple(u) for u in units], {"r": RESOLUTION})
        return arch, float(self.predict([arch])[0])

    def describe(self) -> dict:
        d = super().describe()
        d.update(cv=self.cv, n_train=self.n_train, table_best=self.table_best)
        return d


__all__ = ["OFASurrogateEvaluator", "surrogate_space", "cross_validate", "RESOLUTION", "METRIC"]
