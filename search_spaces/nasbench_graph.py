"""NAS-Bench-Graph (PyPI ``nas-bench-graph``) GNN space as an AutoBuild space.

A GNN is a link pattern plus four operations: computing node i applies ``ops[i-1]`` to node
``link[i-1]`` (0 = input features) and nodes without successors feed the output. Units are the
four op slots (depth 1, layer ``(op,)``); the link pattern is the global choice ``link`` (an
index into the package's 9 canonical patterns), because per-slot links would mostly be invalid
or duplicates. Keys are the package's canonical hashes, so they equal the benchmark's dictionary
keys. ``build_model`` gives a torch_geometric node classifier; ``load_bench`` reads the tables
shipped in the wheel. Graph, features and encodings: docs/spaces.md.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import nas_bench_graph
from nas_bench_graph.architecture import Arch as _BenchArch
from nas_bench_graph.architecture import gnn_list as _GNN_LIST
from nas_bench_graph.architecture import link_list as _LINK_LIST

from search_spaces.errors import EncodingError, UnknownNameError, suggest
from search_spaces.graph import ArchGraph, FeatureSpec

from .base import Arch, SearchSpace, UnitGraph, UnitSpec, graph_from_nodes

OPS = tuple(_GNN_LIST)
LINKS = tuple(tuple(lk) for lk in _LINK_LIST)
N_SLOTS = 4
_HASH_BASE = len(OPS) + 1  # the package hashes ops in base 10 (digit 9 is never used)
#: benchmark tables shipped in the wheel (``nas_bench_graph/light/*.bench``)
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins")


class NASBenchGraphSpace(SearchSpace):
    """The NAS-Bench-Graph space (registered as ``nasbench_graph``).

    Example:
        >>> space = NASBenchGraphSpace()
        >>> a = space.parse({"link": [0, 0, 1, 2], "ops": ["gcn", "gat", "skip", "fc"]})
        >>> space.format(a)["ops"], space.key(a) == space.key(space.parse(space.bench_hash(a)))
        (['gcn', 'gat', 'skip', 'fc'], True)
    """

    name = "nasbench_graph"
    description = "NAS-Bench-Graph: 4 GNN op slots (9 ops each) wired by one of 9 link patterns"
    features = (
        FeatureSpec("slot", "positional", ("input",) + tuple(range(N_SLOTS))),
        FeatureSpec("op", "categorical", ("input",) + OPS),
        FeatureSpec("link", "categorical", tuple(range(len(LINKS)))),
        FeatureSpec("is_output", "categorical", (0, 1)),
    )
    units = tuple(UnitSpec(f"slot{u}", (1,), tuple((op,) for op in OPS)) for u in range(N_SLOTS))
    global_choices = {"link": tuple(range(len(LINKS)))}
    default_input = {"in_chans": 64, "resolution": None, "num_classes": 7}

    # ---- encodings ---------------------------------------------------------------------------
    @staticmethod
    def link_of(arch: Arch) -> tuple[int, ...]:
        """The architecture's link pattern (one source node per slot).

        Args:
            arch: an ``Arch`` of this space.
        """
        return LINKS[arch.global_dict["link"]]

    @staticmethod
    def ops_of(arch: Arch) -> list[str]:
        """The architecture's four op names, slot by slot.

        Args:
            arch: an ``Arch`` of this space.
        """
        return [cfg[0][0] for cfg in arch.units]

    def _make(self, link: Any, ops: Any) -> Arch:
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)) or len(ops) != N_SLOTS:
            raise EncodingError(f"nasbench_graph: 'ops' must be a list of {N_SLOTS} op names from {list(OPS)}, got {ops!r}")
        for u, op in enumerate(ops):
            if not isinstance(op, str) or op not in OPS:
                raise EncodingError(f"nasbench_graph: slot {u} has unknown op {op!r}.{suggest(str(op), OPS)} Allowed ops: {', '.join(OPS)}")
        ops = list(ops)
        if isinstance(link, (int, np.integer)) and not isinstance(link, (bool, np.bool_)):
            if not 0 <= int(link) < len(LINKS):
                raise EncodingError(f"nasbench_graph: link index {link} is out of range 0..{len(LINKS) - 1} (patterns: {[list(lk) for lk in LINKS]})")
            idx = int(link)
        elif isinstance(link, (list, tuple)) and len(link) == N_SLOTS and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in link):
            lk = [int(v) for v in link]
            if any(not 0 <= v <= i for i, v in enumerate(lk)):
                raise EncodingError(f"nasbench_graph: link {lk} is invalid: slot i may only read from node 0..i (0 = input, k = slot k-1)")
            if tuple(lk) not in LINKS:  # relabel nodes onto one of the 9 canonical patterns
                reg = _BenchArch(lk, ops).regularize()
                lk, ops = list(reg.link), list(reg.ops)
            idx = LINKS.index(tuple(lk))
        else:
            raise EncodingError(f"nasbench_graph: 'link' must be an index 0..{len(LINKS) - 1} or a list of {N_SLOTS} ints, got {link!r}")
        return Arch.make([[(op,)] for op in ops], {"link": idx})

    def _from_hash(self, h: int) -> Arch:
        if h < 0:
            raise EncodingError(f"nasbench_graph: hash {h} is negative")
        rest, digits = h, []
        for _ in range(N_SLOTS):
            rest, d = divmod(rest, _HASH_BASE)
            digits.append(d)
        if rest >= len(LINKS) or any(d >= len(OPS) for d in digits):
            raise EncodingError(f"nasbench_graph: {h} is not a NAS-Bench-Graph hash (link*10^4 + four op digits 0..{len(OPS) - 1}, link 0..{len(LINKS) - 1})")
        return self._make(int(rest), [OPS[d] for d in reversed(digits)])

    def parse(self, obj: Any) -> Arch:
        """Parse a native encoding.

        Args:
            obj: ``{"link": [...] or index, "ops": [...]}`` (any of the 24 valid link patterns is
                regularised onto the 9), a ``(link, ops)`` pair, the package's hash int or digit
                string, a JSON string of the dict, or an ``Arch`` (validated).

        Raises:
            EncodingError: with the accepted forms and, for a misspelt op, a suggestion.
        """
        if isinstance(obj, Arch):
            return self.validate(obj)
        if isinstance(obj, (bool, np.bool_)):
            raise EncodingError(f"nasbench_graph: {obj!r} is not an architecture encoding")
        if isinstance(obj, (int, np.integer)):
            return self._from_hash(int(obj))
        if isinstance(obj, str):
            text = obj.strip()
            if text.isascii() and text.isdigit():
                return self._from_hash(int(text))
            try:
                obj = json.loads(text)
            except ValueError:
                raise EncodingError(f'nasbench_graph: cannot parse {obj!r}; give a hash int or a dict like {{"link": [0,0,1,2], "ops": ["gcn","gat","skip","fc"]}}') from None
            if isinstance(obj, str):
                raise EncodingError(f"nasbench_graph: cannot parse the JSON string {obj!r}; expected a dict or a hash")
            return self.parse(obj)
        if isinstance(obj, dict):
            missing = {"link", "ops"} - set(obj)
            if missing:
                raise EncodingError(f"nasbench_graph: dict encoding needs keys 'link' and 'ops'; missing {sorted(missing)}")
            return self._make(obj["link"], obj["ops"])
        if isinstance(obj, (list, tuple)) and len(obj) == 2:
            return self._make(obj[0], obj[1])
        raise EncodingError(f'nasbench_graph: cannot parse a {type(obj).__name__}; give {{"link": [...], "ops": [...]}}, a (link, ops) pair or a hash int')

    def format(self, arch: Arch) -> dict:
        """``{"link": [4 ints], "ops": [4 names]}``.

        Args:
            arch: an ``Arch`` of this space.
        """
        return {"link": list(self.link_of(arch)), "ops": self.ops_of(arch)}

    def bench_hash(self, arch: Arch) -> int:
        """The package's canonical hash: the benchmark's dictionary key for this architecture.

        Args:
            arch: an ``Arch`` of this space.
        """
        return int(_BenchArch(list(self.link_of(arch)), self.ops_of(arch)).valid_hash())

    def key(self, arch: Arch) -> str:
        """:meth:`bench_hash` as a string (isomorphic architectures share it).

        Args:
            arch: an ``Arch`` of this space.
        """
        return str(self.bench_hash(arch))

    # ---- graphs ------------------------------------------------------------------------------
    def _node(self, u: int, op: str, link_idx: int) -> dict:
        leaves = _leaves(LINKS[link_idx])
        return {"slot": u, "op": op, "link": link_idx, "is_output": int(u in leaves)}

    def to_graph(self, arch: Arch) -> ArchGraph:
        """Input node 0 and op nodes 1..4 with edges ``link[u] -> u+1``.

        Args:
            arch: an ``Arch`` of this space.
        """
        self.validate(arch)
        li = arch.global_dict["link"]
        nodes = [{"slot": "input", "op": "input", "link": li, "is_output": 0}]
        nodes += [self._node(u, op, li) for u, op in enumerate(self.ops_of(arch))]
        edges = [(src, u + 1) for u, src in enumerate(LINKS[li])]
        return graph_from_nodes(self.features, nodes, edges)

    def unit_graph(self, unit: int, config, globals: dict | None = None) -> UnitGraph:
        """The slot's op node alone, exit node 0 at hop 0 (its features are the whole unit).

        Args:
            unit: slot index 0..3.
            config: ``((op,),)``.
            globals: ``{"link": index}`` (default: the space's), which sets ``link`` and
                ``is_output``.
        """
        if not 0 <= unit < N_SLOTS:
            raise EncodingError(f"nasbench_graph: unit {unit} does not exist; units are 0..{N_SLOTS - 1}")
        config = tuple(tuple(layer) for layer in config)
        if len(config) != 1 or config[0] not in self.units[unit].layer_choices:
            raise EncodingError(f"nasbench_graph: unit {unit} is one layer (op,) with op in {list(OPS)}, got {config!r}")
        g = dict(self.default_globals())
        g.update(globals or {})
        li = g["link"]
        if li not in self.global_choices["link"]:
            raise EncodingError(f"nasbench_graph: global link={li!r} is not one of {list(self.global_choices['link'])}")
        graph = graph_from_nodes(self.features, [self._node(unit, config[0][0], li)], [])
        return UnitGraph(graph, 0, 0)

    # ---- real networks -----------------------------------------------------------------------
    def build_model(self, arch: Arch, num_classes: int = 7, in_chans: int = 64, resolution: int | None = None, hidden: int = 64, dropout: float = 0.5) -> nn.Module:
        """A node-classification GNN: ``model(x [N, in_chans], edge_index [2, E]) -> [N, num_classes]``.

        Args:
            arch: an ``Arch`` of this space.
            num_classes: output classes.
            in_chans: the node-feature dimension.
            resolution: ignored (graphs have none).
            hidden: hidden width (even: GAT splits it over 2 heads).
            dropout: dropout after every op.
        """
        self.validate(arch)
        return NASBenchGraphNet(self.link_of(arch), self.ops_of(arch), in_dim=in_chans, num_classes=num_classes, hidden=hidden, dropout=dropout)

    def count_params_flops(self, arch: Arch, num_classes: int | None = None, in_chans: int | None = None, resolution: int | None = None, num_nodes: int = 100) -> dict:
        """Parameters, and FLOPs on a synthetic ring graph (the base class would feed an image,
        which a GNN cannot take).

        Args:
            arch: an ``Arch`` of this space.
            num_classes: output classes (default: ``default_input``).
            in_chans: node-feature dimension (default: ``default_input``).
            resolution: ignored.
            num_nodes: nodes of the ring graph.

        Returns:
            ``{"params", "flops"}``.
        """
        from torch.utils.flop_counter import FlopCounterMode

        num_classes = num_classes or self.default_input["num_classes"]
        in_chans = in_chans or self.default_input["in_chans"]
        model = self.build_model(arch, num_classes=num_classes, in_chans=in_chans).eval()
        x = torch.zeros(num_nodes, in_chans)
        i = torch.arange(num_nodes)
        ei = torch.stack([torch.cat([i, (i + 1) % num_nodes]), torch.cat([(i + 1) % num_nodes, i])])
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x, ei)
        return {"params": int(sum(p.numel() for p in model.parameters())), "flops": int(fc.get_total_flops())}


def _leaves(link: tuple[int, ...]) -> set[int]:
    """Slots whose output nobody reads: they feed the network output."""
    read = {src - 1 for src in link if src > 0}
    return {u for u in range(len(link)) if u not in read}


# ---- the network ---------------------------------------------------------------------------------
class _Linear(nn.Module):
    """``fc``: a per-node linear map that ignores the graph (same call signature as the convs)."""

    def __init__(self, d: int):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, x, edge_index):
        return self.lin(x)


def _make_op(op: str, d: int) -> nn.Module | None:
    import torch_geometric.nn as gnn

    if op == "gat":
        return gnn.GATConv(d, d // 2, heads=2)  # 2 heads, concatenated back to d
    if op == "gcn":
        return gnn.GCNConv(d, d)
    if op == "gin":
        return gnn.GINConv(nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)))
    if op == "cheb":
        return gnn.ChebConv(d, d, K=2)
    if op == "sage":
        return gnn.SAGEConv(d, d)
    if op == "arma":
        return gnn.ARMAConv(d, d)
    if op == "graph":
        return gnn.GraphConv(d, d)  # the k-GNN layer
    if op == "fc":
        return _Linear(d)
    return None  # skip


class NASBenchGraphNet(nn.Module):
    """Linear pre-processing to ``hidden``, the 4-op DAG (each op followed by ReLU and dropout,
    ``skip`` passes through), the sum of the leaf nodes, and a linear classifier.

    Args:
        link: the link pattern.
        ops: the four op names.
        in_dim: node-feature dimension.
        num_classes: output classes.
        hidden: hidden width (even).
        dropout: dropout probability.
    """

    def __init__(self, link, ops, in_dim: int, num_classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        if hidden % 2:
            raise ValueError("hidden must be even (GAT splits it over 2 heads)")
        self.link, self.op_names = tuple(link), tuple(ops)
        self.leaves = sorted(_leaves(self.link))
        self.pre = nn.Linear(in_dim, hidden)
        made = [_make_op(op, hidden) for op in ops]
        self.ops = nn.ModuleList([nn.Identity() if m is None else m for m in made])
        self.dropout = nn.Dropout(dropout)
        self.post = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, num_classes]``.

        Args:
            x: node features ``[N, in_dim]``.
            edge_index: ``[2, E]`` edges of the input graph.
        """
        states = [self.dropout(torch.relu(self.pre(x)))]
        for src, name, op in zip(self.link, self.op_names, self.ops):
            h = states[src]
            if name != "skip":
                h = self.dropout(torch.relu(op(h, edge_index)))
            states.append(h)
        out = torch.stack([states[u + 1] for u in self.leaves]).sum(0)
        return self.post(out)


# ---- benchmark tables ----------------------------------------------------------------------------
def _bench_dir() -> Path:
    return Path(nas_bench_graph.__file__).resolve().parent / "light"


@lru_cache(maxsize=None)
def _load(dataset: str) -> dict[str, dict]:
    raw = nas_bench_graph.light_read(dataset)
    return {
        str(int(h)): {
            "acc": float(v["perf"]) * 100.0,
            "valid_acc": float(v["valid_perf"]) * 100.0,
            "latency_ms": float(v["latency"]) * 1000.0,
            "params": int(round(float(v["para"]) * 1e6)),
        }
        for h, v in raw.items()
    }


def load_bench(dataset: str) -> dict[str, dict]:
    """NAS-Bench-Graph's light table for ``dataset``: ``{key: {"acc", "valid_acc", "latency_ms", "params"}}``.

    Keys are :meth:`NASBenchGraphSpace.key` strings. The package's fractions, seconds and millions
    come back as %, ms and a parameter count (for ``proteins`` the "accuracy" is presumably
    ROC-AUC, the ogbn-proteins metric). The tables are pickles inside the installed wheel, read
    with the package's own ``light_read``: trusted package data, not user input. Results are
    cached per process; the outer dict is a fresh copy, the per-architecture dicts are shared and
    must not be mutated. Table sizes per dataset: docs/spaces.md.

    Args:
        dataset: one of ``DATASETS`` (case-insensitive).

    Raises:
        UnknownNameError: an unknown dataset, or one missing from the installed wheel.
    """
    name = str(dataset).lower()
    if name not in DATASETS or not (_bench_dir() / f"{name}.bench").exists():
        raise UnknownNameError("NAS-Bench-Graph dataset", dataset, DATASETS)
    return dict(_load(name))
