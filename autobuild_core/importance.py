"""Read-outs of what a trained ranker learned about single feature values.

``op_effects`` is the read-out to act on: each feature value's effect on the target, defined the
way a benchmark's ground truth is (mean target of architectures holding the value, weighted by
the share of the feature's nodes that hold it, minus the overall mean), computed on the
ranker's predictions over all or sampled architectures of the space, with an interval from a
bootstrap-trained ensemble and a bootstrap over those architectures. ``value_effects`` applies
the same definition to any targets, so ground truth and read-out come from one function.
``fe_mlp_readout`` is the paper's read-out (|FE-MLP scalar| per value): a magnitude the GNN may
use either way, so it is not an effect estimate and its order is not stable across seeds.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from search_spaces.graph import GraphSet

FE_MLP_LABEL = "FE-MLP scalar (paper read-out; not an effect estimate)"
EFFECT_LABEL = "effect on the target (model estimate)"
DEFAULT_KINDS = ("categorical", "continuous")


# ---------------------------------------------------------------------------------------------
# The paper's read-out
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def fe_mlp_readout(trained, space=None, archs: Sequence | None = None) -> pd.DataFrame:
    """The paper's FE-MLP read-out (method.md §3, last point): |hop-0 scalar| of each feature value.

    Args:
        trained: a :class:`~autobuild_core.train.TrainedRanker`.
        space: the search space (default: the ranker's own).
        archs: optional architectures; when given, ``count`` (nodes holding the value) and
            ``spread`` (std of the feature's hop-0 coordinate over their nodes) are filled in.

    Returns rows: feature, kind, value, score (|FE-MLP scalar|), count, spread. The score is a
    magnitude, not a direction: a value that hurts can score highest.
    """
    fe = trained.model.fe
    fe.eval()
    spreads: dict = {}
    counts: dict = {}
    if archs:
        space = space or trained.space
        gs = GraphSet([space.to_graph(a) for a in archs])
        b = gs.batch()
        h0 = fe(b.x_cat, b.x_cont).numpy()
        for i, name in enumerate(fe.feature_order):
            spreads[name] = float(h0[:, i].std())
        for i, f in enumerate(fe.cat_features):
            vals, cnt = np.unique(b.x_cat[:, i].numpy(), return_counts=True)
            counts[f.name] = dict(zip(vals.tolist(), cnt.tolist()))
    rows = []
    for i, f in enumerate(fe.cat_features):
        s = fe.cat[i](torch.arange(len(f.values))).squeeze(-1).abs().numpy()
        for j, v in enumerate(f.values):
            rows.append({"feature": f.name, "kind": f.kind, "value": v, "score": float(s[j]),
                         "count": counts.get(f.name, {}).get(j, 0) if archs else np.nan, "spread": spreads.get(f.name, np.nan)})
    for i, f in enumerate(fe.cont_features):
        values = list(f.values) or list(np.linspace(f.low, f.high, 5))
        z = (torch.tensor(values, dtype=torch.float32).unsqueeze(1) - f.low) / (f.high - f.low)
        s = fe.cont[i](z).squeeze(-1).abs().numpy()
        for v, sv in zip(values, s):
            rows.append({"feature": f.name, "kind": f.kind, "value": v, "score": float(sv), "count": np.nan, "spread": spreads.get(f.name, np.nan)})
    return pd.DataFrame(rows)


#: Old name of :func:`fe_mlp_readout`, kept for call sites that still use it (tasks/stages.py,
#: benchmarks/search.py); new code should call ``fe_mlp_readout`` or ``op_effects``.
feature_importance = fe_mlp_readout


def best_values(table: pd.DataFrame, names: Sequence[str], column: str | None = None) -> dict:
    """For each named feature present in ``table``, the value with the highest ``column``.

    Args:
        table: an :func:`op_effects` table (uses ``effect``) or an :func:`fe_mlp_readout` table
            (uses ``score``).
        names: feature names to look up.
        column: override the column to maximise.
    """
    col = column or ("effect" if "effect" in table.columns else "score")
    out = {}
    for name in names:
        sub = table[table["feature"] == name]
        if "group" in sub.columns:
            sub = sub[sub["group"].isna() | (sub["group"].astype(str) == "all")]
        if len(sub):
            out[name] = sub.loc[sub[col].idxmax(), "value"]
    return out


# ---------------------------------------------------------------------------------------------
# Effects as ground truth defines them
# ---------------------------------------------------------------------------------------------
def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def value_shares(space, archs: Sequence, kinds: Sequence[str] = DEFAULT_KINDS, by: str | None = None, bins: int = 4):
    """Per architecture, the share of each feature's nodes that hold each value.

    Args:
        space: the search space whose feature schema is read.
        archs: architectures of that space.
        kinds: feature kinds to include (``positional`` features are left out by default).
        by: optional positional feature (e.g. ``"unit"``) to compute shares within each of its values.
        bins: equal-width bins over ``[low, high]`` for a continuous feature without candidate values.

    Returns ``(columns, shares)``: ``columns`` is a list of dicts (feature, kind, group, value),
    ``shares`` an array [len(archs), len(columns)] whose rows sum to 1 per feature and group over
    the values that vary between the architectures. A value held by the same number of nodes in
    every architecture (a filler such as NB-201's ``-`` on cell nodes) is not a choice and is left
    out. A continuous feature is summarised by its mean over the graph's nodes, snapped to the
    nearest candidate value or bin.
    """
    graphs = [space.to_graph(a) for a in archs]
    gs = GraphSet(graphs)
    n = len(graphs)
    node_graph = np.repeat(np.arange(n), gs.n_nodes.numpy())
    x_cat, x_cont = gs.x_cat.numpy(), gs.x_cont.numpy()
    cat = [f for f in space.features if f.is_categorical]
    cont = [f for f in space.features if not f.is_categorical]
    by_i = None
    if by is not None:
        names = [f.name for f in cat]
        if by not in names:
            raise ValueError(f"value_shares: by={by!r} is not a categorical/positional feature; choose from {names}")
        by_i = names.index(by)
    groups = [None] if by_i is None else list(range(len(cat[by_i].values)))
    columns: list = []
    blocks: list = []

    def add(f, counts: np.ndarray, labels: list, group):
        varies = (counts.std(0) > 0) & (counts.sum(0) > 0)
        if not varies.any():
            return
        c = counts[:, varies]
        tot = c.sum(1, keepdims=True)
        blocks.append(np.divide(c, tot, out=np.zeros_like(c), where=tot > 0))
        g = "all" if group is None else _plain(cat[by_i].values[group])
        columns.extend({"feature": f.name, "kind": f.kind, "group": g, "value": lab} for lab, keep in zip(labels, varies) if keep)

    for group in groups:
        mask = np.ones(len(node_graph), bool) if group is None else x_cat[:, by_i] == group
        for i, f in enumerate(cat):
            if f.kind not in kinds or i == by_i:
                continue
            counts = np.zeros((n, len(f.values)))
            np.add.at(counts, (node_graph[mask], x_cat[mask, i]), 1.0)
            add(f, counts, [_plain(v) for v in f.values], group)
        for j, f in enumerate(cont):
            if f.kind not in kinds:
                continue
            tot = np.zeros(n)
            cnt = np.zeros(n)
            np.add.at(tot, node_graph[mask], x_cont[mask, j])
            np.add.at(cnt, node_graph[mask], 1.0)
            has = cnt > 0
            mean = np.divide(tot, cnt, out=np.zeros(n), where=has)
            if f.values:
                cands = np.asarray(f.values, dtype=float)
                idx = np.abs(mean[:, None] - cands[None, :]).argmin(1)
                labels = [_plain(v) for v in f.values]
            else:
                edges = np.linspace(f.low, f.high, bins + 1)
                idx = np.clip(np.searchsorted(edges, mean, side="right") - 1, 0, bins - 1)
                labels = [f"[{edges[b]:.4g}, {edges[b + 1]:.4g}{']' if b == bins - 1 else ')'}" for b in range(bins)]
            counts = np.zeros((n, len(labels)))
            counts[np.where(has)[0], idx[has]] = 1.0
            add(f, counts, labels, group)
    shares = np.concatenate(blocks, 1) if blocks else np.zeros((n, 0))
    return columns, shares


def _effects(values: np.ndarray, shares: np.ndarray) -> np.ndarray:
    """Effects of every column for each row of ``values`` ([k, n] -> [k, n_columns])."""
    w = shares.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return values @ shares / w - values.mean(1, keepdims=True)


def value_effects(space, archs: Sequence, y, kinds: Sequence[str] = DEFAULT_KINDS, by: str | None = None, bins: int = 4) -> pd.DataFrame:
    """Each feature value's effect on ``y`` over ``archs``: the share-weighted mean of ``y`` over
    the architectures holding the value minus the mean of ``y`` (on NB-201 with all 15,625 cells:
    the mean accuracy with the op on an edge, averaged over edges, minus the table mean).

    Args:
        space: the search space.
        archs: architectures (a full benchmark table gives its ground truth).
        y: one target value per architecture (measured or predicted).
        kinds, by, bins: as in :func:`value_shares`.

    Returns rows: feature, kind, group, value, effect, n_archs (architectures holding the value).
    """
    y = np.asarray(y, dtype=float)
    columns, shares = value_shares(space, archs, kinds, by, bins)
    eff = _effects(y[None, :], shares)[0]
    df = pd.DataFrame(columns)
    df["effect"] = eff
    df["n_archs"] = (shares > 0).sum(0)
    return df


def _all_archs(space) -> list:
    """Every encoding of a small space (units' configurations x global choices)."""
    from search_spaces.base import Arch

    unit_cfgs = [space.unit_configs(u) for u in range(len(space.units))]
    gnames = sorted(space.global_choices)
    out = []
    for cfgs in itertools.product(*unit_cfgs):
        for gv in itertools.product(*(space.global_choices[g] for g in gnames)):
            out.append(Arch.make(cfgs, dict(zip(gnames, gv))))
    return out


def effect_contexts(space, n_context: int = 16384, seed: int = 0) -> list:
    """The architectures effects are averaged over: the whole space when it has at most
    ``n_context`` encodings, else ``n_context`` stratified uniform samples (every value appears).

    Args:
        space: the search space.
        n_context: the most architectures to use.
        seed: sampling seed.
    """
    if space.size() <= n_context:
        return _all_archs(space)
    return space.sample(n_context, seed=seed, stratified=True)


def op_effects(models, space=None, n_context: int = 16384, seed: int = 0, contexts: Sequence | None = None,
               kinds: Sequence[str] = DEFAULT_KINDS, by: str | None = None, bins: int = 4, level: float = 0.95,
               n_boot: int = 200) -> pd.DataFrame:
    """The ranker's estimate of each feature value's effect on the target, with an interval.

    Args:
        models: a trained ranker or a sequence of them (an ensemble, ideally from
            :func:`train_ensemble`, each member trained on a bootstrap resample of the data).
        space: the search space (default: the first ranker's own).
        n_context: architectures to average over (all of them for a space this small or smaller).
        seed: seed of the context sample and of the bootstrap.
        contexts: explicit architectures to average over instead (e.g. a benchmark table).
        kinds, by, bins: which features and how (see :func:`value_shares`).
        level: coverage of the interval.
        n_boot: bootstrap resamples of the contexts.

    Returns rows: feature, kind, group, value, effect (mean over members of the effect computed
    from predictions as :func:`value_effects` computes it from measurements), ci_low, ci_high,
    se, sd_models (spread of single-member effects), se_contexts (bootstrap over contexts),
    sign_agreement (share of members whose effect has the sign of ``effect``), sign ("+" or "-"
    where the interval excludes zero, else "uncertain": the only sign a reader should act on), rank (1 = largest
    effect within the feature and group), n_models, n_contexts. The interval is
    ``effect ± q·se`` (q: Student-t quantile, m − 1 degrees of freedom) with ``se² = sd_models² + se_contexts²``: with bootstrap-trained members,
    ``sd_models`` is the bootstrap estimate of a single read-out's spread over training sets,
    used unshrunk (conservative for the ensemble mean). With one ranker only the contexts
    contribute and the interval says nothing about training-data uncertainty.
    """
    from scipy.stats import norm
    from scipy.stats import t as student_t

    members = list(models) if isinstance(models, (list, tuple)) else [models]
    if not members:
        raise ValueError("op_effects needs at least one trained ranker")
    space = space or members[0].space
    ctx = list(contexts) if contexts is not None else effect_contexts(space, n_context, seed)
    columns, shares = value_shares(space, ctx, kinds, by, bins)
    preds = np.stack([np.asarray(m.predict(ctx), dtype=float) for m in members])  # [m, n]
    per_member = _effects(preds, shares)  # [m, cols]
    effect = per_member.mean(0)
    m = len(members)
    sd_models = per_member.std(0, ddof=1) if m > 1 else np.zeros_like(effect)
    rng = np.random.default_rng(seed)
    mean_pred = preds.mean(0, keepdims=True)
    boot = np.empty((n_boot, len(columns)))
    for b in range(n_boot):
        idx = rng.integers(0, len(ctx), len(ctx))
        boot[b] = _effects(mean_pred[:, idx], shares[idx])[0]
    se_ctx = np.nanstd(boot, 0, ddof=1)
    se = np.sqrt(sd_models**2 + se_ctx**2)
    # Student-t with m - 1 degrees of freedom: sd_models comes from a handful of members, and a
    # normal quantile would make the interval too narrow (signs stated that are wrong).
    z = float(student_t.ppf(0.5 + level / 2, df=m - 1)) if m > 1 else float(norm.ppf(0.5 + level / 2))
    df = pd.DataFrame(columns)
    df["effect"] = effect
    df["ci_low"] = effect - z * se
    df["ci_high"] = effect + z * se
    df["se"] = se
    df["sd_models"] = sd_models
    df["se_contexts"] = se_ctx
    df["sign_agreement"] = (np.sign(per_member) == np.sign(effect)[None, :]).mean(0)
    df["sign"] = np.where(df["ci_low"] > 0, "+", np.where(df["ci_high"] < 0, "-", "uncertain"))
    df["rank"] = df.groupby(["feature", "group"])["effect"].rank(ascending=False, method="min").astype(int)
    df["n_models"] = m
    df["n_contexts"] = len(ctx)
    df["level"] = level
    return df


def train_ensemble(space, archs: Sequence, y, n_models: int = 5, bootstrap: bool = True, ranker=None, train=None,
                   seed: int = 0) -> list:
    """Rankers for :func:`op_effects`' interval: member i is trained with seed ``seed + i`` on a
    bootstrap resample of ``(archs, y)`` (or on all of it when ``bootstrap`` is false).

    Args:
        space: the search space.
        archs, y: evaluated architectures and their targets.
        n_models: ensemble size.
        bootstrap: resample the training data per member (gives the interval its meaning).
        ranker: a :class:`~autobuild_core.ranker.RankerConfig` (default: the library's).
        train: a :class:`~autobuild_core.train.TrainConfig`; its seed is replaced per member.
        seed: base seed.
    """

    from .train import TrainConfig, train_ranker

    y = np.asarray(y, dtype=float)
    train = train or TrainConfig()
    out = []
    for i in range(n_models):
        if bootstrap:
            idx = np.random.default_rng([seed, i]).integers(0, len(archs), len(archs))
            if np.std(y[idx]) == 0:
                idx = np.arange(len(archs))
        else:
            idx = np.arange(len(archs))
        out.append(train_ranker(space, [archs[j] for j in idx], y[idx], ranker, train.model_copy(update={"seed": seed + i})))
    return out
