"""Search domains: a search space or a pruned space seen as categorical dimensions.

Every strategy needs the same few things from what it searches: categorical dimensions, indices
<-> :class:`Arch`, uniform sampling and one-dimension mutations. One adapter gives them for a full
:class:`~search_spaces.base.SearchSpace` and for a ``PrunedSpace``, so the same search runs inside
and outside the pruned space. Single-choice dimensions are left out; layer slots beyond a unit's
depth are inactive (never mutated, never suggested by Optuna).
"""

from __future__ import annotations

import itertools
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator, Sequence

import numpy as np

from search_spaces.base import Arch


@dataclass(frozen=True)
class Dimension:
    """One categorical decision. ``labels`` are unique strings, used as Optuna choices so that a
    study opened in optuna-dashboard shows readable values instead of bare indices."""

    name: str
    labels: tuple

    @property
    def size(self) -> int:
        return len(self.labels)


def _unique_labels(values: Sequence[Any], fmt: Callable[[Any], str]) -> tuple:
    labels = [fmt(v) for v in values]
    if len(set(labels)) != len(labels):  # never let a lossy label merge two choices
        labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
    return tuple(labels)


def _layer_label(layer: Sequence) -> str:
    return "/".join(str(v) for v in layer)


def _config_label(cfg: Sequence) -> str:
    return json.dumps([list(layer) for layer in cfg], separators=(",", ":"), default=str)


class Domain(ABC):
    """Categorical view of a searchable set of architectures.

    ``indices`` are full-length tuples (one entry per dimension, inactive ones included) so that
    strategies can keep genomes of fixed length; ``decode`` ignores inactive entries.
    """

    dims: tuple = ()
    #: the search space this domain views (None for a domain not built on one)
    space = None

    def __init__(self, key: Callable[[Arch], Hashable] | None = None):
        self._key = key

    def format(self, arch: Arch) -> str:
        """Human-readable architecture string (the space's ``format`` when there is a space)."""
        return self.space.format(arch) if self.space is not None else str(arch)

    # ---- contract ------------------------------------------------------------------------
    @abstractmethod
    def decode(self, indices: Sequence[int]) -> Arch:
        """Choice indices (one per dimension) -> architecture."""

    @abstractmethod
    def encode(self, arch: Arch) -> tuple | None:
        """Architecture -> choice indices, or None when the arch lies outside this domain."""

    @abstractmethod
    def _all_archs(self) -> Iterator[Arch]:
        """Every architecture of the domain once (only called on small domains)."""

    @property
    @abstractmethod
    def size(self) -> int:
        """Number of distinct architectures (before any isomorphism reduction)."""

    def active(self, indices: Sequence[int]) -> list[bool]:
        """Which dimensions change the architecture given these choices (all, by default)."""
        return [True] * len(self.dims)

    @property
    def controllers(self) -> list[int]:
        """Dimensions others' activity depends on; Optuna suggests these first."""
        return []

    # ---- derived ---------------------------------------------------------------------------
    def key(self, arch: Arch) -> Hashable:
        """Identity used for caching and duplicate detection (the arch itself unless a space's
        isomorphism key was supplied)."""
        return arch if self._key is None else self._key(arch)

    def contains(self, arch: Arch) -> bool:
        return self.encode(arch) is not None

    def admits(self, arch: Arch) -> bool:
        """Cheap check for an architecture built from this domain's own indices (a decoded
        neighbour or mutation): True unless the domain is a listed subset that lacks it."""
        return True

    def project(self, indices: Sequence[int], rng: np.random.Generator) -> Arch:
        """An architecture of the domain for choice indices that may decode to one it does not
        admit: the decoded one, or (a listed subset) the nearest listed one."""
        return self.decode(indices)

    def random_indices(self, rng: np.random.Generator) -> tuple:
        return tuple(int(rng.integers(d.size)) for d in self.dims)

    def random_arch(self, rng: np.random.Generator) -> Arch:
        return self.decode(self.random_indices(rng))

    def mutate_indices(self, indices: Sequence[int], rng: np.random.Generator) -> tuple:
        """Change one active dimension to a different value (REA's mutation). Dimensions that
        become active through the change (a deeper unit) get fresh random values, so a depth
        mutation does not always grow the unit with the same layer."""
        idx = list(indices)
        before = self.active(idx)
        cand = [i for i, (d, a) in enumerate(zip(self.dims, before)) if a and d.size > 1]
        if not cand:
            return tuple(idx)
        i = cand[int(rng.integers(len(cand)))]
        step = int(rng.integers(1, self.dims[i].size))
        idx[i] = (idx[i] + step) % self.dims[i].size
        after = self.active(idx)
        for j, (b, a) in enumerate(zip(before, after)):
            if a and not b:
                idx[j] = int(rng.integers(self.dims[j].size))
        return tuple(idx)

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        idx = self.encode(arch)
        if idx is None:
            raise ValueError("cannot mutate an architecture that lies outside the domain")
        return self.decode(self.mutate_indices(idx, rng))

    def enumerate(self, limit: int = 1_000_000) -> Iterator[Arch]:
        if self.size > limit:
            raise ValueError(f"domain has {self.size} architectures, more than the enumeration limit {limit}")
        return self._all_archs()

    def describe(self) -> dict:
        return {"kind": type(self).__name__, "size": self.size, "dims": {d.name: d.size for d in self.dims}}


