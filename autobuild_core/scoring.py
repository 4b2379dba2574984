"""Scoring every configuration of every unit in batches (method.md §3-4).

Two methods, chosen with ``method=``:

``"paper"`` (default; method.md §3). A configuration of depth d in unit u is scored by the L1 norm
of its exit node's embedding at the hop that covers exactly the unit (d-1 in chain spaces),
z-scored with that hop's moments and mapped onto unit (u, d)'s target moments, so that scores read
in the target's units and compare across units and depths. All configurations of a unit are
collated into one graph set and pushed through the encoder a few thousand graphs at a time: the
authors' code ran one forward pass per configuration (about 70 s for OFA-MobileNetV3's 36,855;
see benchmarks/motifs.py for ours).

``"marginal"``. A configuration's score is the ranker's mean predicted target (in target units)
over a fixed sample of ``n_context`` whole architectures that contain it: the other units'
configurations and the globals come from ``space.sample(n_context, seed, stratified=True)``, and
the same contexts serve every configuration of every unit, so two configurations are compared on
paired networks. Why: what building and pruning need is "how good are networks that contain this
configuration", i.e. the configuration's marginal effect on the target, which is also the ground
truth the paper's interpretability claim is checked against (the mean target of all architectures
containing it). The paper's score only reads the module's own embedding magnitude; the ranking
loss ties magnitude to quality for whole graphs (the graph mean) but nothing forces the exit node
of one unit to order that unit's configurations, and on NAS-Bench-201 it ordered node 3's 125
configurations poorly (Spearman 0.28-0.37 with the ground-truth marginal, versus 0.80-0.91 for
averaged predictions from the same rankers; docs/results.md). Averaging the prediction uses the
part of the ranker that the MSE loss actually trains, lets the configuration interact with what
follows and precedes it exactly as in a real network, and needs no moment mapping because
predictions are already comparable across units and depths.

Cost. Contexts x configurations whole graphs. They are not built with ``to_graph`` one by one:
for each (context, unit, depth) we build one template network and, from ``1 + depth x |menu|``
probe graphs, learn which node rows each layer choice writes and which edges it adds or drops;
every configuration's graph is then the template with those rows overwritten and edges masked
(array indexing), checked against ``to_graph`` on random configurations (spaces whose layers do
not act separably fall back to ``to_graph``, exact but slow). The forward pass dominates.
``n_context=None`` picks ``clip(150_000 // n_configs, 4, 64)``: 64 contexts for NAS-Bench-201's
155 configurations (~10k graphs: 1.0 s on one thread) and 4 for OFA-MobileNetV3's 36,855
(~147k graphs: 5.6 s on one thread of the idle 2-core machine, 13.5 s with a second job running;
the paper scoring takes 0.5 s, the authors' code ~70 s; docs/results.md). Pass ``n_context`` to
trade time for less noise. Paired contexts keep 4 useful: every configuration of a unit sees the
same 4 networks, so their differences, not the contexts' own
quality, decide the order.
"""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from search_spaces.errors import ConfigError
from search_spaces.graph import GraphSet

METHODS = ("paper", "marginal")
AUTO_GRAPH_BUDGET = 150_000
COLUMNS = ["unit", "unit_name", "depth", "config", "label", "hop", "norm", "score", "method"]


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


