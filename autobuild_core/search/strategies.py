"""Search strategies behind one narrow interface (Optuna-sampler style).

A strategy only proposes (``ask``) and learns (``tell``); the driver in :mod:`.runner` owns the
evaluation budget, the cache of already evaluated architectures and the batching of objective
calls. That split is what makes budgets comparable across methods: no strategy can spend an
evaluation on an architecture that was evaluated before, whatever it proposes.

``tell`` also receives answers for proposals that were duplicates (``duplicate=True``): model
based strategies (TPE) must finish every trial they opened, while population based ones (REA)
ignore them so that the population does not fill with clones.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, Iterable, Sequence

import numpy as np

from search_spaces.errors import ConfigError
from search_spaces.registry import Registry
from search_spaces.base import Arch

from .domain import Domain

Values = tuple  # tuple[float, ...]


class SearchStrategy(ABC):
    """Proposes architectures of ``domain``; sees every evaluation result through ``tell``."""

    name: str = ""
    multi_objective: bool = True  # whether it makes sense with several directions
    #: takes ``storage``, ``study_name`` and ``formatter`` (a study that persists between sessions)
    persistent: bool = False

    def __init__(self, domain: Domain, directions: Sequence[str], seed: int, budget: int, **options: Any):
        if options:
            raise ConfigError(f"search method {self.name!r} does not take option(s) {sorted(options)}")
        if len(directions) > 1 and not self.multi_objective:
            raise ConfigError(
                f"search method {self.name!r} optimises a single objective but {len(directions)} directions were given; "
                "use 'nsga2' (or 'random') for Pareto searches."
            )
        self.domain = domain
        self.directions = tuple(directions)
        self.seed = int(seed)
        self.budget = int(budget)
        self.rng = np.random.default_rng(self.seed)

    @abstractmethod
    def ask(self) -> Arch:
        """One proposal (may be a duplicate; the driver answers those from its cache)."""

    def tell(self, arch: Arch, values: Values | None, duplicate: bool = False) -> None:
        """Result of a proposal made by ``ask``; ``values`` None means the evaluation failed."""

    def observe(self, arch: Arch, values: Values | None) -> None:
        """Result for an architecture the strategy did not propose (initial archs, random
        fallbacks after repeated duplicates, earlier runs). Defaults to ``tell``."""
        self.tell(arch, values)

    @property
    def study_name(self) -> str | None:
        """Name of the persisted study (None for strategies that keep no study)."""
        return None

    def prior(self) -> list[tuple[Arch, Values | None]]:
        """Evaluations already made in an earlier session (persisted studies); counted by the
        driver against the budget."""
        return []

    def _score(self, values: Values) -> float:
        """First objective as 'larger is better' (used by single-objective strategies)."""
        v = float(values[0])
        return v if self.directions[0] == "maximize" else -v


class RandomSearch(SearchStrategy):
    """Uniform sampling of the domain: the baseline every other strategy must beat."""

    name = "random"

    def ask(self) -> Arch:
        return self.domain.random_arch(self.rng)


class RegularizedEvolution(SearchStrategy):
    """Regularized (aging) evolution, Real et al. 2019.

    Random individuals fill the population; afterwards each proposal is a one-dimension mutation
    of the best of ``sample_size`` individuals drawn from the population, and the oldest
    individual leaves when a new one enters. Aging (rather than removing the worst) keeps the
    search from settling on one lucky evaluation. Defaults scale with the budget so that at small
    budgets evolution starts after a few random rounds instead of never: population
    ``clip(budget // 5, 5, 50)``, sample size ``max(2, population // 3)``.
    """

    name = "rea"
    multi_objective = False

    def __init__(self, domain, directions, seed, budget, population_size: int | None = None, sample_size: int | None = None):
        super().__init__(domain, directions, seed, budget)
        self.population_size = int(population_size or int(np.clip(budget // 5, 5, 50)))
        self.sample_size = int(sample_size or max(2, self.population_size // 3))
        if self.population_size < 1 or self.sample_size < 1:
            raise ConfigError("REA population_size and sample_size must be at least 1")
        self.population: deque = deque()  # (indices, score)

    def ask(self) -> Arch:
        if len(self.population) < self.population_size:
            return self.domain.random_arch(self.rng)
        pool = list(self.population)
        picks = self.rng.choice(len(pool), size=min(self.sample_size, len(pool)), replace=False)
        parent = max((pool[i] for i in picks), key=lambda item: item[1])
        return self.domain.decode(self.domain.mutate_indices(parent[0], self.rng))

    def tell(self, arch: Arch, values: Values | None, duplicate: bool = False) -> None:
        if duplicate or values is None:
            return
        idx = self.domain.encode(arch)
        if idx is None:  # an initial arch outside a pruned domain cannot be a parent
            return
        self.population.append((idx, self._score(values)))
        while len(self.population) > self.population_size:
            self.population.popleft()


class OrderedSearch(SearchStrategy):
    """Proposes architectures in a given order (e.g. a pruned space by summed unit score), then
    falls back to random sampling once the order is used up."""

    name = "ordered"

    def __init__(self, domain, directions, seed, budget, order: Iterable[Arch] | None = None):
        super().__init__(domain, directions, seed, budget)
        self._order = iter(order if order is not None else domain.enumerate())

    def ask(self) -> Arch:
        for arch in self._order:
            return arch
        return self.domain.random_arch(self.rng)


class _OptunaStrategy(SearchStrategy):
    """Shared ask/tell plumbing for Optuna samplers.

    Parameters are suggested define-by-run: controller dimensions (unit depths) first, then only
    the layer slots active at that depth, so TPE models conditional choices correctly and a study
    in optuna-dashboard lists only parameters that matter. The architecture's readable encoding
    is stored as a user attribute of each trial.
    """

    persistent = True

    def __init__(self, domain, directions, seed, budget, storage: str | None = None, study_name: str | None = None, formatter=None):
        super().__init__(domain, directions, seed, budget)
        import optuna
        from optuna.distributions import CategoricalDistribution

        self._optuna = optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._dist = [CategoricalDistribution(list(d.labels)) for d in domain.dims]
        self._label_index = [{lab: i for i, lab in enumerate(d.labels)} for d in domain.dims]
        self._formatter = formatter
        self.study = optuna.create_study(
            storage=storage,
            sampler=self._make_sampler(),
            study_name=study_name,
            directions=list(directions),
            load_if_exists=storage is not None and study_name is not None,
        )
        self._pending: dict[Any, list] = {}

    def _make_sampler(self):
        raise NotImplementedError

    @property
    def study_name(self) -> str:
        return self.study.study_name

    def _params(self, idx: Sequence[int]) -> dict:
        act = self.domain.active(idx)
        return {d.name: d.labels[i] for d, i, a in zip(self.domain.dims, idx, act) if a}

    def _user_attrs(self, arch: Arch, duplicate: bool = False, source: str = "search") -> dict:
        attrs = {"source": source}
        if duplicate:
            attrs["duplicate"] = True
        if self._formatter is not None:
            try:
                attrs["arch"] = self._formatter(arch)
            except Exception:  # a display nicety must never break a search
                attrs["arch"] = repr(arch)
        return attrs

    def ask(self) -> Arch:
        trial = self.study.ask()
        idx = [0] * len(self.domain.dims)
        for i in self.domain.controllers:
            idx[i] = self._label_index[i][trial.suggest_categorical(self.domain.dims[i].name, self._dist[i].choices)]
        act = self.domain.active(idx)
        ctrl = set(self.domain.controllers)
        for i, d in enumerate(self.domain.dims):
            if i not in ctrl and act[i]:
                idx[i] = self._label_index[i][trial.suggest_categorical(d.name, self._dist[i].choices)]
        arch = self.domain.decode(idx)
        if not self.domain.admits(arch):  # a listed subset lacks it: close the trial, propose the nearest listed one
            trial.set_user_attr("outside", True)
            self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
            return self.domain.project(idx, self.rng)
        self._pending.setdefault(self.domain.key(arch), []).append(trial)
        return arch

    def tell(self, arch: Arch, values: Values | None, duplicate: bool = False) -> None:
        trials = self._pending.get(self.domain.key(arch))
        if not trials:
            if not duplicate:
                self.observe(arch, values)
            return
        trial = trials.pop(0)
        if not trials:
            del self._pending[self.domain.key(arch)]
        for k, v in self._user_attrs(arch, duplicate).items():
            trial.set_user_attr(k, v)
        if values is None:
            self.study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, list(values))

    def observe(self, arch: Arch, values: Values | None) -> None:
        idx = self.domain.encode(arch)
        if idx is None or values is None:
            return  # outside the domain (e.g. a seed outside the pruned space): nothing to learn
        params = self._params(idx)
        dists = {d.name: self._dist[i] for i, d in enumerate(self.domain.dims) if d.name in params}
        trial = self._optuna.trial.create_trial(
            params=params, distributions=dists, values=list(values), user_attrs=self._user_attrs(arch, source="observed")
        )
        self.study.add_trial(trial)

    def prior(self) -> list[tuple[Arch, Values | None]]:
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get("duplicate") or t.user_attrs.get("outside") or t.state.name not in ("COMPLETE", "FAIL"):
                continue
            idx = [0] * len(self.domain.dims)
            try:
                for i, d in enumerate(self.domain.dims):
                    if d.name in t.params:
                        idx[i] = self._label_index[i][t.params[d.name]]
            except KeyError:
                raise ConfigError(
                    f"Optuna study {self.study.study_name!r} holds parameters of a different search domain; "
                    "use a new study name or a different storage."
                ) from None
            vals = tuple(float(v) for v in t.values) if t.state.name == "COMPLETE" else None
            out.append((self.domain.decode(idx), vals))
        return out


class OptunaTPE(_OptunaStrategy):
    """Optuna's TPE sampler; ``n_startup_trials`` random trials first (default: 10, or a fifth
    of a small budget, so the model gets to act within budgets of a few dozen)."""

    name = "tpe"

    def __init__(self, domain, directions, seed, budget, storage=None, study_name=None, formatter=None,
                 n_startup_trials: int | None = None, multivariate: bool = True, n_ei_candidates: int = 24):
        self._tpe_opts = dict(
            n_startup_trials=int(n_startup_trials if n_startup_trials is not None else min(10, max(3, budget // 5))),
            multivariate=multivariate,
            n_ei_candidates=n_ei_candidates,
        )
        super().__init__(domain, directions, seed, budget, storage=storage, study_name=study_name, formatter=formatter)

    def _make_sampler(self):
        import warnings

        with warnings.catch_warnings():  # multivariate TPE is flagged experimental
            warnings.simplefilter("ignore")
            return self._optuna.samplers.TPESampler(seed=self.seed, group=self._tpe_opts["multivariate"], **self._tpe_opts)


class OptunaNSGA2(_OptunaStrategy):
    """Optuna's NSGA-II for Pareto searches. The default population (``clip(budget // 5, 8, 50)``)
    keeps several generations inside small budgets; Optuna's default of 50 would make a budget
    of 50 pure random sampling."""

    name = "nsga2"

    def __init__(self, domain, directions, seed, budget, storage=None, study_name=None, formatter=None, population_size: int | None = None):
        self._pop = int(population_size or int(np.clip(budget // 5, 8, 50)))
        super().__init__(domain, directions, seed, budget, storage=storage, study_name=study_name, formatter=formatter)

    def _make_sampler(self):
        return self._optuna.samplers.NSGAIISampler(population_size=self._pop, seed=self.seed)


STRATEGIES: Registry[SearchStrategy] = Registry("search method")
for _cls in (RandomSearch, RegularizedEvolution, OrderedSearch, OptunaTPE, OptunaNSGA2):
    STRATEGIES.register(_cls.name, _cls, aliases={"rea": ("regularized_evolution", "evolution"), "nsga2": ("nsgaii", "nsga-ii"),
                                                  "tpe": ("optuna_tpe",)}.get(_cls.name, ()))
STRATEGIES.register("autobuild", "autobuild_core.search.autobuild:IterativeAutoBuild")
STRATEGIES.register("predictor", "autobuild_core.search.autobuild:PredictorGuided")


def list_methods() -> list[str]:
    """Names of the registered search strategies."""
    return STRATEGIES.names()


def get_strategy(method: str) -> type[SearchStrategy]:
    """The strategy class registered as ``method`` (or one of its aliases)."""
    return STRATEGIES.get(method)
