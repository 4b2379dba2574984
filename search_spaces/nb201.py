"""NAS-Bench-201 cells as an AutoBuild space.

A cell is a 4-node DAG whose edges i < j each carry one of five operations; unit u is the set of
incoming edges of node u+1 (depths 1, 2, 3), each layer a 1-tuple ``(op,)``. The space rebuilds the
benchmark's official topology index, reproduces its 6,466 isomorphism classes in :meth:`NB201Space.key`
(and the strict functional classes in ``functional_key``), and draws each cell as a graph whose
cell node u+1 is unit u's exit node. The rules and why: docs/spaces.md ("nb201").
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces.errors import EncodingError, suggest

from ._cell import EDGES, N_NODES, Cell, CellSpace, ReLUConvBN, cell_features, cell_key, cell_units
from .base import Arch

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
N_CELLS = len(OPS) ** len(EDGES)  # 15,625
_SHUFFLE_SEED = 88  # NAS-Bench-201's generation script shuffles with this seed
_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@lru_cache(maxsize=1)
def _index_tables() -> tuple[np.ndarray, np.ndarray]:
    """(official index -> product-order rank, rank -> official index)."""
    perm = list(range(N_CELLS))
    random.Random(_SHUFFLE_SEED).shuffle(perm)
    to_rank = np.asarray(perm, dtype=np.int64)
    to_index = np.empty(N_CELLS, dtype=np.int64)
    to_index[to_rank] = np.arange(N_CELLS)
    return to_rank, to_index


def _rank_of(ops: Sequence[str]) -> int:
    r = 0
    for op in ops:
        r = r * len(OPS) + OPS.index(op)
    return r


def _ops_of_rank(rank: int) -> list[str]:
    out = []
    for _ in EDGES:
        rank, d = divmod(rank, len(OPS))
        out.append(OPS[d])
    return out[::-1]


class NB201Space(CellSpace):
    name = "nb201"
    description = "NAS-Bench-201 cell: 4 nodes, 6 edges, 5 ops; units = incoming edges of nodes 1, 2, 3"
    OPS = OPS
    features = cell_features(OPS)
    units = cell_units(OPS)
    global_choices: dict = {}
    default_input = {"in_chans": 3, "resolution": 32, "num_classes": 10}

    # ---- encodings (edge_ops, op lists, graphs and unit graphs: search_spaces._cell) -----------
    def _from_index(self, idx: int) -> Arch:
        if not 0 <= idx < N_CELLS:
            raise EncodingError(f"nb201: topology index {idx} is out of range; official indices run 0..{N_CELLS - 1}")
        return self._from_ops(_ops_of_rank(int(_index_tables()[0][idx])))

    def _from_string(self, s: str) -> Arch:
        text = s.strip()
        if text.isascii() and text.isdigit():
            return self._from_index(int(text))
        hint = f"expected the official form, e.g. {_EXAMPLE}"
        groups = text.split("+")
        if len(groups) != N_NODES - 1:
            raise EncodingError(f"nb201: cannot parse {s!r}: found {len(groups)} node group(s) separated by '+', need {N_NODES - 1}; {hint}")
        ops: dict[tuple[int, int], str] = {}
        for j, g in enumerate(groups, start=1):
            if len(g) < 2 or not (g.startswith("|") and g.endswith("|")):
                raise EncodingError(f"nb201: cannot parse {s!r}: node {j}'s group {g!r} must start and end with '|'; {hint}")
            tokens = g[1:-1].split("|")
            if len(tokens) != j:
                raise EncodingError(f"nb201: cannot parse {s!r}: node {j} needs {j} incoming edge(s), group {g!r} has {len(tokens)}; {hint}")
            for t in tokens:
                op, sep, src = t.rpartition("~")
                if not sep or not (src.isascii() and src.isdigit()):
                    raise EncodingError(f"nb201: cannot parse {s!r}: edge token {t!r} is not 'op~source'; {hint}")
                if op not in OPS:
                    raise EncodingError(f"nb201: cannot parse {s!r}: unknown op {op!r}.{suggest(op, OPS)} Allowed ops: {', '.join(OPS)}")
                i = int(src)
                if i >= j or (i, j) in ops:
                    raise EncodingError(f"nb201: cannot parse {s!r}: node {j} must take each source 0..{j - 1} exactly once (bad source {t!r})")
                ops[(i, j)] = op
        return self._from_ops([ops[e] for e in EDGES])

    def parse(self, obj: Any) -> Arch:
        """Official string, official index (int or digit string), list of 6 ops, per-node op lists, or an Arch."""
        if isinstance(obj, Arch):
            return self.validate(obj)
        if isinstance(obj, (bool, np.bool_)):
            raise EncodingError(f"nb201: {obj!r} is not an architecture encoding")
        if isinstance(obj, (int, np.integer)):
            return self._from_index(int(obj))
        if isinstance(obj, str):
            return self._from_string(obj)
        if isinstance(obj, (list, tuple)):
            if len(obj) == N_NODES - 1 and all(isinstance(g, (list, tuple)) for g in obj):
                return self._from_node_lists(obj)
            return self._from_ops(obj)
        raise EncodingError(
            f"nb201: cannot parse a {type(obj).__name__}; give the official string (e.g. {_EXAMPLE}), an index 0..{N_CELLS - 1} or a list of 6 op names"
        )

    def format(self, arch: Arch) -> str:
        ops = dict(zip(EDGES, self.edge_ops(arch)))
        return "+".join("|" + "|".join(f"{ops[(i, j)]}~{i}" for i in range(j)) + "|" for j in range(1, N_NODES))

    def index(self, arch: Arch) -> int:
        """Official NAS-Bench-201 / NATS-Bench topology index."""
        return int(_index_tables()[1][_rank_of(self.edge_ops(arch))])

    def key(self, arch: Arch) -> str:
        """NAS-Bench-201's isomorphism key (6,466 classes over the 15,625 cells); see module doc."""
        return cell_key(self.edge_ops(arch))

    # ---- real networks -----------------------------------------------------------------------
    def build_model(self, arch: Arch, num_classes: int = 10, in_chans: int = 3, resolution: int | None = None, C: int = 16, N: int = 5) -> nn.Module:
        """NAS-Bench-201's macro skeleton around this cell; ``C``/``N`` shrink it for tests.

        The network is fully convolutional up to a global pool, so ``resolution`` is not needed
        (any input of at least 4×4 works, e.g. 1×28×28).
        """
        self.validate(arch)
        return NB201Network(self.edge_ops(arch), num_classes=num_classes, in_chans=in_chans, C=C, N=N)


# ---- the network (ReLUConvBN and Cell: search_spaces._cell) ------------------------------------
class ResidualReduction(nn.Module):
    """The residual block NAS-Bench-201 places between stages (stride 2, channels doubled)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


class NB201Network(nn.Module):
    def __init__(self, ops: Sequence[str], num_classes: int = 10, in_chans: int = 3, C: int = 16, N: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        c = C
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers += [Cell(ops, c) for _ in range(N)]
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cells(self.stem(x)))


def all_cells() -> list[list[str]]:
    """All 15,625 op lists in product order (not official index order)."""
    return [list(p) for p in itertools.product(OPS, repeat=len(EDGES))]
