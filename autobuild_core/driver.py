"""The AutoBuild driver: seeds -> ranker -> unit scores -> build/prune -> search, implemented once.

`autobuild run` wraps each step in a Prefect task (persisted, resumable, tracked) and
`autobuild bench search` calls :meth:`AutoBuild.run` with a table lookup as the objective; both
take :class:`AutoBuildSettings`, whose defaults are the best settings measured (docs/results.md)
and whose ``paper`` preset reproduces the paper's protocol. Nothing here touches files, Prefect or
MLflow: every step takes and returns values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from search_spaces.errors import ConfigError, suggest

from .settings import RankerConfig, TrainConfig

Objective = Callable[[list], list]  # list[Arch] -> list[tuple | None]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SeedSettings(_Settings):
    """The first architectures evaluated: what the first ranker learns from."""

    n: int = Field(10, ge=2, description="Seed architectures evaluated before the first ranker is trained (they count against search.budget).")
    stratified: bool = Field(True, description="Stratified sampling (every unit depth and layer choice covered evenly) instead of uniform.")


class PruneSettings(_Settings):
    """Pruning the space to the best-scored configurations of each unit."""

    enabled: bool = Field(True, description="Prune the space to the top-k configurations of each unit.")
    k: Union[Literal["auto"], int, list[int]] = Field(
        "auto", description="Configurations kept per unit: one number, one per unit, or 'auto' (every unit keeps the same "
        "log-scaled share of its menu, sized to factor x the evaluations left).")
    factor: float = Field(4.0, gt=0, description="With k='auto': the pruned space holds about factor x the evaluations left.")
    scoring: Literal["paper", "marginal"] = Field(
        "paper", description="Unit scores: 'paper' (exit-node embedding norm mapped to unit moments) or 'marginal' (mean "
        "predicted target over paired contexts).")

    @field_validator("k")
    @classmethod
    def _positive(cls, v):
        if v == "auto":
            return v
        vals = v if isinstance(v, list) else [v]
        if not vals or any(int(x) < 1 for x in vals):
            raise ValueError("k must be 'auto', a positive integer or a non-empty list of positive integers")
        return v


class BuildSettings(_Settings):
    """Building architectures from the top-scored unit configurations."""

    enabled: bool = Field(True, description="Build the architecture of top-scored configurations and evaluate it.")
    n: int = Field(1, ge=1, description="Architectures built: the top-scored one, then the next best by summed unit score.")


class SearchSettings(_Settings):
    """The search that spends the rest of the budget."""

    enabled: bool = Field(True, description="Search after seeds and building (off: stop after the build).")
    method: str = Field("autobuild", description="Search method (`autobuild_core.search.list_methods()`): autobuild (iterative, "
                        "ranker-guided, the default), predictor, tpe, rea, random, nsga2, ordered.")
    budget: int = Field(100, ge=1, description="Unique evaluations of the whole run: seeds and built architectures included.")
    space: Literal["pruned", "full"] = Field(
        "pruned", description="Where a non-iterative method searches: the pruned space or the full space. The iterative "
        "methods always search the full space and re-prune it each round.")
    batch_size: int = Field(1, ge=1, description="Architectures proposed per evaluation call (larger: fewer, bigger remote batches).")
    options: dict[str, Any] = Field(default_factory=dict, description="Settings of the search strategy: for autobuild/predictor the "
                                    "fields of IterativeSettings (autobuild_core/search/autobuild.py), else the strategy's options.")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        from .search.strategies import STRATEGIES

        if v not in STRATEGIES:
            raise ValueError(f"unknown search method {v!r}.{suggest(v, STRATEGIES.names())} Known methods: {', '.join(STRATEGIES.names())}")
        return STRATEGIES.canonical(v)


ITERATIVE_METHODS = ("autobuild", "predictor")


class AutoBuildSettings(_Settings):
    """Every setting of the method; one object shared by `autobuild run` and `autobuild bench`.

    Example:
        >>> s = AutoBuildSettings.preset("paper")
        >>> s.train.lr, s.search.method
        (0.0001, 'tpe')
    """

    seeds: SeedSettings = Field(default_factory=SeedSettings, description="Seed architectures.")
    ranker: RankerConfig = Field(default_factory=RankerConfig, description="Ranker architecture.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Ranker training.")
    prune: PruneSettings = Field(default_factory=PruneSettings, description="Space pruning.")
    build: BuildSettings = Field(default_factory=BuildSettings, description="Building from top-scored configurations.")
    search: SearchSettings = Field(default_factory=SearchSettings, description="Search.")

    @classmethod
    def preset(cls, name: str = "default") -> "AutoBuildSettings":
        """Named settings: ``default`` (best measured) or ``paper`` (the paper's protocol: 300 seeds,
        lr 1e-4 for 200 epochs, top-5 pruning, TPE in the pruned space)."""
        return cls.model_validate(preset_overrides(name))


def preset_overrides(name: str) -> dict:
    """The nested dict of settings that preset ``name`` changes from the defaults."""
    if name == "default":
        return {}
    if name == "paper":
        return {"seeds": {"n": 300}, "train": TrainConfig.preset("paper").model_dump(),
                "prune": {"k": 5, "scoring": "paper"}, "search": {"method": "tpe", "budget": 350, "space": "pruned"}}
    raise ConfigError(f"Unknown preset {name!r}. Known presets: default, paper.")


PRESETS = ("default", "paper")


@dataclass
class AutoBuildResult:
    """What :meth:`AutoBuild.run` found: ``history`` holds every evaluation in order (``arch``,
    ``values``, ``n_eval``, ``source``); ``search`` is the search step's result (None when off)."""

    seeds: list
    ranker: Any
    scores: Any
    importance: Any
    built: list
    pruned: Any
    search: Any
    history: list = field(default_factory=list)
    directions: tuple = ("maximize",)

    @property
    def best(self) -> dict | None:
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        ok = [r for r in self.history if r["values"] is not None]
        return max(ok, key=lambda r: sign * r["values"][0]) if ok else None


