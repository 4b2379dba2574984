"""A surrogate oracle for OFA-MobileNetV3 (about 2.2 x 10^19 subnets at resolution 224).

The measured ImageNet table (725 subnets) cannot be searched: any search would leave it at once.
As NAS-Bench-301 does for DARTS, a model fitted on the measured table stands in for the real
evaluation, fitted on load and checked by 5-fold cross-validation. Two models: ``ridge`` on
one-hot OFA features (kernel and expansion per active slot, so padding never counts, plus each
stage's depth) is additive over slots, so its optimum is exact (per-slot argmax per depth) but it
has exactly the structure per-unit scoring assumes; ``gbt``, gradient-boosted trees on the same
choices as numbers, has interactions between layers and units, so it is the harder test, and its
reference optimum is the best of a local search (a bound, not exact).
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
MODELS = ("ridge", "gbt")
# gradient-boosted trees: fixed settings (not tuned per fit), small leaves for 725 subnets
GBT_PARAMS = dict(max_iter=300, learning_rate=0.05, max_leaf_nodes=8, min_samples_leaf=8, l2_regularization=1.0)


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

    def numeric(self, fmt: dict) -> np.ndarray:
        """Per stage its depth, then per slot its kernel and expansion as numbers (0, 0 when the
        slot is padding): the design of the tree model, which splits on order."""
        x = []
        for s, (start, depths) in enumerate(zip(self.stage_start, self.stage_depths)):
            d = int(fmt["d"][s]) if s < len(fmt["d"]) else depths[0]
            x.append(d)
            for j in range(max(depths)):
                x += [int(fmt["ks"][start + j]), int(fmt["e"][start + j])] if j < d else [0, 0]
        return np.asarray(x, dtype=float)

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


def _fit_ridge(X: np.ndarray, y: np.ndarray, seed: int):
    """A ridge fit whose regularisation is chosen by CV on ``(X, y)``; returns ``predict(X)``."""
    b, w = _ridge_path(X, y, [_pick_alpha(X, y, seed)])[0]
    return lambda Z: Z @ w + b


def _fit_gbt(X: np.ndarray, y: np.ndarray):
    """Gradient-boosted trees (``GBT_PARAMS``, deterministic); returns the fitted regressor."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(random_state=0, early_stopping=False, **GBT_PARAMS).fit(X, y)


def cross_validate(X: np.ndarray, y: np.ndarray, k: int = CV_FOLDS, seed: int = CV_SEED, model: str = "ridge") -> dict:
    """Nested k-fold figures of a surrogate model: the ridge's regularisation is chosen inside
    each training fold, so the held-out predictions never saw their own labels.

    Args:
        X: the model's design (one-hot for ``ridge``, numeric for ``gbt``).
        y: measured top-1.
        k: folds.
        seed: shuffling seed.
        model: ``ridge`` or ``gbt``.

    Returns:
        ``spearman``, ``kendall``, ``rmse``, ``r2`` and ``mae`` over the pooled held-out predictions,
        the per-fold Spearman, and the table's standard deviation for scale.
    """
    from scipy.stats import kendalltau, spearmanr

    pred = np.empty_like(y)
    per_fold = []
    for i, f in enumerate(_folds(len(y), k, seed)):
        tr = np.setdiff1d(np.arange(len(y)), f)
        pred[f] = _fit_ridge(X[tr], y[tr], seed + 1 + i)(X[f]) if model == "ridge" else _fit_gbt(X[tr], y[tr]).predict(X[f])
        per_fold.append(float(spearmanr(pred[f], y[f])[0]))
    resid = pred - y
    return {"folds": k, "seed": seed, "n": int(len(y)), "spearman": float(spearmanr(pred, y)[0]), "kendall": float(kendalltau(pred, y)[0]),
            "rmse": float(np.sqrt((resid ** 2).mean())), "mae": float(np.abs(resid).mean()),
            "r2": float(1 - (resid ** 2).sum() / ((y - y.mean()) ** 2).sum()), "spearman_per_fold": per_fold, "table_std": float(y.std())}


def _additive_best_units(f: _Features, w: np.ndarray) -> list:
    """Per stage, the layers that maximise an additive model with one-hot coefficients ``w``: for
    each depth the best kernel and expansion per active slot, then the best depth."""
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
        units.append(tuple(best[1]))
    return units


