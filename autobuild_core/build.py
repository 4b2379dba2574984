"""Building an architecture from the best-scored unit configurations, and pruning a space to the
top-k configurations of each unit (docs/method.md, "Building and pruning"; docs/scoring.md).

Global choices (resolution, a link pattern, ...) are not units: they are scored through the
FE-MLP coordinate of the node feature of the same name, when the space has one, and otherwise
left at the space's default.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from search_spaces.errors import ConfigError
from .importance import best_values
from .scoring import config_of


def best_globals(space, importance: pd.DataFrame | None) -> dict:
    """The space's default globals, with every global that has a same-named node feature set to
    its best-scored value (continuous values snapped to the nearest allowed one).

    Args:
        space: the search space.
        importance: the FE-MLP read-out of :func:`~autobuild_core.importance.feature_importance`,
            or None to keep the defaults.
    """
    g = dict(space.default_globals())
    if importance is not None and len(space.global_choices):
        for name, value in best_values(importance, list(space.global_choices)).items():
            allowed = space.global_choices[name]
            # continuous features may have been read out at values outside the menu: snap
            g[name] = value if value in allowed else min(allowed, key=lambda a: abs(float(a) - float(value)))
    return g


def _ranked_unit_configs(scores: pd.DataFrame, unit: int) -> pd.DataFrame:
    sub = scores[scores["unit"] == unit].sort_values("score", ascending=False, kind="stable")
    if sub.empty:
        raise ConfigError(f"The score table has no configurations for unit {unit}; score all units before building or pruning.")
    return sub


def build_arch(space, scores: pd.DataFrame, importance: pd.DataFrame | None = None, globals: dict | None = None):
    """The architecture made of every unit's top-scored configuration.

    Args:
        space: the search space.
        scores: the table of :func:`~autobuild_core.scoring.score_units` (every unit scored).
        importance: FE-MLP read-out used to choose the globals (see :func:`best_globals`).
        globals: global choices that override the chosen ones.

    Raises:
        ConfigError: a unit has no rows in ``scores``.

    Example:
        >>> scores = score_units(trained, space)  # doctest: +SKIP
        >>> space.format(build_arch(space, scores, feature_importance(trained, space)))  # doctest: +SKIP
    """
    configs = [config_of(_ranked_unit_configs(scores, u).iloc[0]["config"]) for u in range(len(space.units))]
    g = best_globals(space, importance)
    g.update(globals or {})
    return space.assemble(configs, g)


def rank_by_unit_scores(scores: pd.DataFrame, archs: Sequence) -> list:
    """``archs`` best first by summed unit score (a configuration the table lacks counts as the
    lowest score of its unit): building when only listed architectures can be evaluated.

    Args:
        scores: the table of :func:`~autobuild_core.scoring.score_units`.
        archs: the candidate architectures.
    """
    table: dict[int, dict] = {}
    for u, c, v in zip(scores["unit"], scores["config"], scores["score"]):
        table.setdefault(int(u), {})[config_of(c)] = float(v)
    floor = {u: min(d.values()) for u, d in table.items()}

    def total(a) -> float:
        return sum(table.get(u, {}).get(tuple(tuple(layer) for layer in cfg), floor.get(u, 0.0)) for u, cfg in enumerate(a.units))

    return sorted(archs, key=total, reverse=True)


@dataclass
class PrunedSpace:
    """The top-k configurations of each unit (best first) and the global choices kept
    (best first): a space of prod(k_u) * prod(|globals|) architectures.

    Attributes:
        space: the full space it was pruned from.
        unit_choices: per unit, the configurations kept, best first.
        unit_scores: per unit, their scores (same order).
        global_choices: per global name, the values kept, best first.
    """

    space: object
    unit_choices: list  # list[list[config]]
    unit_scores: list  # list[list[float]]
    global_choices: dict  # name -> tuple, best first

    @property
    def name(self) -> str:
        """The full space's name with the k of every unit."""
        return f"{self.space.name}[pruned k={','.join(str(len(c)) for c in self.unit_choices)}]"

    @property
    def size(self) -> int:
        """Number of architectures in the pruned space."""
        return math.prod(len(c) for c in self.unit_choices) * math.prod(len(v) for v in self.global_choices.values())

    def arch(self, indices: Sequence[int], globals: dict | None = None):
        """The architecture of one kept configuration per unit.

        Args:
            indices: per unit, an index into ``unit_choices[u]``.
            globals: global choices (default: the best kept value of each).
        """
        g = {k: v[0] for k, v in self.global_choices.items()}
        g.update(globals or {})
        return self.space.assemble([self.unit_choices[u][i] for u, i in enumerate(indices)], g)

    def contains(self, arch) -> bool:
        """Whether every unit configuration and global value of ``arch`` was kept.

        Args:
            arch: an :class:`~search_spaces.base.Arch` of the full space.
        """
        if any(cfg not in choices for cfg, choices in zip(arch.units, self.unit_choices)):
            return False
        gd = arch.global_dict
        return all(gd.get(k) in v for k, v in self.global_choices.items())

    def sample(self, n: int, seed: int | np.random.Generator = 0) -> list:
        """``n`` architectures drawn uniformly from the pruned space (with replacement).

        Args:
            n: how many.
            seed: an int seed or a numpy Generator.
        """
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        out = []
        for _ in range(n):
            idx = [int(rng.integers(len(c))) for c in self.unit_choices]
            g = {k: v[int(rng.integers(len(v)))] for k, v in self.global_choices.items()}
            out.append(self.arch(idx, g))
        return out

    def _unit_combos_by_score(self) -> Iterator[tuple]:
        """Index tuples in decreasing order of summed unit score (lazy best-first search)."""
        scores = self.unit_scores
        start = tuple(0 for _ in scores)
        heap = [(-sum(s[0] for s in scores), start)]
        seen = {start}
        while heap:
            neg, idx = heapq.heappop(heap)
            yield idx
            for u in range(len(idx)):
                if idx[u] + 1 < len(scores[u]):
                    nxt = idx[:u] + (idx[u] + 1,) + idx[u + 1 :]
                    if nxt not in seen:
                        seen.add(nxt)
                        heapq.heappush(heap, (neg + scores[u][idx[u]] - scores[u][idx[u] + 1], nxt))

    def enumerate_by_score(self, limit: int | None = None) -> Iterator:
        """Architectures in order of summed unit score; for each unit combination the global
        choices follow in their best-first order.

        Args:
            limit: stop after this many architectures (default: the whole pruned space).
        """
        names = list(self.global_choices)
        glob_combos = [dict(zip(names, vals)) for vals in itertools.product(*(self.global_choices[n] for n in names))]
        count = 0
        for idx in self._unit_combos_by_score():
            for g in glob_combos:
                if limit is not None and count >= limit:
                    return
                yield self.arch(idx, g)
                count += 1

    def describe(self) -> dict:
        """JSON-able description: space, size, k per unit, kept configurations with scores, globals."""
        return {
            "space": self.space.name,
            "size": self.size,
            "k": [len(c) for c in self.unit_choices],
            "units": [
                [{"config": [list(layer) for layer in c], "label": self.space.format_config(u, c), "score": float(s)} for c, s in zip(cs, ss)]
                for u, (cs, ss) in enumerate(zip(self.unit_choices, self.unit_scores))
            ],
            "globals": {k: list(v) for k, v in self.global_choices.items()},
        }

    def to_json(self) -> str:
        """:meth:`describe` as JSON text (what a run stores and :meth:`from_dict` reads back)."""
        return json.dumps(self.describe(), indent=1)

    @classmethod
    def from_dict(cls, space, d: dict) -> "PrunedSpace":
        """Rebuild a pruned space from :meth:`describe`'s output.

        Args:
            space: the full space; must be the one the description names.
            d: the dict of :meth:`describe` (e.g. ``json.loads(pruned.to_json())``).

        Raises:
            ConfigError: ``d`` was made for another space.
        """
        if d.get("space") != space.name:
            raise ConfigError(f"Pruned space was made for {d.get('space')!r}, not {space.name!r}.")
        choices = [[tuple(tuple(layer) for layer in row["config"]) for row in unit] for unit in d["units"]]
        scores = [[float(row["score"]) for row in unit] for unit in d["units"]]
        return cls(space, choices, scores, {k: tuple(v) for k, v in d["globals"].items()})