def auto_n_context(n_configs: int) -> int:
    return int(np.clip(AUTO_GRAPH_BUDGET // max(1, n_configs), 4, 64))


def score_units(trained, space, globals: dict | None = None, units: Sequence[int] | None = None, threads: int = 1,
                method: str = "paper", n_context: int | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per unit configuration: unit, unit_name, depth, config (JSON), label, hop, norm,
    score (target units), method and rank (1 = best within its unit). ``threads``: torch
    intra-op threads while scoring (0 = leave torch's setting).

    ``method="marginal"`` (see the module docstring) uses ``n_context`` sampled contexts drawn
    with ``seed`` (``globals`` fixes those global choices in every context); its ``norm`` is NaN
    and ``hop`` is the last hop, the one the prediction head reads."""
    from .train import torch_threads

    if method not in METHODS:
        raise ConfigError(f"unit scoring method {method!r} is unknown; choose one of {', '.join(METHODS)}.")
    units = list(units) if units is not None else list(range(len(space.units)))
    with torch_threads(threads):
        if method == "paper":
            df = _score_paper(trained, space, globals, units)
        else:
            if n_context is None:
                n_context = auto_n_context(sum(space.units[u].n_configs for u in units))
            if int(n_context) < 1:
                raise ConfigError(f"n_context must be a positive integer, got {n_context!r}.")
            df = _score_marginal(trained, space, globals, units, int(n_context), seed)
    df["method"] = method
    df = df[COLUMNS].copy()
    df["rank"] = df.groupby("unit")["score"].rank(ascending=False, method="first").astype(int)
    return df


def _frame(space, u, configs, hops, norms, scores) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unit": u,
            "unit_name": space.units[u].name,
            "depth": np.array([len(c) for c in configs]),
            "config": [json.dumps([list(layer) for layer in c]) for c in configs],
            "label": [space.format_config(u, c) for c in configs],
            "hop": hops,
            "norm": norms,
            "score": scores,
        }
    )


def _score_paper(trained, space, globals, units) -> pd.DataFrame:
    g = dict(space.default_globals())
    g.update(globals or {})
    frames = []
    for u in units:
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
        frames.append(_frame(space, u, configs, hops, norms, (norms - hop_mean) / hop_std * sd + mu))
    return pd.concat(frames, ignore_index=True)


# ---- marginal scoring ----------------------------------------------------------------------
@torch.no_grad()
def _predict_set(trained, gs: GraphSet, chunk: int = 2048) -> np.ndarray:
    """Predictions in target units; chunks of ~2k graphs were fastest on one thread."""
    model = trained.model
    model.eval()
    out = []
    for start in range(0, len(gs), chunk):
        out.append(model(gs.batch(torch.arange(start, min(start + chunk, len(gs))))).pred)
    return torch.cat(out).numpy().astype(np.float64) * trained.y_std + trained.y_mean


def _with_unit(space, context, u: int, config):
    units = list(context.units)
    units[u] = config
    return space.assemble(units, context.global_dict)


class _Template:
    """Graphs of ``context`` with unit ``u`` set to any configuration of one depth, built from one
    template graph: each layer's value writes its own node rows and may add or drop edges (NB-201
    drops the input edge of a ``none`` op). ``build`` returns ``None`` when a probe changes the
    node count, and :func:`_check` rejects templates whose per-layer effects do not compose."""

    def __init__(self, g0, rows: list, cat_tab: list, cont_tab: list, cand: torch.Tensor, base: torch.Tensor, adds: list, drops: list):
        self.g0, self.rows, self.cat_tab, self.cont_tab = g0, rows, cat_tab, cont_tab
        self.cand, self.base, self.adds, self.drops = cand, base, adds, drops

    @classmethod
    def build(cls, space, context, u: int, depth: int):
        menu = space.units[u].layer_choices
        base = (menu[0],) * depth
        g0 = space.to_graph(_with_unit(space, context, u, base))
        probes = []  # probes[j][l]: graph with layer j set to menu[l]
        for j in range(depth):
            row = [g0]
            for layer in menu[1:]:
                g = space.to_graph(_with_unit(space, context, u, base[:j] + (layer,) + base[j + 1 :]))
                if g.num_nodes != g0.num_nodes:
                    return None
                row.append(g)
            probes.append(row)
        edge_sets = [set(map(tuple, g.edge_index.t().tolist())) for row in probes for g in row] or [set(map(tuple, g0.edge_index.t().tolist()))]
        e0 = set(map(tuple, g0.edge_index.t().tolist()))
        cand_list = [tuple(e) for e in g0.edge_index.t().tolist()] + sorted(set().union(*edge_sets) - e0)
        pos = {e: i for i, e in enumerate(cand_list)}
        rows, cat_tab, cont_tab, adds, drops, taken = [], [], [], [], [], set()
        for row in probes:
            changed = torch.zeros(g0.num_nodes, dtype=torch.bool)
            add = torch.zeros(len(row), len(cand_list), dtype=torch.bool)
            drop = torch.zeros(len(row), len(cand_list), dtype=torch.bool)
            for li, g in enumerate(row):
                changed |= (g.x_cat != g0.x_cat).any(1) | (g.x_cont != g0.x_cont).any(1)
                es = set(map(tuple, g.edge_index.t().tolist()))
                for e in es - e0:
                    add[li, pos[e]] = True
                for e in e0 - es:
                    drop[li, pos[e]] = True
            r = torch.nonzero(changed).flatten()
            if taken & set(r.tolist()):
                return None
            taken |= set(r.tolist())
            rows.append(r)
            cat_tab.append(torch.stack([g.x_cat[r] for g in row]))  # [|menu|, |r|, n_cat]
            cont_tab.append(torch.stack([g.x_cont[r] for g in row]))
            adds.append(add)
            drops.append(drop)
        cand = torch.tensor(cand_list, dtype=torch.long).reshape(-1, 2).t()
        base_mask = torch.zeros(len(cand_list), dtype=torch.bool)
        base_mask[: g0.edge_index.shape[1]] = True
        return cls(g0, rows, cat_tab, cont_tab, cand, base_mask, adds, drops)

    def graph_set(self, choice_idx: torch.Tensor) -> GraphSet:
        """choice_idx: [n, depth] menu indices -> GraphSet of n whole graphs."""
        n, g0 = choice_idx.shape[0], self.g0
        x_cat = g0.x_cat.unsqueeze(0).repeat(n, 1, 1)
        x_cont = g0.x_cont.unsqueeze(0).repeat(n, 1, 1)
        present = self.base.unsqueeze(0).repeat(n, 1)
        for j, r in enumerate(self.rows):
            if len(r):
                x_cat[:, r] = self.cat_tab[j][choice_idx[:, j]]
                x_cont[:, r] = self.cont_tab[j][choice_idx[:, j]]
            present &= ~self.drops[j][choice_idx[:, j]]
            present |= self.adds[j][choice_idx[:, j]]
        N = g0.num_nodes
        n_edges = present.sum(1)
        edges = self.cand.unsqueeze(1).expand(2, n, -1)[:, present]  # row-major: graph by graph, candidate order
        return GraphSet.from_flat(x_cat.reshape(n * N, -1), x_cont.reshape(n * N, -1), edges, torch.full((n,), N), n_edges)


def _edge_set(ei: torch.Tensor) -> set:
    return set(map(tuple, ei.t().tolist()))


def _check(space, tmpl: _Template, context, u, configs, choice_idx, rng, n_checks: int = 2) -> bool:
    """The template must reproduce ``to_graph`` (edge order aside) on random configurations."""
    picks = rng.choice(len(configs), size=min(n_checks, len(configs)), replace=False)
    gs = tmpl.graph_set(choice_idx[torch.as_tensor(picks)])
    for i, p in enumerate(picks):
        ref = space.to_graph(_with_unit(space, context, u, configs[p]))
        b = gs.batch([i])
        if not (torch.equal(b.x_cat, ref.x_cat) and torch.equal(b.x_cont, ref.x_cont) and _edge_set(b.edge_index) == _edge_set(ref.edge_index)):
            return False
    return True


def _concat(sets: list) -> GraphSet:
    return GraphSet.from_flat(torch.cat([g.x_cat for g in sets]), torch.cat([g.x_cont for g in sets]), torch.cat([g.edge_local for g in sets], 1),
                              torch.cat([g.n_nodes for g in sets]), torch.cat([g.n_edges for g in sets]))


def _score_marginal(trained, space, globals, units, n_context: int, seed: int, batch_graphs: int = 8192) -> pd.DataFrame:
    contexts = space.sample(n_context, seed=seed, stratified=True)
    if globals:
        contexts = [space.assemble(c.units, {**c.global_dict, **globals}) for c in contexts]
    rng = np.random.default_rng(seed)
    frames = []
    for u in units:
        menu = {layer: i for i, layer in enumerate(space.units[u].layer_choices)}
        configs = space.unit_configs(u)
        depths = np.array([len(c) for c in configs])
        total = np.zeros(len(configs))
        for d in np.unique(depths):
            pos = np.flatnonzero(depths == d)
            idx = torch.tensor([[menu[tuple(layer)] for layer in configs[p]] for p in pos], dtype=torch.long).reshape(len(pos), int(d))
            sub = [configs[p] for p in pos]
            pending: list = []  # graph sets of several contexts, predicted together (tiny units)

            def flush():
                if pending:
                    pred = _predict_set(trained, _concat(pending) if len(pending) > 1 else pending[0])
                    total[pos] += pred.reshape(len(pending), len(pos)).sum(0)
                    pending.clear()

            for c in contexts:
                tmpl = _Template.build(space, c, u, int(d))
                if tmpl is not None and _check(space, tmpl, c, u, sub, idx, rng):
                    pending.append(tmpl.graph_set(idx))
                else:  # graphs that do not decompose per layer: slow but exact
                    pending.append(GraphSet([space.to_graph(_with_unit(space, c, u, cfg)) for cfg in sub]))
                if len(pending) * len(pos) >= batch_graphs:
                    flush()
            flush()
        frames.append(_frame(space, u, configs, trained.num_hops - 1, np.nan, total / len(contexts)))
    return pd.concat(frames, ignore_index=True)


def config_of(row_config: str) -> tuple:
    """Inverse of the ``config`` column's JSON: a hashable configuration tuple."""
    return tuple(tuple(layer) for layer in json.loads(row_config))
