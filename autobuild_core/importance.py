"""FE-MLP read-out: which value of each feature scores higher (method.md §3, last point).

Every hop-0 coordinate is one feature's private scalar, so evaluating the FE-MLP on each value of
a categorical feature (or on the candidate values of a continuous one) gives a per-value score
that needs no probing of the GNN. The spread of each coordinate over real data says how much that
feature moves an architecture's hop-0 score at all.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from search_spaces.graph import GraphSet


@torch.no_grad()
def feature_importance(trained, space=None, archs: Sequence | None = None) -> pd.DataFrame:
    """Rows: feature, kind, value, score (|FE-MLP scalar|), count (nodes with this value in
    ``archs``), spread (std of the feature's hop-0 coordinate over all nodes of ``archs``)."""
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


def best_values(importance: pd.DataFrame, names: Sequence[str]) -> dict:
    """For each named feature present in the table, the value with the highest score."""
    out = {}
    for name in names:
        sub = importance[importance["feature"] == name]
        if len(sub):
            out[name] = sub.loc[sub["score"].idxmax(), "value"]
    return out