def prune_space(space, scores: pd.DataFrame, k: int | Sequence[int] = 5, importance: pd.DataFrame | None = None, keep_globals: str | int = "all") -> PrunedSpace:
    """Keep the top-``k`` configurations of each unit.

    Args:
        space: the search space.
        scores: the table of :func:`~autobuild_core.scoring.score_units` (every unit scored).
        k: configurations kept per unit: one number for all units or a list with one per unit.
        importance: FE-MLP read-out that orders the global values (None: the space's order,
            with its default first).
        keep_globals: ``"all"`` keeps every global value (best first), ``"best"`` only the
            best-scored one, an int that many.

    Raises:
        ConfigError: a bad ``k`` or ``keep_globals``, or a unit missing from ``scores``.

    Example:
        >>> pruned = prune_space(space, scores, k=3)  # doctest: +SKIP
        >>> pruned.size, next(pruned.enumerate_by_score())  # doctest: +SKIP
    """
    n_units = len(space.units)
    ks = [int(k)] * n_units if isinstance(k, (int, np.integer)) else [int(x) for x in k]
    if len(ks) != n_units or any(x < 1 for x in ks):
        raise ConfigError(f"prune.k must be a positive integer or a list of {n_units} positive integers (one per unit), got {k!r}.")
    choices, sc = [], []
    for u in range(n_units):
        sub = _ranked_unit_configs(scores, u).head(ks[u])
        choices.append([config_of(c) for c in sub["config"]])
        sc.append([float(s) for s in sub["score"]])
    best = best_globals(space, importance)
    globs = {}
    for name, allowed in space.global_choices.items():
        order = list(allowed)
        if importance is not None:
            sub = importance[importance["feature"] == name]
            val_score = {v: s for v, s in zip(sub["value"], sub["score"])}
            order.sort(key=lambda a: -val_score.get(a, -np.inf))
        order.remove(best[name])
        order.insert(0, best[name])
        if keep_globals == "best":
            order = order[:1]
        elif isinstance(keep_globals, int):
            order = order[: max(1, keep_globals)]
        elif keep_globals != "all":
            raise ConfigError(f"prune.keep_globals must be 'all', 'best' or a positive integer, got {keep_globals!r}.")
        globs[name] = tuple(order)
    return PrunedSpace(space, choices, sc, globs)


def log_scaled_k(unit_sizes: Sequence[int], target_size: float) -> list[int]:
    """Per-unit k with prod(k) close to ``target_size`` and every unit keeping the same fraction
    of its menu on a log scale (k_u = n_u ** a): a unit with 125 configurations keeps more than
    one with 5, and equal units keep equal k.

    Args:
        unit_sizes: number of configurations of each unit.
        target_size: the wanted size of the pruned space (every unit is kept whole when the
            full space is no larger).

    Example:
        >>> log_scaled_k([5, 25, 125], 125)
        [2, 5, 13]
    """
    sizes = [max(1, int(n)) for n in unit_sizes]
    total = math.prod(sizes)
    if target_size >= total:
        return sizes
    best, best_err = [1] * len(sizes), math.inf
    for a in np.linspace(0.0, 1.0, 201):
        ks = [min(n, max(1, int(round(n ** a)))) for n in sizes]
        err = abs(math.log(math.prod(ks)) - math.log(max(1.0, target_size)))
        if err < best_err - 1e-12:
            best, best_err = ks, err
    return best
