"""The contract every search space fulfils.

A space is described by data: its node-feature schema, its units (each a sequence of layers from
a fixed menu, of one of several depths) and its global choices (e.g. input resolution). The base
class derives what is the same for all spaces (enumeration, sampling, assembly, validation,
one-hot features, parameter/FLOP counts); a concrete space says how its encodings look, how an
architecture becomes a graph, which node and hop cover a unit, and how to build the network.
An :class:`Arch` holds one configuration (a tuple of layers, each a tuple of values) per unit
plus the global choices; everything is hashable. More: docs/spaces.md, docs/architecture.md.
"""

from __future__ import annotations

import itertools
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from search_spaces.errors import EncodingError
from search_spaces.graph import ArchGraph, FeatureSpec

Layer = tuple
Config = tuple  # tuple[Layer, ...]


@dataclass(frozen=True)
class Arch:
    """One architecture: a configuration per unit plus sorted (name, value) global choices.

    Attributes:
        units: one configuration per unit; a configuration is a tuple of layers, a layer a tuple
            of values (``(e, k)`` in MBConv spaces, ``("nor_conv_3x3",)`` for an NB-201 edge).
        globals: sorted ``(name, value)`` pairs; :attr:`global_dict` gives a dict.
    """

    units: tuple
    globals: tuple = ()

    @property
    def global_dict(self) -> dict[str, Any]:
        """The global choices as a dict."""
        return dict(self.globals)

    @staticmethod
    def make(units: Sequence[Sequence[Sequence]], globals: dict | None = None) -> "Arch":
        """Build an Arch from nested lists (converted to tuples) and a globals dict.

        Args:
            units: per unit, a sequence of layers, each a sequence of values.
            globals: global name -> value.

        Example:
            >>> Arch.make([[[3, 5], [6, 7]]], {"r": 224})
            Arch(units=(((3, 5), (6, 7)),), globals=(('r', 224),))
        """
        return Arch(tuple(tuple(tuple(layer) for layer in cfg) for cfg in units), tuple(sorted((globals or {}).items())))


@dataclass(frozen=True)
class UnitSpec:
    """A unit of a space.

    Attributes:
        name: shown in score tables.
        depths: allowed numbers of layers.
        layer_choices: the menu each layer is drawn from.
    """

    name: str
    depths: tuple
    layer_choices: tuple  # tuple[Layer, ...]

    def configs(self) -> Iterator[Config]:
        """Every configuration: all depths, shallowest first, layers in menu order."""
        for d in self.depths:
            yield from itertools.product(self.layer_choices, repeat=d)

    @property
    def n_configs(self) -> int:
        """Number of configurations over all depths."""
        return sum(len(self.layer_choices) ** d for d in self.depths)


@dataclass(frozen=True)
class UnitGraph:
    """A unit configuration as a standalone graph whose ``exit_node`` at ``hop`` scores exactly as
    the same node would inside any whole network containing that configuration.

    Attributes:
        graph: the unit's graph.
        exit_node: index of the node that covers the unit.
        hop: the message-passing hop at which that node covers exactly the unit.
    """

    graph: ArchGraph
    exit_node: int
    hop: int


