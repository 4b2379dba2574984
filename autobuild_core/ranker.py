"""The ranker: a GNN predictor whose node-embedding magnitudes are interpretable scores.

:class:`FeatureEncoder` (FE-MLP, hop 0) maps each feature to one non-negative scalar; M
message-passing layers (GATv2, GraphConv or GIN, each with batch norm, ReLU and a residual from the
second layer) keep embeddings non-negative, so ``||h_v^m||_1`` is the size of the m-hop module
ending at v; a small head regresses the standardised target from the mean of the last hop
(method.md §2). The layers hold torch_geometric's parameters but run their own gather/``index_add_``
message passing, which is faster on tiny graphs and equal to PyG's (tests/test_core_ranker.py).
On a deduplicated batch (``GraphSet.batch(ids, dedupe=layers)``) each class of indistinguishable
nodes is computed once (batch norm alone sees every node), which gives the same numbers for a
fraction of the work. Why only in-neighbour convolutions: docs/ranker.md ("Implementation notes").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATv2Conv, GINConv, GraphConv

from search_spaces.graph import FeatureSpec, GraphBatch, split_schema

from .settings import GNN_TYPES, RANKER_PRESETS, RankerConfig  # noqa: F401 - re-exported

class FeatureEncoder(nn.Module):
    """FE-MLP: one scalar per feature, made non-negative with abs()."""

    def __init__(self, features: Sequence[FeatureSpec], fe_dim: int = 8):
        super().__init__()
        self.cat_features, self.cont_features = split_schema(features)
        self.cat = nn.ModuleList(nn.Sequential(nn.Embedding(len(f.values), fe_dim), nn.Linear(fe_dim, 1)) for f in self.cat_features)
        self.cont = nn.ModuleList(nn.Sequential(nn.Linear(1, fe_dim), nn.ReLU(), nn.Linear(fe_dim, 1)) for f in self.cont_features)
        lows = [f.low for f in self.cont_features]
        spans = [f.high - f.low for f in self.cont_features]
        self.register_buffer("cont_low", torch.tensor(lows, dtype=torch.float32), persistent=False)
        self.register_buffer("cont_span", torch.tensor(spans, dtype=torch.float32), persistent=False)
        sizes = torch.tensor([len(f.values) for f in self.cat_features], dtype=torch.long)
        self.register_buffer("cat_offset", torch.cumsum(sizes, 0) - sizes, persistent=False)
        # output coordinate order: categorical-like features, then continuous ones
        self.feature_order = [f.name for f in self.cat_features] + [f.name for f in self.cont_features]

    @property
    def out_dim(self) -> int:
        return len(self.cat_features) + len(self.cont_features)

    def signed(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        """The per-feature scalars before abs() (the read-out uses these too)."""
        cols = []
        if self.cat_features:
            # embedding -> linear of a categorical value is a lookup in a [values] table: build the
            # tables of all features (tiny) and look every node up at once
            table = torch.cat([m[1](m[0].weight) for m in self.cat]).view(-1)
            idx = x_cat + self.cat_offset
            cols.append(table.index_select(0, idx.reshape(-1)).view(idx.shape))  # index_select: a cheaper backward than table[idx]
        if self.cont_features:
            z = (x_cont - self.cont_low) / self.cont_span
            cols += [m(z[:, i : i + 1]) for i, m in enumerate(self.cont)]
        return torch.cat(cols, dim=1) if len(cols) > 1 else cols[0]

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        return self.signed(x_cat, x_cont).abs()


def _make_conv(kind: str, d_in: int, d_out: int) -> nn.Module:
    """The PyG layer whose parameters (and initialisation) a hop uses; :func:`_conv` runs it."""
    if kind == "gatv2":
        return GATv2Conv(d_in, d_out, heads=1, add_self_loops=True)
    if kind == "graphconv":
        return GraphConv(d_in, d_out, aggr="add")
    if kind == "gin":
        return GINConv(nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out)), train_eps=True)
    raise ValueError(kind)


def _conv(conv: nn.Module, h: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, att_src: torch.Tensor, att_dst: torch.Tensor) -> torch.Tensor:
    """One message-passing layer with PyG's semantics, as gathers and ``index_add_`` over edges.

    ``src``/``dst``: the graph's edges (source -> target); ``att_src``/``att_dst``: what GATv2
    attends over: every node's self-loop plus its in-edges other than self-loops (PyG removes
    existing self-loops and adds one per node).
    """
    n = h.shape[0]
    if isinstance(conv, GATv2Conv):
        xl, xr = conv.lin_l(h), conv.lin_r(h)
        xj = xl.index_select(0, att_src)
        e = F.leaky_relu(xj + xr.index_select(0, att_dst), conv.negative_slope) @ conv.att.view(-1)
        # softmax over each node's incoming edges, shifted by the node's max logit (no gradient needed)
        top = e.new_full((n,), float("-inf")).scatter_reduce_(0, att_dst, e.detach(), "amax")
        ex = torch.exp(e - top.index_select(0, att_dst))
        # normalise per node after aggregating (fewer operations than per edge before it)
        num = h.new_zeros(n, xl.shape[1]).index_add_(0, att_dst, ex.unsqueeze(1) * xj)
        den = ex.new_zeros(n).index_add_(0, att_dst, ex).unsqueeze(1)
        return torch.addcdiv(conv.bias, num, den) if conv.bias is not None else num / den
    # sum over in-edges (self-loops included, as PyG's add aggregation does)
    agg = h.new_zeros(h.shape).index_add_(0, dst, h.index_select(0, src))
    if isinstance(conv, GraphConv):
        return conv.lin_rel(agg) + conv.lin_root(h)
    if isinstance(conv, GINConv):
        return conv.nn((1 + conv.eps) * h + agg)
    raise TypeError(type(conv).__name__)


@dataclass
class RankerOutput:
    pred: torch.Tensor  # [B] standardised target prediction
    node_h: list  # M+1 tensors [N, dim_m] (deduplicated batch: one row per node class)
    graph_h: list  # M+1 tensors [B, dim_m]
    norms: torch.Tensor | None = None  # [B, M+1], filled by Ranker.forward

    def graph_norms(self) -> torch.Tensor:
        """[B, M+1] L1 norms of the graph embedding at each hop (the hop scores)."""
        if self.norms is not None:
            return self.norms
        return torch.stack([h.sum(dim=1) for h in self.graph_h], dim=1)  # non-negative: sum == L1


class Ranker(nn.Module):
    def __init__(self, features: Sequence[FeatureSpec], cfg: RankerConfig | None = None):
        super().__init__()
        self.cfg = cfg or RankerConfig()
        self.features = tuple(features)
        self.fe = FeatureEncoder(self.features, self.cfg.fe_dim)
        dims = [self.fe.out_dim] + [self.cfg.hidden] * self.cfg.layers
        self.dims = dims
        self.convs = nn.ModuleList(_make_conv(self.cfg.gnn, dims[i], dims[i + 1]) for i in range(self.cfg.layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dims[i + 1]) for i in range(self.cfg.layers))
        self.head = nn.Sequential(nn.Linear(self.cfg.hidden, self.cfg.head_hidden), nn.ReLU(), nn.Linear(self.cfg.head_hidden, 1))
        # [sum of hop widths, M+1] block indicator: concatenated graph embeddings -> hop L1 norms in one matmul
        hop_of = torch.repeat_interleave(torch.arange(len(dims)), torch.tensor(dims))
        self.register_buffer("hop_sum", F.one_hot(hop_of, len(dims)).float(), persistent=False)

    @property
    def num_hops(self) -> int:
        return self.cfg.layers + 1

    def node_embeddings(self, x_cat: torch.Tensor, x_cont: torch.Tensor, edge_index: torch.Tensor,
                        expand: tuple | None = None) -> list:
        """Node embeddings at hops 0..M (``edge_index``: [2, E], source -> target). ``expand``, for a
        deduplicated batch: (the row of each node, a node of each row), so that batch norm in
        training sees every node."""
        src, dst = edge_index[0], edge_index[1]
        att_src = att_dst = None
        if self.cfg.gnn == "gatv2":
            loops = torch.arange(x_cat.shape[0], device=x_cat.device)
            keep = src != dst
            att_src, att_dst = torch.cat([loops, src[keep]]), torch.cat([loops, dst[keep]])
        h = self.fe(x_cat, x_cont)
        hs = [h]
        for m, (conv, bn) in enumerate(zip(self.convs, self.norms)):
            z = _conv(conv, h, src, dst, att_src, att_dst)
            if expand is not None and self.training:
                # batch statistics over all the batch's nodes, as without deduplication
                z = bn(z.index_select(0, expand[0])).index_select(0, expand[1])
            else:
                z = bn(z)
            out = torch.relu(z)
            h = out + h if m >= 1 else out  # residual from the second layer on
            hs.append(h)
        return hs

    def forward(self, batch: GraphBatch) -> RankerOutput:
        expand = None if batch.node_of is None else (batch.node_of, batch.row_node)
        hs = self.node_embeddings(batch.x_cat, batch.x_cont, batch.edge_index, expand)
        counts = batch.graph_sizes() if batch.sizes is None else batch.sizes
        cat = torch.cat(hs, dim=1)
        if batch.node_of is not None:
            cat = cat.index_select(0, batch.node_of)
        g = cat.new_zeros(batch.num_graphs, cat.shape[1]).index_add_(0, batch.batch, cat) / counts.clamp(min=1).unsqueeze(1).to(cat.dtype)
        ghs = list(g.split(self.dims, dim=1))
        pred = self.head(ghs[-1]).squeeze(-1)
        return RankerOutput(pred, hs, ghs, g @ self.hop_sum)