class OFASurrogateEvaluator(Evaluator):
    """Predicted ImageNet top-1 of any OFA-MobileNetV3 w1.0 subnet at resolution 224, from a
    surrogate fitted on a measured table when constructed (seconds; no model file).

    Args:
        path: the measured table (``ofa_mbv3_w10_top1.jsonl`` layout: ``ks``, ``e``, ``d``, ``r``,
            ``top1``), read as strictly as :class:`~evaluators.tables.TableEvaluator` reads it.
        alpha: ridge regularisation; default: chosen by 5-fold CV on the table among ``ALPHAS``.
        model: ``ridge`` (additive, exact optimum; the default) or ``gbt`` (gradient-boosted trees,
            with interactions between layers; its reference optimum is a local-search bound).

    Attributes:
        cv: :func:`cross_validate` figures (nested 5-fold) of the surrogate on its table.
        alpha: the ridge regularisation (None for ``gbt``).
        table_archs: the distinct measured subnets it was fitted on, in file order.

    Example:
        >>> ev = OFASurrogateEvaluator("ofa_mbv3_w10_top1.jsonl", model="gbt")  # doctest: +SKIP
        >>> ev.cv["spearman"], ev.optimum()[1]  # doctest: +SKIP
    """

    name = "ofa_mbv3_surrogate"
    version = "1"
    deterministic = True
    batch_size = 1024
    metric_units = {METRIC: "%"}

    def __init__(self, path: str | os.PathLike, alpha: float | None = None, model: str = "ridge"):
        from threadpoolctl import threadpool_limits

        if model not in MODELS:
            raise ConfigError(f"unknown surrogate model {model!r}; choose one of {', '.join(MODELS)}.")
        if model != "ridge" and alpha is not None:
            raise ConfigError(f"alpha is the ridge's regularisation; the {model!r} surrogate takes none (drop alpha).")
        self.model = model
        self._optimum = None
        # small fits: a multi-threaded BLAS or OpenMP pool only adds thread start-up and contention
        with threadpool_limits(1):
            self._fit(path, alpha)

    def _fit(self, path, alpha) -> None:
        self.space = surrogate_space()
        table = TableEvaluator(self.space, path, metrics=[METRIC])
        self.path = table.path
        self._sha = file_sha256(self.path)
        self._feat = _Features(self.space)
        rows = table.items(self.space)
        fmts = [self.space.format(a) for a, _ in rows]
        X = np.stack([self._feat.row(f) for f in fmts])
        y = np.array([m[METRIC] for _, m in rows], dtype=float)
        self._table_y = y
        self.n_train = len(y)
        self.table_best = float(y.max())
        self.table_archs = [a for a, _ in rows]
        self.alpha = None
        if self.model == "gbt":
            Xn = np.stack([self._feat.numeric(f) for f in fmts])
            self._table_designs = (X, Xn)  # the local search for the optimum starts from both
            self._gbt = _fit_gbt(Xn, y)
            self.cv = cross_validate(Xn, y, model="gbt")
            return
        self.alpha = float(alpha) if alpha is not None else _pick_alpha(X, y, CV_SEED)
        if not self.alpha > 0:
            raise ConfigError(f"surrogate alpha must be positive, got {alpha!r}")
        self.intercept, self.coef = _ridge_path(X, y, [self.alpha])[0]
        self.cv = cross_validate(X, y)

    # ---- the contract ----------------------------------------------------------------------
    def settings(self) -> dict:
        if self.model == "gbt":
            return {"table_sha256": self._sha, "model": "gbt-numeric-v1", "params": dict(GBT_PARAMS), "resolution": RESOLUTION}
        return {"table_sha256": self._sha, "model": "ridge-onehot-v1", "alpha": self.alpha, "resolution": RESOLUTION}

    def metric_names(self) -> list[str]:
        return [METRIC]

    def predict(self, archs: Sequence) -> np.ndarray:
        """Predicted top-1 of ``archs`` (``Arch`` objects or OFA encodings).

        Raises:
            EncodingError: an architecture is not an OFA-MobileNetV3 subnet at resolution 224.
        """
        fmts = [self.space.format(to_arch(self.space, a)) for a in archs]
        if self.model == "gbt":
            return self._predict_numeric(np.stack([self._feat.numeric(f) for f in fmts]) if fmts else np.zeros((0, self._n_numeric)))
        X = np.stack([self._feat.row(f) for f in fmts]) if fmts else np.zeros((0, self._feat.width))
        return X @ self.coef + self.intercept

    @property
    def _n_numeric(self) -> int:
        return sum(1 + 2 * max(d) for d in self._feat.stage_depths)

    def _predict_numeric(self, Xn: np.ndarray) -> np.ndarray:
        from threadpoolctl import threadpool_limits

        if not len(Xn):
            return np.zeros(0)
        with threadpool_limits(1):  # per-row predictions: threads change nothing but the start-up cost
            return self._gbt.predict(Xn)

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
        """The surrogate's best subnet and its predicted top-1. ``ridge``: exact, since the model is
        a sum of per-slot and per-depth terms (each stage takes, for each depth, the best kernel and
        expansion per active slot, and keeps the best depth). ``gbt``: the best of a best-improvement
        local search from the ridge's optimum and the table's best subnets, a lower bound on the
        true optimum (cached)."""
        if self.model == "gbt":
            if self._optimum is None:
                self._optimum = self._local_optimum()
            return self._optimum
        arch = self.space.assemble(_additive_best_units(self._feat, self.coef), {"r": RESOLUTION})
        return arch, float(self.predict([arch])[0])

    def _local_optimum(self, starts: int = 16):
        """Best-improvement hill climbing on the numeric design (one layer's kernel and expansion,
        or one stage's depth, per move) from the additive model's optimum and the ``starts`` table
        subnets the trees rank highest."""
        f = self._feat
        X, table_x = self._table_designs
        _, w = _ridge_path(X, self._table_y, [_pick_alpha(X, self._table_y, CV_SEED)])[0]
        ridge_best = f.numeric(self.space.format(self.space.assemble(_additive_best_units(f, w), {"r": RESOLUTION})))
        order = np.argsort(-self._predict_numeric(table_x), kind="stable")[:starts]
        best_x, best_v = None, -np.inf
        for x in [ridge_best] + [table_x[i] for i in order]:
            v = float(self._predict_numeric(x[None])[0])
            while True:
                nb = self._moves(x)
                p = self._predict_numeric(nb)
                i = int(np.argmax(p))
                if p[i] <= v + 1e-12:
                    break
                x, v = nb[i], float(p[i])
            if v > best_v:
                best_x, best_v = x, v
        arch = self._from_numeric(best_x)
        return arch, float(self.predict([arch])[0])

    def _moves(self, x: np.ndarray) -> np.ndarray:
        """Every design one move away from ``x`` (see :meth:`_local_optimum`)."""
        f = self._feat
        combos = [(k, e) for k in f.kernels for e in f.expands]
        out, pos = [], 0
        for depths in f.stage_depths:
            d = int(x[pos])
            for j in range(d):
                for k, e in combos:
                    if (x[pos + 1 + 2 * j], x[pos + 2 + 2 * j]) != (k, e):
                        y = x.copy()
                        y[pos + 1 + 2 * j], y[pos + 2 + 2 * j] = k, e
                        out.append(y)
            for d2 in depths:
                if d2 < d:
                    y = x.copy()
                    y[pos] = d2
                    y[pos + 1 + 2 * d2:pos + 1 + 2 * max(depths)] = 0
                    out.append(y)
                elif d2 > d:
                    for k, e in combos:  # the new layers all take one kernel and expansion
                        y = x.copy()
                        y[pos] = d2
                        y[pos + 1 + 2 * d:pos + 1 + 2 * d2] = [k, e] * (d2 - d)
                        out.append(y)
            pos += 1 + 2 * max(depths)
        return np.stack(out)

    def _from_numeric(self, x: np.ndarray):
        f = self._feat
        ks, es, ds, pos = [], [], [], 0
        for depths in f.stage_depths:
            ds.append(int(x[pos]))
            ks += [int(v) for v in x[pos + 1:pos + 1 + 2 * max(depths):2]]
            es += [int(v) for v in x[pos + 2:pos + 2 + 2 * max(depths):2]]
            pos += 1 + 2 * max(depths)
        return self.space.parse({"ks": ks, "e": es, "d": ds, "r": RESOLUTION})

    def describe(self) -> dict:
        d = super().describe()
        d.update(cv=self.cv, n_train=self.n_train, table_best=self.table_best)
        return d


__all__ = ["OFASurrogateEvaluator", "surrogate_space", "cross_validate", "RESOLUTION", "METRIC", "MODELS"]
