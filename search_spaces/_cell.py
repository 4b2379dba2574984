"""Shared machinery of the 4-node cell spaces (NAS-Bench-201 and TransNAS-Bench-101 micro).

Both benchmarks use the same kind of cell: nodes 0..3, one operation on every edge i → j (i < j, six
edges in the order 0→1, 0→2, 1→2, 0→3, 1→3, 2→3), node j the sum of its incoming edges, node 3
the output. They differ only in the op menu (NB-201 adds ``avg_pool_3x3``), in their string
formats and in the network around the cell. :class:`CellSpace` holds what is the same: units
(the incoming edges of nodes 1, 2, 3; method.md §5), the op-node graph, unit graphs, op-list
parsing, the two isomorphism rules, and the torch cell. A concrete space sets ``name`` and
``OPS`` (with ``features``/``units`` from :func:`cell_features`/:func:`cell_units`) and adds its
encodings and network.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from search_spaces.errors import EncodingError, suggest
from search_spaces.graph import ArchGraph, FeatureSpec

from .base import Arch, SearchSpace, UnitGraph, UnitSpec, graph_from_nodes

EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
N_NODES = 4


def cell_features(ops: Sequence[str]) -> tuple:
    """Node-feature schema of a cell space whose op menu is ``ops``."""
    return (
        FeatureSpec("kind", "categorical", ("input", "op", "node")),
        FeatureSpec("op", "categorical", ("-",) + tuple(ops)),
        FeatureSpec("target", "positional", tuple(range(N_NODES))),
        FeatureSpec("source", "positional", tuple(range(N_NODES))),
    )


def cell_units(ops: Sequence[str]) -> tuple:
    """Unit u = the incoming edges of node u+1 (depth u+1), each layer ``(op,)``."""
    return tuple(UnitSpec(f"node{j}", (j,), tuple((op,) for op in ops)) for j in range(1, N_NODES))


def cell_key(ops: Sequence[str]) -> str:
    """NAS-Bench-201's isomorphism rule (it reproduces that benchmark's 6,466 unique cells).

    Every node gets an expression from its incoming edges: a ``none`` edge, or an edge whose source
    expression *is* the single zero token, contributes the zero token ``#``; ``skip_connect``
    passes its source expression through; any other op wraps it as ``(src)@op``; a node is the
    sorted ``+``-join of its terms (zero tokens included); the key is the output node's
    expression. Zero tokens stay in sums, so this is finer than functional equivalence."""
    e = dict(zip(EDGES, ops))
    expr = {0: "x"}
    for j in range(1, N_NODES):
        terms = []
        for i in range(j):
            op, src = e[(i, j)], expr[i]
            if op == "none" or src == "#":
                terms.append("#")
            elif op == "skip_connect":
                terms.append(src)
            else:
                terms.append(f"({src})@{op}")
        expr[j] = "+".join(sorted(terms))
    return expr[N_NODES - 1]


def cell_functional_key(ops: Sequence[str]) -> str:
    """Strict function-level key: zero terms vanish, a node whose inputs are all zero is zero,
    sums are flat multisets (skip splices its source's terms in); ``"0"`` for a dead output."""
    e = dict(zip(EDGES, ops))
    terms: dict[int, tuple] = {0: ("x",)}  # node -> sorted multiset of atoms; () is zero
    for j in range(1, N_NODES):
        acc: list[str] = []
        for i in range(j):
            op, src = e[(i, j)], terms[i]
            if op == "none" or not src:
                continue
            if op == "skip_connect":
                acc.extend(src)
            else:
                acc.append(f"{op}({'+'.join(src)})")
        terms[j] = tuple(sorted(acc))
    return "+".join(terms[N_NODES - 1]) or "0"


def output_reachable(ops: Sequence[str]) -> bool:
    """Whether a path of non-``none`` edges joins the input (node 0) to the output (node 3)."""
    live = {0}
    for (i, j), op in zip(EDGES, ops):  # edges are in topological order of their targets
        if op != "none" and i in live:
            live.add(j)
    return N_NODES - 1 in live


class CellSpace(SearchSpace):
    """A 4-node cell space: subclasses set ``name``, ``OPS``, ``features``, ``units`` and add
    ``parse``/``format``/``build_model``."""

    OPS: tuple = ()
    global_choices: dict = {}

    # ---- encodings ---------------------------------------------------------------------------
    @staticmethod
    def edge_ops(arch: Arch) -> list[str]:
        """The six ops in edge order (0→1, 0→2, 1→2, 0→3, 1→3, 2→3)."""
        return [layer[0] for cfg in arch.units for layer in cfg]

    def _from_ops(self, ops: Sequence) -> Arch:
        """An Arch from six op names in edge order; EncodingError names the bad edge."""
        ops = list(ops)
        if len(ops) != len(EDGES):
            raise EncodingError(f"{self.name}: an op list needs {len(EDGES)} entries (edges 0→1, 0→2, 1→2, 0→3, 1→3, 2→3), got {len(ops)}")
        for e, op in zip(EDGES, ops):
            if not isinstance(op, str) or op not in self.OPS:
                raise EncodingError(f"{self.name}: edge {e[0]}→{e[1]} has unknown op {op!r}.{suggest(str(op), self.OPS)} "
                                    f"Allowed ops: {', '.join(self.OPS)}")
        return Arch.make([[(o,) for o in ops[0:1]], [(o,) for o in ops[1:3]], [(o,) for o in ops[3:6]]])

    def _from_node_lists(self, obj: Sequence) -> Arch:
        """Per-node op lists ``[[op], [op, op], [op, op, op]]`` (layers may be 1-tuples)."""
        flat = []
        for j, g in enumerate(obj, start=1):
            if len(g) != j:
                raise EncodingError(f"{self.name}: node {j} needs {j} op(s), got {len(g)}: {list(g)!r}")
            flat.extend(x[0] if isinstance(x, (list, tuple)) and len(x) == 1 else x for x in g)
        return self._from_ops(flat)

    def functional_key(self, arch: Arch) -> str:
        """Strict function-level isomorphism key (see :func:`cell_functional_key`)."""
        return cell_functional_key(self.edge_ops(arch))

    def output_reachable(self, arch: Arch) -> bool:
        """False for cells whose output is identically zero (no live path from the input)."""
        return output_reachable(self.edge_ops(arch))

    # ---- graphs ------------------------------------------------------------------------------
    @staticmethod
    def _cell_node(j: int) -> dict:
        return {"kind": "input" if j == 0 else "node", "op": "-", "target": j, "source": j}

    @staticmethod
    def _op_node(i: int, j: int, op: str) -> dict:
        return {"kind": "op", "op": op, "target": j, "source": i}

    def to_graph(self, arch: Arch) -> ArchGraph:
        """Nodes 0..3 are the cell nodes, 4..9 the edge ops in edge order.

        Edges follow the data flow, and a ``none`` op reads nothing: its op node keeps its edge
        into the target node (so the unit still contains it) but has no edge from its source, so
        upstream information cannot reach a node through a zeroed edge and the encoder can see
        disconnected cells for what they are. Unit graphs are unaffected (a unit's op nodes have
        no inputs there either)."""
        self.validate(arch)
        nodes = [self._cell_node(j) for j in range(N_NODES)]
        edges = []
        for (i, j), op in zip(EDGES, self.edge_ops(arch)):
            k = len(nodes)
            nodes.append(self._op_node(i, j, op))
            if op != "none":
                edges.append((i, k))
            edges.append((k, j))
        return graph_from_nodes(self.features, nodes, edges)

    def unit_graph(self, unit: int, config, globals: dict | None = None) -> UnitGraph:
        """Unit u's op nodes feeding cell node u+1; that node at hop 1 covers exactly the unit."""
        if not 0 <= unit < len(self.units):
            raise EncodingError(f"{self.name}: unit {unit} does not exist; units are 0..{len(self.units) - 1}")
        spec = self.units[unit]
        config = tuple(tuple(layer) for layer in config)
        if len(config) not in spec.depths or any(layer not in spec.layer_choices for layer in config):
            raise EncodingError(f"{self.name}: unit {unit} needs {spec.depths[0]} layer(s) drawn from {[c for c in spec.layer_choices]}, got {config!r}")
        j = unit + 1
        nodes = [self._op_node(i, j, layer[0]) for i, layer in enumerate(config)]
        nodes.append(self._cell_node(j))
        exit_node = len(nodes) - 1
        return UnitGraph(graph_from_nodes(self.features, nodes, [(k, exit_node) for k in range(len(config))]), exit_node, 1)


# ---- the torch cell --------------------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out))


def make_op(op: str, c: int) -> nn.Module | None:
    """The module of one edge op at ``c`` channels; None for ``none`` (no module, no compute)."""
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1)
    if op == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if op == "none":
        return None
    raise ValueError(f"unknown cell op {op!r}")


class Cell(nn.Module):
    """Node j = sum over i<j of op(i→j)(node i); output = node 3 (zeros when unreachable)."""

    def __init__(self, ops: Sequence[str], c: int):
        super().__init__()
        self.edges = [(i, j) for (i, j), op in zip(EDGES, ops) if op != "none"]
        self.ops = nn.ModuleList([make_op(op, c) for op in ops if op != "none"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes: list[torch.Tensor | None] = [x] + [None] * (N_NODES - 1)
        for (i, j), op in zip(self.edges, self.ops):
            if nodes[i] is None:  # source is identically zero
                continue
            y = op(nodes[i])
            nodes[j] = y if nodes[j] is None else nodes[j] + y
        out = nodes[-1]
        return torch.zeros_like(x) if out is None else out