class SpaceDomain(Domain):
    """A whole search space: per unit a depth dimension (when several depths are allowed) and one
    dimension per layer slot up to the maximum depth, then the global choices."""

    def __init__(self, space, key: Callable[[Arch], Hashable] | None = None):
        super().__init__(key)
        self.space = space
        dims: list[Dimension] = []
        self._unit_plan = []  # per unit: (depth_dim or None, fixed_depth, [slot dims], layer_choices)
        self._controllers = []
        for u, spec in enumerate(space.units):
            choices = tuple(tuple(c) for c in spec.layer_choices)
            depth_dim = None
            if len(spec.depths) > 1:
                depth_dim = len(dims)
                self._controllers.append(depth_dim)
                dims.append(Dimension(f"u{u}.depth", tuple(str(d) for d in spec.depths)))
            slots = []
            for j in range(max(spec.depths)):
                if len(choices) > 1:
                    slots.append(len(dims))
                    dims.append(Dimension(f"u{u}.l{j}", _unique_labels(choices, _layer_label)))
                else:
                    slots.append(None)
            self._unit_plan.append((depth_dim, tuple(spec.depths), slots, choices))
        self._globals = _plan_globals(space.global_choices, dims)
        self.dims = tuple(dims)

    @property
    def controllers(self) -> list[int]:
        return list(self._controllers)

    @property
    def size(self) -> int:
        return int(self.space.size())

    def _depth(self, u: int, idx: Sequence[int]) -> int:
        depth_dim, depths, _, _ = self._unit_plan[u]
        return depths[idx[depth_dim]] if depth_dim is not None else depths[0]

    def active(self, indices: Sequence[int]) -> list[bool]:
        act = [True] * len(self.dims)
        for u, (_, _, slots, _) in enumerate(self._unit_plan):
            d = self._depth(u, indices)
            for j, s in enumerate(slots):
                if s is not None and j >= d:
                    act[s] = False
        return act

    def decode(self, indices: Sequence[int]) -> Arch:
        cfgs = []
        for u, (_, _, slots, choices) in enumerate(self._unit_plan):
            d = self._depth(u, indices)
            cfgs.append(tuple(choices[indices[s]] if s is not None else choices[0] for s in slots[:d]))
        return Arch.make(cfgs, _decode_globals(indices, self._globals))

    def encode(self, arch: Arch) -> tuple | None:
        if len(arch.units) != len(self._unit_plan):
            return None
        idx = [0] * len(self.dims)
        for cfg, (depth_dim, depths, slots, choices) in zip(arch.units, self._unit_plan):
            if len(cfg) not in depths:
                return None
            if depth_dim is not None:
                idx[depth_dim] = depths.index(len(cfg))
            for j, layer in enumerate(cfg):
                layer = tuple(layer)
                if layer not in choices:
                    return None
                if slots[j] is not None:
                    idx[slots[j]] = choices.index(layer)
        return _encode_globals(arch, self._globals, idx)

    def _all_archs(self) -> Iterator[Arch]:
        unit_cfgs = [list(spec.configs()) for spec in self.space.units]
        gnames = list(self.space.global_choices)
        for cfgs in itertools.product(*unit_cfgs):
            for gv in itertools.product(*(self.space.global_choices[n] for n in gnames)):
                yield Arch.make(cfgs, dict(zip(gnames, gv)))