class SearchSpace(ABC):
    """Narrow base class (Optuna-sampler style): subclasses fill in the abstract methods.

    Attributes:
        name: registry name.
        description: one line for ``autobuild spaces``.
        features: the node-feature schema (:class:`~search_spaces.graph.FeatureSpec` tuple).
        units: the :class:`UnitSpec` of every unit.
        global_choices: global name -> allowed values (the last is the default).
        default_input: ``in_chans``, ``resolution`` and ``num_classes`` used when not given.
    """

    name: str = ""
    description: str = ""
    features: tuple = ()  # tuple[FeatureSpec, ...]
    units: tuple = ()  # tuple[UnitSpec, ...]
    global_choices: dict = {}  # name -> tuple of allowed values
    default_input: dict = {"in_chans": 3, "resolution": 32, "num_classes": 10}

    # ---- native encodings -------------------------------------------------------------------
    @abstractmethod
    def parse(self, obj: Any) -> Arch:
        """Native encoding (string, dict, list, index...) -> Arch.

        Args:
            obj: any encoding the space documents, or an ``Arch`` (validated).

        Raises:
            EncodingError: the message says what is wrong and what is accepted.
        """

    @abstractmethod
    def format(self, arch: Arch) -> Any:
        """Arch -> the space's preferred native encoding (JSON-serialisable).

        Args:
            arch: an ``Arch`` of this space.
        """

    def key(self, arch: Arch) -> str:
        """Stable canonical key; spaces with an isomorphism notion override this.

        Args:
            arch: an ``Arch`` of this space.
        """
        return json.dumps(self.format(arch), sort_keys=True, separators=(",", ":"))

    # ---- graphs ----------------------------------------------------------------------------
    @abstractmethod
    def to_graph(self, arch: Arch) -> ArchGraph:
        """The whole architecture as a graph following ``self.features``.

        Args:
            arch: an ``Arch`` of this space.
        """

    @abstractmethod
    def unit_graph(self, unit: int, config: Config, globals: dict | None = None) -> UnitGraph:
        """Unit configuration as a small graph plus the node and hop that cover exactly it.

        Args:
            unit: unit index.
            config: the unit's configuration (a sequence of layers).
            globals: global choices the graph's features depend on (default: the space's).
        """

    def unit_graphs(self, unit: int, configs: Sequence[Config], globals: dict | None = None) -> list[UnitGraph]:
        """All configurations of a unit as graphs; spaces may override with a vectorised version.

        Args:
            unit: unit index.
            configs: the configurations.
            globals: global choices (default: the space's).
        """
        return [self.unit_graph(unit, c, globals) for c in configs]

    def unit_graph_set(self, unit: int, configs: Sequence[Config], globals: dict | None = None):
        """(GraphSet, exit_nodes, hops) of many configurations: what scoring consumes. The default
        collates ``unit_graphs``; spaces with thousands of configurations per unit override it.

        Args:
            unit: unit index.
            configs: the configurations.
            globals: global choices (default: the space's).
        """
        from search_spaces.graph import GraphSet

        ugs = self.unit_graphs(unit, configs, globals)
        return GraphSet([u.graph for u in ugs]), np.array([u.exit_node for u in ugs]), np.array([u.hop for u in ugs])

    def format_config(self, unit: int, config: Config) -> str:
        """Short human-readable label of a unit configuration (used in score tables and plots).

        Args:
            unit: unit index.
            config: the configuration.
        """
        return "-".join("/".join(str(v) for v in layer) for layer in config)

    # ---- real networks ---------------------------------------------------------------------
    @abstractmethod
    def build_model(self, arch: Arch, num_classes: int = 10, in_chans: int = 3, resolution: int | None = None):
        """A real ``torch.nn.Module`` for the architecture.

        Args:
            arch: an ``Arch`` of this space.
            num_classes: classifier outputs.
            in_chans: input channels.
            resolution: input resolution, for spaces whose module depends on it.
        """

    # ---- derived from the description ------------------------------------------------------
    def default_globals(self) -> dict:
        """Every global choice at its default, the last allowed value."""
        return {k: v[len(v) - 1] for k, v in self.global_choices.items()}

    def unit_configs(self, unit: int) -> list[Config]:
        """Every configuration of a unit (see :meth:`UnitSpec.configs`).

        Args:
            unit: unit index.
        """
        return list(self.units[unit].configs())

    def n_unit_configs(self) -> list[int]:
        """Number of configurations of each unit."""
        return [u.n_configs for u in self.units]

    def size(self) -> int:
        """Number of distinct encodings (before any isomorphism reduction)."""
        return math.prod(self.n_unit_configs()) * math.prod(len(v) for v in self.global_choices.values())

    def assemble(self, configs: Sequence[Config], globals: dict | None = None) -> Arch:
        """A validated Arch from one configuration per unit.

        Args:
            configs: one configuration per unit.
            globals: global choices; missing ones take their defaults.

        Raises:
            EncodingError: the result is not in the space.
        """
        g = dict(self.default_globals())
        g.update(globals or {})
        arch = Arch.make(configs, g)
        self.validate(arch)
        return arch

    def validate(self, arch: Arch) -> Arch:
        """Return ``arch`` if it lies in the space.

        Args:
            arch: the ``Arch`` to check.

        Raises:
            EncodingError: naming the unit, layer or global at fault.
        """
        if len(arch.units) != len(self.units):
            raise EncodingError(f"{self.name}: expected {len(self.units)} units, got {len(arch.units)}")
        for i, (cfg, spec) in enumerate(zip(arch.units, self.units)):
            if len(cfg) not in spec.depths:
                raise EncodingError(f"{self.name}: unit {i} ({spec.name}) has depth {len(cfg)}; allowed depths: {list(spec.depths)}")
            for j, layer in enumerate(cfg):
                if tuple(layer) not in spec.layer_choices:
                    raise EncodingError(
                        f"{self.name}: unit {i} ({spec.name}) layer {j} is {tuple(layer)}; allowed: {[tuple(c) for c in spec.layer_choices]}"
                    )
        gd = arch.global_dict
        for name, allowed in self.global_choices.items():
            if name not in gd:
                raise EncodingError(f"{self.name}: missing global choice {name!r} (allowed values {list(allowed)})")
            if gd[name] not in allowed:
                raise EncodingError(f"{self.name}: global {name!r}={gd[name]!r} is not one of {list(allowed)}")
        extra = set(gd) - set(self.global_choices)
        if extra:
            raise EncodingError(f"{self.name}: unknown global choice(s) {sorted(extra)}; known: {sorted(self.global_choices)}")
        return arch

    def contains(self, arch: Arch) -> bool:
        """Whether :meth:`validate` accepts ``arch``.

        Args:
            arch: the ``Arch`` to check.
        """
        try:
            self.validate(arch)
            return True
        except EncodingError:
            return False

    def sample(self, n: int, seed: int | np.random.Generator = 0, stratified: bool = False) -> list[Arch]:
        """``n`` architectures: per unit a uniform depth, then uniform layers (OFA's convention).

        Args:
            n: how many (duplicates are possible).
            seed: an int seed or a numpy Generator.
            stratified: cycle depths, layer choices and global values through shuffled orders so
                that, once ``n`` is at least the largest menu, every depth of every unit, every
                layer choice at every unit and every global value appears at least once.
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        out = []
        if not stratified:
            for _ in range(n):
                cfgs = []
                for spec in self.units:
                    d = spec.depths[rng.integers(len(spec.depths))]
                    cfgs.append(tuple(spec.layer_choices[rng.integers(len(spec.layer_choices))] for _ in range(d)))
                g = {k: v[rng.integers(len(v))] for k, v in self.global_choices.items()}
                out.append(Arch.make(cfgs, g))
            return out

        def cyc(m: int) -> np.ndarray:  # shuffled cover of range(m), repeated to length n
            reps = -(-n // m)
            return np.concatenate([rng.permutation(m) for _ in range(reps)])[:n]

        depth_idx = [cyc(len(s.depths)) for s in self.units]
        max_d = [max(s.depths) for s in self.units]
        layer_idx = [[cyc(len(s.layer_choices)) for _ in range(md)] for s, md in zip(self.units, max_d)]
        glob_idx = {k: cyc(len(v)) for k, v in self.global_choices.items()}
        for i in range(n):
            cfgs = []
            for u, spec in enumerate(self.units):
                d = spec.depths[depth_idx[u][i]]
                cfgs.append(tuple(spec.layer_choices[layer_idx[u][j][i]] for j in range(d)))
            g = {k: self.global_choices[k][glob_idx[k][i]] for k in self.global_choices}
            out.append(Arch.make(cfgs, g))
        return out

    def one_hot(self, arch: Arch) -> np.ndarray:
        """Fixed-length indicator vector (depth per unit, layer choice per unit slot, globals):
        the input of the ridge baseline that every ranker claim is measured against.

        Args:
            arch: an ``Arch`` of this space.
        """
        parts = []
        for cfg, spec in zip(arch.units, self.units):
            parts.append(np.array([len(cfg) == d for d in spec.depths], dtype=np.float32))
            for j in range(max(spec.depths)):
                v = np.zeros(len(spec.layer_choices), dtype=np.float32)
                if j < len(cfg):
                    v[spec.layer_choices.index(tuple(cfg[j]))] = 1.0
                parts.append(v)
        gd = arch.global_dict
        for name, allowed in self.global_choices.items():
            parts.append(np.array([gd.get(name) == a for a in allowed], dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    def count_params_flops(self, arch: Arch, num_classes: int | None = None, in_chans: int | None = None, resolution: int | None = None) -> dict:
        """Parameters and forward FLOPs (``torch.utils.flop_counter``) at batch size 1.

        Args:
            arch: an ``Arch`` of this space.
            num_classes: classifier outputs (default: ``default_input``).
            in_chans: input channels (default: ``default_input``).
            resolution: input size (default: the arch's ``r``, else ``default_input``).

        Returns:
            ``{"params", "flops"}``.
        """
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        num_classes = num_classes or self.default_input["num_classes"]
        in_chans = in_chans or self.default_input["in_chans"]
        res = resolution or arch.global_dict.get("r") or self.default_input["resolution"]
        model = self.build_model(arch, num_classes=num_classes, in_chans=in_chans, resolution=res).eval()
        params = sum(p.numel() for p in model.parameters())
        x = torch.zeros(1, in_chans, res, res)
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model(x)
        return {"params": int(params), "flops": int(fc.get_total_flops())}

    def describe(self) -> dict:
        """Name, description, units, globals, features and size, JSON-able."""
        return {
            "name": self.name,
            "description": self.description,
            "units": [{"name": u.name, "depths": list(u.depths), "n_layer_choices": len(u.layer_choices), "n_configs": u.n_configs} for u in self.units],
            "globals": {k: list(v) for k, v in self.global_choices.items()},
            "features": [f.to_dict() for f in self.features],
            "size": self.size(),
        }


def feature_row(features: Sequence[FeatureSpec], values: dict) -> tuple[list[int], list[float]]:
    """Encode one node's feature values (by feature name) into (x_cat row, x_cont row).

    Args:
        features: the space's schema.
        values: feature name -> value for this node.

    Raises:
        KeyError: a feature is missing.
        ValueError: a categorical value is not in its vocabulary.
    """
    cat, cont = [], []
    for f in features:
        if f.name not in values:
            raise KeyError(f"node is missing feature {f.name!r}")
        v = values[f.name]
        if f.is_categorical:
            cat.append(f.index(v))
        else:
            cont.append(float(v))
    return cat, cont


def chain_graph(features: Sequence[FeatureSpec], nodes: Sequence[dict]) -> ArchGraph:
    """A path graph (macro spaces: each block feeds the next).

    Args:
        features: the space's schema.
        nodes: per node, feature name -> value, in data-flow order.
    """
    rows = [feature_row(features, n) for n in nodes]
    edges = [(i, i + 1) for i in range(len(nodes) - 1)]
    return ArchGraph.from_rows([r[0] for r in rows], [r[1] for r in rows], edges)


def graph_from_nodes(features: Sequence[FeatureSpec], nodes: Sequence[dict], edges: Sequence[tuple[int, int]]) -> ArchGraph:
    """A graph of the given nodes and directed edges.

    Args:
        features: the space's schema.
        nodes: per node, feature name -> value.
        edges: ``(source, target)`` node indices, along the data flow.
    """
    rows = [feature_row(features, n) for n in nodes]
    return ArchGraph.from_rows([r[0] for r in rows], [r[1] for r in rows], edges)
