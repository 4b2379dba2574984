"""The data model every search space produces and the ranker consumes.

An architecture becomes a small directed graph: one node per layer (macro spaces) or per
operation (cell spaces), edges along the data flow. Node features follow the space's
:class:`FeatureSpec` schema: positional and categorical features as vocabulary indices
(``x_cat``), continuous ones as raw floats (``x_cont``). Training touches thousands of tiny
graphs many times, so they are collated once into a :class:`GraphSet` (flat tensors and node
pointers) and mini-batches are cut out of it by index arithmetic; a :class:`GraphBatch` carries
what ``torch_geometric`` layers need and converts to a PyG ``Batch`` on request.

Architectures of one space share most of their modules (every NB-201 cell starts from the same
input node; a few hundred distinct upstream modules cover a batch of 128 cells' 1,280 nodes), so a
batch can be cut *deduplicated*: one row per class of nodes that no in-neighbour message passing of
the given depth can tell apart (:meth:`GraphSet.node_classes`), with maps from the batch's nodes
to their class rows and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

FEATURE_KINDS = ("positional", "categorical", "continuous")


@dataclass(frozen=True)
class FeatureSpec:
    """One node feature of a space's schema.

    Attributes:
        name: the feature's name (a global choice of the same name is scored through it).
        kind: ``"positional"``, ``"categorical"`` or ``"continuous"``.
        values: the ordered vocabulary of a positional/categorical feature (indices into it are
            stored), or the candidate values of a continuous one (optional; used for the
            importance read-out and for building).
        low: with ``high``, scales a continuous feature to about [0, 1] inside the FE-MLP, so
            the schema, not the model, decides the units.
        high: see ``low``.
    """

    name: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self):
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {FEATURE_KINDS}, not {self.kind!r}")
        if self.kind != "continuous" and not self.values:
            raise ValueError(f"feature {self.name!r}: a {self.kind} feature needs its vocabulary in `values`")
        if self.kind == "continuous" and not self.high > self.low:
            raise ValueError(f"feature {self.name!r}: `high` must exceed `low`")

    @property
    def is_categorical(self) -> bool:
        """True for positional and categorical features (stored as indices in ``x_cat``)."""
        return self.kind != "continuous"

    def index(self, value) -> int:
        """Vocabulary index of ``value`` (categorical/positional features only).

        Args:
            value: a value of the vocabulary.

        Raises:
            ValueError: the value is not in the vocabulary.
        """
        try:
            return self.values.index(value)
        except ValueError:
            raise ValueError(f"feature {self.name!r} has no value {value!r}; allowed: {list(self.values)}") from None

    def to_dict(self) -> dict:
        """JSON-able form (what a saved ranker stores)."""
        return {"name": self.name, "kind": self.kind, "values": list(self.values), "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        """Inverse of :meth:`to_dict`.

        Args:
            d: a dict with name and kind, optionally values, low and high.
        """
        return cls(d["name"], d["kind"], tuple(d.get("values", ())), float(d.get("low", 0.0)), float(d.get("high", 1.0)))


def split_schema(features: Sequence[FeatureSpec]) -> tuple[list[FeatureSpec], list[FeatureSpec]]:
    """(categorical-like features in x_cat column order, continuous features in x_cont column order).

    Args:
        features: a space's schema.
    """
    return [f for f in features if f.is_categorical], [f for f in features if not f.is_categorical]


@dataclass
class ArchGraph:
    """One architecture (or one unit configuration) as a graph.

    Attributes:
        x_cat: int64 ``[N, n_cat]`` vocabulary indices.
        x_cont: float32 ``[N, n_cont]`` raw values.
        edge_index: int64 ``[2, E]``, rows (source, target).
    """

    x_cat: torch.Tensor
    x_cont: torch.Tensor
    edge_index: torch.Tensor

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return int(self.x_cat.shape[0])

    @staticmethod
    def from_rows(cat_rows: Sequence[Sequence[int]], cont_rows: Sequence[Sequence[float]], edges: Sequence[tuple[int, int]]) -> "ArchGraph":
        """Build from per-node rows and an edge list.

        Args:
            cat_rows: per node, its vocabulary indices.
            cont_rows: per node, its continuous values.
            edges: ``(source, target)`` pairs.
        """
        n = len(cat_rows)
        x_cat = torch.tensor(cat_rows, dtype=torch.long).reshape(n, -1)
        x_cont = torch.tensor(cont_rows, dtype=torch.float32).reshape(n, -1)
        ei = torch.tensor(list(edges), dtype=torch.long).reshape(-1, 2).t().contiguous()
        return ArchGraph(x_cat, x_cont, ei)

    def to_pyg(self):
        """A ``torch_geometric.data.Data`` view (for users who want PyG's own tooling)."""
        from torch_geometric.data import Data

        return Data(x_cat=self.x_cat, x_cont=self.x_cont, edge_index=self.edge_index, num_nodes=self.num_nodes)


@dataclass
class GraphBatch:
    """Several graphs as one disconnected graph, in PyG's convention (``batch`` maps node -> graph).

    ``sizes``: the node count of each graph (computed from ``batch`` when absent).

    A deduplicated batch (:meth:`GraphSet.batch` with ``dedupe``) holds one row per node class in
    ``x_cat``/``x_cont``/``edge_index``; ``node_of`` maps each of the batch's nodes (``batch`` is
    per node, as usual) to its class row and ``row_node`` names one node of each row.
    """

    x_cat: torch.Tensor
    x_cont: torch.Tensor
    edge_index: torch.Tensor
    batch: torch.Tensor
    num_graphs: int
    sizes: torch.Tensor | None = None
    node_of: torch.Tensor | None = None
    row_node: torch.Tensor | None = None

    def graph_sizes(self) -> torch.Tensor:
        return torch.bincount(self.batch, minlength=self.num_graphs)

    def to(self, device) -> "GraphBatch":
        """A copy on ``device``.

        Args:
            device: a torch device or its name.
        """
        def move(t):
            return None if t is None else t.to(device)

        return GraphBatch(self.x_cat.to(device), self.x_cont.to(device), self.edge_index.to(device), self.batch.to(device),
                          self.num_graphs, move(self.sizes), move(self.node_of), move(self.row_node))


class GraphSet:
    """Many graphs collated once; ``batch(ids)`` cuts out any subset without Python loops per graph.

    Args:
        graphs: at least one :class:`ArchGraph`.

    Example:
        >>> g = ArchGraph.from_rows([[0], [1]], [[], []], [(0, 1)])
        >>> GraphSet([g, g, g]).batch([0, 2]).edge_index.tolist()
        [[0, 2], [1, 3]]
    """

    def __init__(self, graphs: Sequence[ArchGraph]):
        if not graphs:
            raise ValueError("GraphSet needs at least one graph")
        self.n = len(graphs)
        n_nodes = torch.tensor([g.num_nodes for g in graphs], dtype=torch.long)
        n_edges = torch.tensor([int(g.edge_index.shape[1]) for g in graphs], dtype=torch.long)
        self.node_ptr = torch.zeros(self.n + 1, dtype=torch.long)
        self.node_ptr[1:] = torch.cumsum(n_nodes, 0)
        self.edge_ptr = torch.zeros(self.n + 1, dtype=torch.long)
        self.edge_ptr[1:] = torch.cumsum(n_edges, 0)
        self.x_cat = torch.cat([g.x_cat for g in graphs], 0)
        self.x_cont = torch.cat([g.x_cont for g in graphs], 0)
        # edges stored with graph-local node ids; offsets are added per batch
        self.edge_local = torch.cat([g.edge_index for g in graphs], 1) if n_edges.sum() > 0 else torch.zeros(2, 0, dtype=torch.long)
        self.n_nodes = n_nodes
        self.n_edges = n_edges
        self._classes: dict = {}

    @classmethod
    def from_flat(cls, x_cat: torch.Tensor, x_cont: torch.Tensor, edge_local: torch.Tensor, n_nodes: torch.Tensor, n_edges: torch.Tensor) -> "GraphSet":
        """Build from already-concatenated node rows and graph-local edges (vectorised producers
        such as a space enumerating thousands of unit configurations skip per-graph objects).

        Args:
            x_cat: ``[sum of nodes, n_cat]`` rows of all graphs, graph after graph.
            x_cont: ``[sum of nodes, n_cont]`` likewise.
            edge_local: ``[2, sum of edges]`` edges with graph-local node ids, graph after graph.
            n_nodes: nodes per graph.
            n_edges: edges per graph.
        """
        self = cls.__new__(cls)
        self.n = int(len(n_nodes))
        self.n_nodes, self.n_edges = n_nodes.long(), n_edges.long()
        self.node_ptr = torch.zeros(self.n + 1, dtype=torch.long)
        self.node_ptr[1:] = torch.cumsum(self.n_nodes, 0)
        self.edge_ptr = torch.zeros(self.n + 1, dtype=torch.long)
        self.edge_ptr[1:] = torch.cumsum(self.n_edges, 0)
        self.x_cat, self.x_cont, self.edge_local = x_cat, x_cont, edge_local
        self._classes = {}
        return self

    @staticmethod
    def chain_edges(n_nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph-local path edges (0->1->...->n-1) of many chains at once: (edge_local, n_edges).

        Args:
            n_nodes: nodes of each chain.
        """
        n_edges = torch.clamp(n_nodes - 1, min=0)
        total = int(n_edges.sum())
        seg_start = torch.repeat_interleave(torch.cumsum(n_edges, 0) - n_edges, n_edges)
        src = torch.arange(total) - seg_start
        return torch.stack([src, src + 1]), n_edges

    def __len__(self) -> int:
        return self.n

    @staticmethod
    def _ranges(ptr: torch.Tensor, counts: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Concatenated ``arange(ptr[i], ptr[i]+counts[i])`` for i in ids, vectorised."""
        c = counts[ids]
        total = int(c.sum())
        if total == 0:
            return torch.zeros(0, dtype=torch.long)
        starts = ptr[ids]
        seg_start = torch.repeat_interleave(torch.cumsum(c, 0) - c, c)
        return torch.repeat_interleave(starts, c) + torch.arange(total) - seg_start

    def global_edges(self) -> torch.Tensor:
        """``[2, E]`` all edges with set-wide node ids."""
        edge_graph = torch.repeat_interleave(torch.arange(self.n), self.n_edges)
        return self.edge_local + self.node_ptr[edge_graph].unsqueeze(0)

    def node_classes(self, depth: int) -> torch.Tensor:
        """A class id per node (set-wide): nodes of one class have the same features and, ``depth``
        times over, in-neighbours of the same classes (counted with multiplicity), so any
        ``depth``-layer message passing that aggregates in-neighbours without regard to their
        order gives them the same embedding. Computed once per depth (colour refinement on
        in-edges, like the Weisfeiler-Lehman test) and cached.

        Args:
            depth: the number of message-passing layers the classes must hold for.
        """
        if depth in self._classes:
            return self._classes[depth]
        import numpy as np

        rows = torch.cat([self.x_cat.double(), self.x_cont.double()], 1).numpy()
        cls = np.unique(rows, axis=0, return_inverse=True)[1].reshape(-1) if len(rows) else np.zeros(0, dtype=np.int64)
        src, dst = (t.numpy() for t in self.global_edges())
        n_cls = int(cls.max()) + 1 if len(cls) else 0
        for _ in range(depth):
            order = np.lexsort((cls[src], dst))
            ptr = np.searchsorted(dst[order], np.arange(len(cls) + 1))
            in_cls = cls[src[order]].tolist()
            ids: dict = {}
            new = np.fromiter((ids.setdefault((c, tuple(in_cls[ptr[v]:ptr[v + 1]])), len(ids)) for v, c in enumerate(cls.tolist())),
                              dtype=np.int64, count=len(cls))
            cls, stable = new, len(ids) == n_cls  # refinement only splits classes: same count = same partition
            n_cls = len(ids)
            if stable:
                break
        self._classes[depth] = torch.from_numpy(cls)
        return self._classes[depth]

    def batch(self, ids: Sequence[int] | torch.Tensor | None = None, dedupe: int = 0) -> GraphBatch:
        """The graphs ``ids`` as one disconnected graph.

        Args:
            ids: graph indices, in the order wanted (default: all graphs).
            dedupe: if > 0, one row per node class of this depth (:meth:`node_classes`) instead of
                one per node; the batch's ``node_of`` and ``row_node`` map nodes to rows and back.
        """
        ids = torch.arange(self.n) if ids is None else torch.as_tensor(ids, dtype=torch.long)
        return next(self.batches(ids, [0, len(ids)], dedupe))

    def batches(self, ids: Sequence[int] | torch.Tensor, bounds: Sequence[int], dedupe: int = 0):
        """Yield the batches of ``ids[bounds[i]:bounds[i + 1]]`` for each i (an epoch's mini-batches),
        cut in one pass; each is what :meth:`batch` gives for its slice (which calls this with one
        slice), for a fraction of the tensor operations of cutting them one by one.

        Args:
            ids: graph indices, in the order wanted.
            bounds: increasing slice boundaries into ``ids``, from 0 to ``len(ids)``.
            dedupe: as in :meth:`batch`.
        """
        ids = torch.as_tensor(ids, dtype=torch.long)
        bounds = [int(b) for b in bounds]
        n_b = len(bounds) - 1
        sizes = torch.tensor(bounds)
        seg = torch.repeat_interleave(torch.arange(n_b), sizes.diff())  # batch of each graph
        nn_, ne = self.n_nodes[ids], self.n_edges[ids]
        node_idx = self._ranges(self.node_ptr, self.n_nodes, ids)
        edge_idx = self._ranges(self.edge_ptr, self.n_edges, ids)
        gpos = torch.arange(len(ids)) - sizes[:-1][seg]  # graph's position inside its batch
        batch_all = torch.repeat_interleave(gpos, nn_)
        node_start = torch.cumsum(nn_, 0) - nn_
        edges = self.edge_local[:, edge_idx] + node_start[torch.repeat_interleave(torch.arange(len(ids)), ne)].unsqueeze(0)
        nptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(nn_, 0)])[sizes].tolist()
        if not dedupe:
            eptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(ne, 0)])[sizes].tolist()
            x_cat, x_cont = self.x_cat[node_idx], self.x_cont[node_idx]
            for i in range(n_b):
                a, b, ea, eb = nptr[i], nptr[i + 1], eptr[i], eptr[i + 1]
                yield GraphBatch(x_cat[a:b], x_cont[a:b], edges[:, ea:eb] - a, batch_all[a:b], bounds[i + 1] - bounds[i],
                                 nn_[bounds[i]:bounds[i + 1]])
            return
        cls = self.node_classes(dedupe)
        n_cls = int(cls.max()) + 1 if len(cls) else 1
        node_batch = torch.repeat_interleave(seg, nn_)
        keys, node_of = torch.unique(node_batch * n_cls + cls[node_idx], return_inverse=True)  # rows sorted by (batch, class)
        rptr = torch.searchsorted(keys // n_cls, torch.arange(n_b + 1)).tolist()
        first = torch.full((len(keys),), len(node_idx), dtype=torch.long).scatter_reduce_(0, node_of, torch.arange(len(node_idx)), "amin")
        is_first = torch.zeros(len(node_idx), dtype=torch.bool)
        is_first[first] = True
        edges = edges[:, is_first[edges[1]]]
        eptr = torch.searchsorted(node_batch[edges[1]], torch.arange(n_b + 1)).tolist()
        edges = node_of[edges]
        rows = node_idx[first]
        x_cat, x_cont = self.x_cat[rows], self.x_cont[rows]
        for i in range(n_b):
            a, b, ra, rb, ea, eb = nptr[i], nptr[i + 1], rptr[i], rptr[i + 1], eptr[i], eptr[i + 1]
            yield GraphBatch(x_cat[ra:rb], x_cont[ra:rb], edges[:, ea:eb] - ra, batch_all[a:b], bounds[i + 1] - bounds[i],
                             nn_[bounds[i]:bounds[i + 1]], node_of[a:b] - ra, first[ra:rb] - a)

    def exit_node_global_index(self, ids: torch.Tensor, local_exit: torch.Tensor) -> torch.Tensor:
        """Row, inside ``batch(ids)``, of each graph's node ``local_exit[i]``.

        Args:
            ids: the graph indices passed to :meth:`batch`.
            local_exit: per graph, a graph-local node index.
        """
        nn_ = self.n_nodes[ids]
        return torch.cumsum(nn_, 0) - nn_ + local_exit
