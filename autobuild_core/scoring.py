"""Scoring every configuration of every unit in batches (method.md §3-4).

A configuration of depth d in unit u is scored by the L1 norm of its exit node's embedding at the
hop that covers exactly the unit (d-1 in chain spaces), z-scored with that hop's moments and mapped
onto unit (u, d)'s target moments, so that scores read in the target's units and compare across
units and depths. All configurations of a unit are collated into one graph set and pushed through
the encoder a few thousand graphs at a time: the authors' code ran one forward pass per
configuration (about 70 s for OFA-MobileNetV3's 36,855; see benchmarks/motifs.py for ours).
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .graph import GraphSet


@torch.no_grad()
def exit_norms(model, graphs, exit_nodes: np.ndarray, hops: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """L1 norm of each graph's exit node at its hop (hops above the model's depth are clamped)."""
    model.eval()
    gs = graphs if isinstance(graphs, GraphSet) else GraphSet(graphs)
    exit_nodes = torch.as_tensor(exit_nodes, dtype=torch.long)
    hops = torch.clamp(torch.as_tensor(hops, dtype=torch.long), max=model.num_hops - 1)
    out = []
    for start in range(0, len(gs), chunk):
        ids = torch.arange(start, min(start + chunk, len(gs)))
        b = gs.batch(ids)
        hs = model.node_embeddings(b.x_cat, b.x_cont, b.edge_index)
        rows = gs.exit_node_global_index(ids, exit_nodes[ids])
        norms = torch.stack([h[rows].sum(1) for h in hs], 1)  # [n, M+1]
        out.append(norms.gather(1, hops[ids].unsqueeze(1)).squeeze(1))
    return torch.cat(out).numpy()


def score_units(trained, space, globals: dict | None = None, units: Sequence[int] | None = None, threads: int = 1) -> pd.DataFrame:
    """One row per unit configuration: unit, unit_name, depth, config (JSON), label, hop, norm,
    score (target units) and rank (1 = best within its unit). ``threads``: torch intra-op
    threads while scoring (0 = leave torch's setting)."""
    from .train import torch_threads

    with torch_threads(threads):
        return _score_units(trained, space, globals, units)


def _score_units(trained, space, globals, units) -> pd.DataFrame:
    g = dict(space.default_globals())
    g.update(globals or {})
    frames = []
    for u in units if units is not None else range(len(space.units)):
        configs = space.unit_configs(u)
        gs, exits, hops = space.unit_graph_set(u, configs, g)
        norms = exit_norms(trained.model, gs, exits, hops)
        hops = np.minimum(hops, trained.num_hops - 1)
        hop_mean = np.array([trained.hop_moments[h][0] for h in hops])
        hop_std = np.array([trained.hop_moments[h][1] for h in hops])
        depths = np.array([len(c) for c in configs])
        moments = {d: trained.unit_moment(u, int(d)) for d in np.unique(depths)}
        mu = np.array([moments[d][0] for d in depths])
        sd = np.array([moments[d][1] for d in depths])
        scores = (norms - hop_mean) / hop_std * sd + mu
        frames.append(
            pd.DataFrame(
                {
                    "unit": u,
                    "unit_name": space.units[u].name,
                    "depth": depths,
                    "config": [json.dumps([list(layer) for layer in c]) for c in configs],
                    "label": [space.format_config(u, c) for c in configs],
                    "hop": hops,
                    "norm": norms,
                    "score": scores,
                }
            )
        )
    df = pd.concat(frames, ignore_index=True)
    df["rank"] = df.groupby("unit")["score"].rank(ascending=False, method="first").astype(int)
    return df


def config_of(row_config: str) -> tuple:
    """Inverse of the ``config`` column's JSON: a hashable configuration tuple."""
    return tuple(tuple(layer) for layer in json.loads(row_config))