class PrunedDomain(Domain):
    """A pruned space: one dimension per unit over its kept configurations, plus globals.

    Works from the attributes a ``PrunedSpace`` exposes (``unit_choices``, ``global_choices``)
    so it does not depend on how the pruning was done.
    """

    def __init__(self, pruned, key: Callable[[Arch], Hashable] | None = None):
        super().__init__(key)
        self.pruned = pruned
        self.space = pruned.space
        self._units = [tuple(tuple(tuple(layer) for layer in cfg) for cfg in choices) for choices in pruned.unit_choices]
        if any(len(c) == 0 for c in self._units):
            raise ValueError("pruned space has a unit without any kept configuration")
        gc = dict(pruned.global_choices or {})
        dims: list[Dimension] = []
        self._unit_dims = []
        for u, cfgs in enumerate(self._units):
            if len(cfgs) > 1:
                self._unit_dims.append(len(dims))
                dims.append(Dimension(f"u{u}", _unique_labels(cfgs, _config_label)))
            else:
                self._unit_dims.append(None)
        self._globals = _plan_globals(gc, dims)
        self.dims = tuple(dims)
        self._index = [{cfg: i for i, cfg in enumerate(cfgs)} for cfgs in self._units]

    @property
    def size(self) -> int:
        return math.prod(len(c) for c in self._units) * math.prod(len(v) for _, _, v in self._globals)

    def decode(self, indices: Sequence[int]) -> Arch:
        cfgs = [cfgs[indices[d]] if d is not None else cfgs[0] for cfgs, d in zip(self._units, self._unit_dims)]
        return Arch.make(cfgs, _decode_globals(indices, self._globals))

    def encode(self, arch: Arch) -> tuple | None:
        if len(arch.units) != len(self._units):
            return None
        idx = [0] * len(self.dims)
        for cfg, lookup, d in zip(arch.units, self._index, self._unit_dims):
            i = lookup.get(tuple(tuple(layer) for layer in cfg))
            if i is None:
                return None
            if d is not None:
                idx[d] = i
        return _encode_globals(arch, self._globals, idx)

    def _all_archs(self) -> Iterator[Arch]:
        for idx in itertools.product(*(range(d.size) for d in self.dims)):
            yield self.decode(idx)


