"""Scoring every configuration of every unit, so that building and pruning can rank them.

Two methods (``method=``): ``"paper"`` reads the norm of the unit's exit-node embedding at the
hop that covers exactly the unit and maps it onto the unit's target moments; ``"marginal"``
averages the ranker's prediction over a fixed set of whole architectures that contain the
configuration. Both return scores in the target's units, comparable across units and depths.
Configurations are scored in large batches, never one forward pass each. Why two methods, how
the marginal graphs are built and what each costs: docs/scoring.md.
"""

from __future__ import annotations

import json
import threading
import weakref
from dataclasses import dataclass, replace
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
    """L1 norm of each graph's exit-node embedding at that graph's hop.

    Args:
        model: a :class:`~autobuild_core.ranker.Ranker`.
        graphs: a :class:`~search_spaces.graph.GraphSet` or a sequence of ``ArchGraph``.
        exit_nodes: graph-local index of each graph's exit node.
        hops: hop to read for each graph; hops above the model's depth are clamped to its last.
        chunk: graphs per forward pass.

    Returns:
        One float per graph.
    """
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
    """Contexts used by marginal scoring when ``n_context`` is not given: about
    ``AUTO_GRAPH_BUDGET`` whole graphs in all, at least 4 and at most 64 contexts.

    Args:
        n_configs: configurations to score, over all units scored.
    """
    return int(np.clip(AUTO_GRAPH_BUDGET // max(1, n_configs), 4, 64))


def score_units(trained, space, globals: dict | None = None, units: Sequence[int] | None = None, threads: int = 1,
                method: str = "paper", n_context: int | None = None, seed: int = 0) -> pd.DataFrame:
    """Score every configuration of the given units.

    Args:
        trained: the :class:`~autobuild_core.train.TrainedRanker` to score with.
        space: the search space the ranker was trained on.
        globals: global choices to fix (paper: used in every unit graph; marginal: set in every
            context). Unset globals take the space's defaults (paper) or sampled values (marginal).
        units: unit indices to score (default: all).
        threads: torch intra-op threads while scoring (0 leaves torch's setting).
        method: ``"paper"`` (exit-node norm mapped to unit moments) or ``"marginal"`` (mean
            prediction over paired contexts); see docs/scoring.md.
        n_context: marginal only: number of sampled contexts (default :func:`auto_n_context`).
        seed: marginal only: seed of the context sample.

    Returns:
        A DataFrame with one row per configuration: unit, unit_name, depth, config (JSON list of
        layers), label, hop, norm, score (target units), method and rank (1 = best within its
        unit). With ``"marginal"``, ``norm`` is NaN and ``hop`` is the last hop, the one the
        prediction head reads.

    Raises:
        ConfigError: unknown ``method`` or a non-positive ``n_context``.

    Example:
        >>> scores = score_units(trained, space, method="marginal")  # doctest: +SKIP
        >>> scores.sort_values("rank").groupby("unit").head(1)  # doctest: +SKIP
    """
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


@dataclass(frozen=True)
class _UnitTable:
    """What scoring a unit needs besides the ranker: its configurations, their depths, the score
    table's ``config`` and ``label`` columns and (paper scoring) their unit graphs. None of it
    depends on the weights, so it is built once per space, unit and globals (:func:`_unit_table`):
    the search retrains and rescores every round, and on OFA-MobileNetV3 (7,371 configurations per
    unit) rebuilding the labels and graphs each time cost more than scoring itself."""

    configs: list
    depths: np.ndarray
    config_json: list
    labels: list
    graphs: tuple | None = None  # (GraphSet, exit nodes, hops)


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # space -> {(unit, globals): _UnitTable}
_TABLES_LOCK = threading.Lock()


def _unit_table(space, u: int, g: dict | None = None) -> _UnitTable:
    """The cached :class:`_UnitTable` of unit ``u`` (with unit graphs for the globals ``g`` when given)."""
    key = (u, None if g is None else json.dumps(g, sort_keys=True, default=str))
    try:
        with _TABLES_LOCK:
            cached = _TABLES.setdefault(space, {})
    except TypeError:  # a space that cannot be weakly referenced or hashed: build every time
        cached = {}
    hit = cached.get(key)
    if hit is not None:
        return hit
    base = cached.get((u, None))
    if base is None:
        configs = space.unit_configs(u)
        base = _UnitTable(configs, np.array([len(c) for c in configs]), [json.dumps([list(layer) for layer in c]) for c in configs],
                          [space.format_config(u, c) for c in configs])
    table = base if g is None else replace(base, graphs=space.unit_graph_set(u, base.configs, g))
    with _TABLES_LOCK:
        cached.setdefault((u, None), base)
        cached[key] = table
    return table


def _frame(space, u, table: _UnitTable, hops, norms, scores) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "unit": u,
            "unit_name": space.units[u].name,
            "depth": table.depths.copy(),  # the frame may be edited; the cache must not be
            "config": table.config_json,
            "label": table.labels,
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
        table = _unit_table(space, u, g)
        gs, exits, hops = table.graphs
        norms = exit_norms(trained.model, gs, exits, hops)
        hops = np.minimum(hops, trained.num_hops - 1)
        hop_mean = np.array([trained.hop_moments[h][0] for h in hops])
        hop_std = np.array([trained.hop_moments[h][1] for h in hops])
        depths = table.depths
        moments = {d: trained.unit_moment(u, int(d)) for d in np.unique(depths)}
        mu = np.array([moments[d][0] for d in depths])
        sd = np.array([moments[d][1] for d in depths])
        frames.append(_frame(space, u, table, hops, norms, (norms - hop_mean) / hop_std * sd + mu))
    return pd.concat(frames, ignore_index=True)


# ---- marginal scoring ----------------------------------------------------------------------
@torch.no_grad()
def _predict_set(trained, gs: GraphSet, chunk: int = 2048) -> np.ndarray:
    """Predictions in target units, ``chunk`` graphs per forward pass."""
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
        table = _unit_table(space, u)
        configs, depths = table.configs, table.depths
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
        frames.append(_frame(space, u, table, trained.num_hops - 1, np.nan, total / len(contexts)))
    return pd.concat(frames, ignore_index=True)


def config_of(row_config: str) -> tuple:
    """A hashable configuration tuple from a score table's ``config`` column.

    Args:
        row_config: the JSON text of the ``config`` column (a list of layers).
    """
    return tuple(tuple(layer) for layer in json.loads(row_config))
