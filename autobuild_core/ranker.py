"""The ranker: a GNN predictor whose node-embedding magnitudes are interpretable scores.

Three parts, following method.md §2:

* :class:`FeatureEncoder` (FE-MLP, hop 0): each feature of the space's schema goes through its
  own tiny network ending in ONE scalar; the scalars are concatenated and passed through
  ``abs``. Coordinate *i* of a node's hop-0 embedding is therefore the score of that node's value
  of feature *i*, which is what makes per-value importance readable later.
* :class:`Ranker` encoder: M message-passing layers (GATv2Conv, GraphConv or GINConv), each
  followed by batch norm and ReLU, with a residual from the second layer on. ReLU (and the abs
  at hop 0) keep every embedding non-negative, so ``||h_v^m||_1`` is a well-defined "size" of the
  m-hop module ending at v.
* Readout: the mean over nodes at every hop (kept for the ranking loss and for hop metrics), and
  a small MLP on the last hop regressing the standardised target.

Only convolutions whose update at a node depends on that node's in-neighbours alone are offered
(no symmetric degree normalisation), so a unit configuration scored on its own small graph gets
exactly the embedding it would have inside a whole network (batch norm runs in eval mode then).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from typing import Sequence

import torch
from torch import nn
from torch_geometric.nn import GATv2Conv, GINConv, GraphConv
from torch_geometric.utils import scatter

from search_spaces.errors import ConfigError
from search_spaces.graph import FeatureSpec, GraphBatch, split_schema

GNN_TYPES = ("gatv2", "graphconv", "gin")


class RankerConfig(BaseModel):
    """Model hyper-parameters (the paper code's architecture)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    gnn: Literal["gatv2", "graphconv", "gin"] = Field("gatv2", description="Message-passing layer type.")
    hidden: int = Field(32, ge=1, description="Hidden width of the message-passing layers.")
    layers: int = Field(4, ge=1, le=16, description="Message-passing layers M (hops scored: 0..M).")
    fe_dim: int = Field(8, ge=1, description="Width of each feature's private embedding in the FE-MLP.")
    head_hidden: int = Field(32, ge=1, description="Hidden width of the prediction head.")

    def __init__(self, **data):
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ConfigError(_config_error("ranker", e)) from None

    def to_dict(self) -> dict:
        return self.model_dump()


def _config_error(section: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown setting"
        parts.append(f"{section}.{loc}: {msg} (got {err.get('input')!r})")
    return "; ".join(parts) + "."


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
        # output coordinate order: categorical-like features, then continuous ones
        self.feature_order = [f.name for f in self.cat_features] + [f.name for f in self.cont_features]

    @property
    def out_dim(self) -> int:
        return len(self.cat_features) + len(self.cont_features)

    def signed(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        """The per-feature scalars before abs() (the read-out uses these too)."""
        cols = [m(x_cat[:, i]) for i, m in enumerate(self.cat)]
        if self.cont_features:
            z = (x_cont - self.cont_low) / self.cont_span
            cols += [m(z[:, i : i + 1]) for i, m in enumerate(self.cont)]
        return torch.cat(cols, dim=1)

    def forward(self, x_cat: torch.Tensor, x_cont: torch.Tensor) -> torch.Tensor:
        return self.signed(x_cat, x_cont).abs()


def _make_conv(kind: str, d_in: int, d_out: int) -> nn.Module:
    if kind == "gatv2":
        return GATv2Conv(d_in, d_out, heads=1, add_self_loops=True)
    if kind == "graphconv":
        return GraphConv(d_in, d_out, aggr="add")
    if kind == "gin":
        return GINConv(nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU(), nn.Linear(d_out, d_out)), train_eps=True)
    raise ValueError(kind)


@dataclass
class RankerOutput:
    pred: torch.Tensor  # [B] standardised target prediction
    node_h: list  # M+1 tensors [N, dim_m]
    graph_h: list  # M+1 tensors [B, dim_m]

    def graph_norms(self) -> torch.Tensor:
        """[B, M+1] L1 norms of the graph embedding at each hop (the hop scores)."""
        return torch.stack([h.sum(dim=1) for h in self.graph_h], dim=1)  # non-negative: sum == L1


class Ranker(nn.Module):
    def __init__(self, features: Sequence[FeatureSpec], cfg: RankerConfig | None = None):
        super().__init__()
        self.cfg = cfg or RankerConfig()
        self.features = tuple(features)
        self.fe = FeatureEncoder(self.features, self.cfg.fe_dim)
        dims = [self.fe.out_dim] + [self.cfg.hidden] * self.cfg.layers
        self.convs = nn.ModuleList(_make_conv(self.cfg.gnn, dims[i], dims[i + 1]) for i in range(self.cfg.layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(dims[i + 1]) for i in range(self.cfg.layers))
        self.head = nn.Sequential(nn.Linear(self.cfg.hidden, self.cfg.head_hidden), nn.ReLU(), nn.Linear(self.cfg.head_hidden, 1))

    @property
    def num_hops(self) -> int:
        return self.cfg.layers + 1

    def node_embeddings(self, x_cat: torch.Tensor, x_cont: torch.Tensor, edge_index: torch.Tensor) -> list:
        h = self.fe(x_cat, x_cont)
        hs = [h]
        for m, (conv, bn) in enumerate(zip(self.convs, self.norms)):
            out = torch.relu(bn(conv(h, edge_index)))
            h = out + h if m >= 1 else out  # residual from the second layer on
            hs.append(h)
        return hs

    def forward(self, batch: GraphBatch) -> RankerOutput:
        hs = self.node_embeddings(batch.x_cat, batch.x_cont, batch.edge_index)
        ghs = [scatter(h, batch.batch, dim=0, dim_size=batch.num_graphs, reduce="mean") for h in hs]
        pred = self.head(ghs[-1]).squeeze(-1)
        return RankerOutput(pred, hs, ghs)