class SubsetDomain(Domain):
    """The listed architectures of another domain, e.g. the rows of a benchmark table that holds
    part of its space (NAS-Bench-Graph's proteins: 2,021 of 26,206 architectures), so that no
    evaluation is spent on an architecture that cannot be evaluated.

    The dimensions are the inner domain's, so every strategy runs unchanged: random draws take a
    listed architecture, mutations retry until they land on one (else a random listed one), and a
    proposal from outside (Optuna's samplers cannot be restricted) is replaced by the nearest
    listed architecture in Hamming distance over the dimensions (:meth:`project`).

    Args:
        inner: the domain the architectures come from (a space's or a pruned space's).
        archs: the allowed architectures; those outside ``inner`` and duplicates (by key) are dropped.
    """

    def __init__(self, inner: Domain, archs: Sequence[Arch]):
        super().__init__(inner.key)
        self.inner, self.space, self.dims = inner, inner.space, inner.dims
        self._archs, rows, self._keys = [], [], set()
        for a in archs:
            k, idx = inner.key(a), inner.encode(a)
            if idx is not None and k not in self._keys:
                self._keys.add(k)
                self._archs.append(a)
                rows.append(idx)
        if not self._archs:
            raise ValueError("none of the listed architectures lies in the domain searched")
        self._rows = np.asarray(rows, dtype=np.int64).reshape(len(rows), len(self.dims))
        self._act = np.asarray([inner.active(r) for r in rows], dtype=bool).reshape(self._rows.shape)

    @property
    def size(self) -> int:
        return len(self._archs)

    @property
    def controllers(self) -> list[int]:
        return self.inner.controllers

    def active(self, indices: Sequence[int]) -> list[bool]:
        return self.inner.active(indices)

    def decode(self, indices: Sequence[int]) -> Arch:
        return self.inner.decode(indices)

    def encode(self, arch: Arch) -> tuple | None:
        return self.inner.encode(arch) if self.inner.key(arch) in self._keys else None

    def admits(self, arch: Arch) -> bool:
        return self.inner.key(arch) in self._keys

    def _all_archs(self) -> Iterator[Arch]:
        return iter(list(self._archs))

    def random_indices(self, rng: np.random.Generator) -> tuple:
        return tuple(int(v) for v in self._rows[int(rng.integers(len(self._archs)))])

    def random_arch(self, rng: np.random.Generator) -> Arch:
        return self._archs[int(rng.integers(len(self._archs)))]

    def mutate_indices(self, indices: Sequence[int], rng: np.random.Generator, tries: int = 64) -> tuple:
        for _ in range(tries):
            idx = self.inner.mutate_indices(indices, rng)
            if tuple(idx) != tuple(indices) and self.admits(self.inner.decode(idx)):
                return idx
        return self.random_indices(rng)

    def project(self, indices: Sequence[int], rng: np.random.Generator) -> Arch:
        """The decoded architecture when listed, else the listed one closest to ``indices``
        (fewest differing active dimensions; ties broken at random)."""
        arch = self.inner.decode(indices)
        if self.admits(arch):
            return arch
        idx = np.asarray(indices, dtype=np.int64)
        act = np.asarray(self.inner.active(list(indices)), dtype=bool)
        dist = ((self._rows != idx) & (self._act | act)).sum(1)
        best = np.flatnonzero(dist == dist.min())
        return self._archs[int(best[int(rng.integers(len(best)))])]


def _plan_globals(global_choices: dict, dims: list) -> list:
    """(name, dim index or None, values) per global choice, appending a dimension to ``dims`` for
    each choice with more than one value (a single value needs no search dimension)."""
    plan = []
    for name, values in global_choices.items():
        values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
        if len(values) > 1:
            plan.append((name, len(dims), values))
            dims.append(Dimension(f"g.{name}", _unique_labels(values, str)))
        else:
            plan.append((name, None, values))
    return plan


def _decode_globals(indices: Sequence[int], globals_spec) -> dict:
    """Global choices of a decoded index vector (a global with one value has no dimension)."""
    return {name: (values[indices[dim]] if dim is not None else values[0]) for name, dim, values in globals_spec}


def _encode_globals(arch: Arch, globals_spec, idx: list) -> tuple | None:
    """Fill the global-choice dimensions of ``idx``; None when the arch's globals do not fit."""
    gd = arch.global_dict
    if set(gd) != {name for name, _, _ in globals_spec}:
        return None
    for name, dim, values in globals_spec:
        if gd[name] not in values:
            return None
        if dim is not None:
            idx[dim] = values.index(gd[name])
    return tuple(idx)


def as_domain(obj, key: Callable[[Arch], Hashable] | None = None, only: Sequence[Arch] | None = None) -> Domain:
    """A :class:`Domain` over ``obj``: a Domain (returned as is), a ``PrunedSpace`` or a ``SearchSpace``.

    Args:
        obj: what to search over.
        key: duplicate key of architectures (default: the space's isomorphism-aware key).
        only: when given, the domain holds only these architectures (:class:`SubsetDomain`).
    """
    from search_spaces.base import SearchSpace

    from ..build import PrunedSpace

    if isinstance(obj, Domain):
        dom = obj
    elif isinstance(obj, PrunedSpace):
        dom = PrunedDomain(obj, key=key)
    elif isinstance(obj, SearchSpace):
        dom = SpaceDomain(obj, key=key)
    else:
        raise TypeError(f"cannot search over {type(obj).__name__}: expected a SearchSpace, a PrunedSpace or a Domain")
    return dom if only is None else SubsetDomain(dom, only)