class AutoBuild:
    """The method's steps over one space and one objective.

    Args:
        space: a :class:`~search_spaces.base.SearchSpace`.
        objective: ``objective(list[Arch]) -> list[tuple | None]`` (one value per direction; None
            for a failed evaluation). Called with new architectures only.
        settings: :class:`AutoBuildSettings` (defaults when None).
        directions: "maximize"/"minimize" per objective value; the ranker learns the first.
        seed: seed of sampling, training and search.
        key: duplicate key of architectures (default: the space's key).
        only: the only architectures that can be evaluated (a table that holds part of the space,
            :func:`evaluators.partial_table_archs`): seeds and searches draw from them alone, so no
            evaluation is spent on an architecture the objective cannot answer. None: the whole space.

    Example:
        >>> ab = AutoBuild(space, lambda archs: [(acc(a),) for a in archs], AutoBuildSettings())  # doctest: +SKIP
        >>> ab.run().best["values"]  # doctest: +SKIP
    """

    def __init__(self, space, objective: Objective, settings: AutoBuildSettings | None = None,
                 directions: Sequence[str] = ("maximize",), seed: int = 0, key: Callable | None = None,
                 only: Sequence | None = None):
        self.space, self.objective = space, objective
        self.settings = settings or AutoBuildSettings()
        self.directions, self.seed = tuple(directions), int(seed)
        self.key = key or space.key
        self.only = None if only is None else list(only)

    # ---- steps --------------------------------------------------------------------------------
    def sample_seeds(self, pool: Sequence | None = None) -> list:
        """``seeds.n`` distinct seed architectures: sampled from the space, or drawn from ``pool``
        (e.g. the architectures a table holds; by default ``only`` when it is given)."""
        n = self.settings.seeds.n
        pool = self.only if pool is None else pool
        if pool is not None:
            pool = list(pool)
            rng = np.random.default_rng(self.seed)
            if len(pool) > n:
                pool = [pool[i] for i in sorted(rng.choice(len(pool), n, replace=False))]
            return self._distinct(pool)
        return self._distinct(self.space.sample(n, seed=self.seed, stratified=self.settings.seeds.stratified))

    def training_set(self, history: Sequence[dict]) -> tuple[list, np.ndarray]:
        """Distinct architectures with a value, and the first objective oriented so larger is better."""
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        archs, y, seen = [], [], set()
        for r in history:
            if r["values"] is None:
                continue
            k = self.key(r["arch"])
            if k not in seen:
                seen.add(k)
                archs.append(r["arch"])
                y.append(sign * float(r["values"][0]))
        return archs, np.asarray(y, dtype=float)

    def skips_seed_ranker(self, n_ok: int) -> bool:
        """Whether the seed ranker (and with it scoring, building and pruning) is skipped when
        ``n_ok`` seeds have a value: only when there are too few to train one and the search is
        iterative, which trains its own rankers once enough of its evaluations succeed (e.g. a
        table that holds part of the space). Otherwise :meth:`fit_ranker` says what to fix."""
        from .train import MIN_TRAINING_ARCHS

        s = self.settings.search
        return n_ok < MIN_TRAINING_ARCHS and s.enabled and s.method in ITERATIVE_METHODS

    def fit_ranker(self, archs: Sequence, y: Sequence[float], on_epoch: Callable | None = None):
        """Train the ranker (``settings.ranker``/``settings.train``) on ``archs`` labelled ``y``."""
        from .train import MIN_TRAINING_ARCHS, train_ranker

        if len(archs) < MIN_TRAINING_ARCHS:
            raise ConfigError(f"only {len(archs)} seed architectures were evaluated successfully; the ranker needs at least "
                              f"{MIN_TRAINING_ARCHS}. Raise seeds.n or fix the failing evaluations.")
        train = self.settings.train.model_copy(update={"seed": self.seed})
        return train_ranker(self.space, list(archs), np.asarray(y, dtype=float), ranker=self.settings.ranker,
                            train=train, on_epoch=on_epoch)

    def score(self, trained, archs: Sequence | None = None) -> tuple[Any, Any]:
        """Unit scores of every unit configuration and the FE-MLP read-out: ``(scores, importance)``;
        given ``archs`` (e.g. the training set), the read-out's ``count`` and ``spread`` are filled in."""
        from .importance import fe_mlp_readout
        from .scoring import score_units

        scores = score_units(trained, self.space, method=self.settings.prune.scoring, seed=self.seed)
        return scores, fe_mlp_readout(trained, self.space, archs)

    def effects(self, trained):
        """The ranker's estimate of each feature value's effect on the target, with intervals
        (:func:`~autobuild_core.importance.op_effects`)."""
        from .importance import op_effects

        return op_effects(trained, self.space, seed=self.seed)

    def build(self, scores, importance) -> list:
        """``build.n`` architectures of top-scored configurations (empty when building is off); with
        ``only``, the listed architectures of highest summed unit score."""
        from .build import build_arch, prune_space, rank_by_unit_scores

        b = self.settings.build
        if not b.enabled:
            return []
        if self.only is not None:
            return self._distinct(rank_by_unit_scores(scores, self.only))[: b.n]
        built = [build_arch(self.space, scores, importance)]
        if b.n > 1:
            for a in prune_space(self.space, scores, k=b.n, importance=importance).enumerate_by_score(limit=b.n * 4):
                built.append(a)
        return self._distinct(built)[: b.n]

    def prune(self, scores, importance, remaining: int):
        """The pruned space (None when pruning is off); ``remaining`` evaluations size k='auto'."""
        from .build import log_scaled_k, prune_space

        p = self.settings.prune
        if not p.enabled:
            return None
        k = log_scaled_k(self.space.n_unit_configs(), p.factor * max(1, remaining)) if p.k == "auto" else p.k
        return prune_space(self.space, scores, k=k, importance=importance)

    def search(self, history: Sequence[dict], pruned=None, **kwargs: Any):
        """Spend the rest of ``search.budget`` (``history`` counts first) with ``search.method``.

        ``kwargs`` go to :func:`~autobuild_core.search.run_search` (``on_trial``, ``storage``,
        ``study_name``, and strategy options such as ``on_round``).
        """
        from .search import as_domain, run_search

        s = self.settings.search
        iterative = s.method in ITERATIVE_METHODS
        where = self.space if iterative or pruned is None or s.space == "full" else pruned
        options = {"settings": dict(s.options)} if iterative else dict(s.options)
        options.update(kwargs)
        initial = [(r["arch"], r["values"]) for r in history]
        only = self.only
        if only is not None and where is not self.space:
            only = [a for a in only if where.contains(a)]
            if not only:  # the pruned space holds none of the listed architectures: search all of them
                where, only = self.space, self.only
        domain = as_domain(where, key=self.key, only=only)
        if where is pruned and pruned.size <= s.budget - len(initial):  # evaluate the whole pruned space best-first
            s_method, options["order"] = "ordered", [a for a in pruned.enumerate_by_score() if domain.admits(a)]
        else:
            s_method = s.method
        return run_search(s_method, domain, self.objective, s.budget, self.seed,
                          directions=self.directions, initial=initial, batch_size=s.batch_size, **options)

    # ---- all of it ----------------------------------------------------------------------------
    def evaluate(self, archs: Sequence, history: list, source: str) -> list:
        """Evaluate the architectures of ``archs`` not in ``history`` (within the budget) and append them."""
        seen = {self.key(r["arch"]) for r in history}
        todo = [a for a in self._distinct(archs) if self.key(a) not in seen][: max(0, self.settings.search.budget - len(history))]
        for a, v in zip(todo, self.objective(todo) if todo else []):
            vals = None if v is None else tuple(float(x) for x in (v if isinstance(v, (tuple, list)) else (v,)))
            if vals is not None and any(not math.isfinite(x) for x in vals):
                vals = None
            history.append({"arch": a, "values": vals, "n_eval": len(history) + 1, "source": source})
        return history

    def run(self) -> AutoBuildResult:
        """Seeds -> ranker -> scores -> build -> prune -> search; returns everything it found."""
        history: list = []
        seeds = self.sample_seeds()
        self.evaluate(seeds, history, "seed")
        archs, y = self.training_set(history)
        if self.skips_seed_ranker(len(archs)):
            trained = scores = importance = pruned = None
            built: list = []
        else:
            trained = self.fit_ranker(archs, y)
            scores, importance = self.score(trained)
            built = self.build(scores, importance)
            self.evaluate(built, history, "built")
            pruned = self.prune(scores, importance, self.settings.search.budget - len(history))
        result = None
        if self.settings.search.enabled and len(history) < self.settings.search.budget:
            result = self.search(history, pruned)
            history = [dict(r) for r in result.history]
        return AutoBuildResult(seeds, trained, scores, importance, built, pruned, result, history, self.directions)

    def _distinct(self, archs: Sequence) -> list:
        out, seen = [], set()
        for a in archs:
            k = self.key(a)
            if k not in seen:
                seen.add(k)
                out.append(a)
        return out
