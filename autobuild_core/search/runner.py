"""The search driver: a fixed budget of *unique* evaluations, whatever the strategy proposes.

Budgets are what methods are compared by, so the driver (not the strategies) counts them. A
proposal already evaluated is answered from the cache and costs nothing; a strategy that keeps
proposing evaluated architectures (TPE and NSGA-II do on small pruned spaces) is not allowed to
stall the run: after ``max_retries`` consecutive duplicates the driver proposes an unseen
architecture at random (or, on a small domain, the first unseen one of an enumeration) and the
run stops only when the budget is spent or the domain is exhausted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from search_spaces.errors import ConfigError
from search_spaces.base import Arch

from .domain import Domain, as_domain
from .pareto import non_dominated
from .strategies import get_strategy

Objective = Callable[[list], list]


@dataclass
class SearchResult:
    """``history``: one record per unique evaluation, in order: ``arch``, ``values`` (tuple, or
    None when the evaluation failed), ``n_eval`` (evaluations spent so far, this one included)
    and ``source`` ("initial", "prior", "search" or "fallback"). ``best`` is the record with the
    best first objective; ``pareto`` the non-dominated records (just ``[best]`` for one
    objective)."""

    history: list = field(default_factory=list)
    best: dict | None = None
    pareto: list = field(default_factory=list)
    directions: tuple = ("maximize",)
    method: str = ""
    n_eval: int = 0
    n_duplicates: int = 0
    n_fallbacks: int = 0
    exhausted: bool = False
    study_name: str | None = None

    def best_trajectory(self) -> list[float]:
        """Best first-objective value after each evaluation (NaN until one succeeds)."""
        sign = 1.0 if self.directions[0] == "maximize" else -1.0
        out, cur = [], -math.inf
        for rec in self.history:
            if rec["values"] is not None:
                cur = max(cur, sign * rec["values"][0])
            out.append(sign * cur if cur > -math.inf else math.nan)
        return out

    def best_within(self, n_eval: int) -> float | None:
        """Best first-objective value among the first ``n_eval`` evaluations."""
        traj = [v for rec, v in zip(self.history, self.best_trajectory()) if rec["n_eval"] <= n_eval]
        return traj[-1] if traj and not math.isnan(traj[-1]) else None


def _normalise(value: Any, n_obj: int) -> tuple | None:
    if value is None:
        return None
    vals = (value,) if np.isscalar(value) else tuple(value)
    if len(vals) != n_obj:
        raise ValueError(f"objective returned {len(vals)} value(s) for {n_obj} direction(s)")
    out = tuple(float(v) for v in vals)
    return None if any(math.isnan(v) for v in out) else out


def _summarise(result: SearchResult) -> None:
    ok = [r for r in result.history if r["values"] is not None]
    if not ok:
        result.best, result.pareto = None, []
        return
    sign = 1.0 if result.directions[0] == "maximize" else -1.0
    result.best = max(ok, key=lambda r: sign * r["values"][0])
    if len(result.directions) == 1:
        result.pareto = [result.best]
    else:
        idx = non_dominated([r["values"] for r in ok], result.directions)
        result.pareto = [ok[i] for i in idx]


def run_search(
    method: str,
    domain_or_space,
    objective: Objective,
    budget: int,
    seed: int = 0,
    directions: Sequence[str] = ("maximize",),
    storage: str | None = None,
    study_name: str | None = None,
    on_trial: Callable[[dict], None] | None = None,
    initial: Iterable | None = None,
    batch_size: int = 1,
    max_retries: int = 50,
    formatter: Callable[[Arch], Any] | None = None,
    **options: Any,
) -> SearchResult:
    """Search ``domain_or_space`` with ``method`` for at most ``budget`` unique evaluations.

    ``objective(list[Arch]) -> list[tuple | float | None]`` is called with up to ``batch_size``
    new architectures at a time (batched so table lookups and remote evaluators stay cheap).
    ``initial``: architectures, or ``(arch, values)`` pairs already evaluated, that count against
    the budget first (AutoBuild's seed evaluations); those inside the domain also inform the
    strategy. ``storage``/``study_name`` persist Optuna studies (an existing study resumes: its
    evaluations count against the budget). ``options`` go to the strategy (e.g. REA's
    ``population_size``, the ordered strategy's ``order``).
    """
    directions = tuple(directions)
    if not directions or any(d not in ("maximize", "minimize") for d in directions):
        raise ConfigError(f"directions must be a non-empty list of 'maximize'/'minimize', got {list(directions)}")
    if budget < 0:
        raise ConfigError(f"budget must be non-negative, got {budget}")
    domain: Domain = as_domain(domain_or_space)
    cls = get_strategy(method)
    if formatter is None and domain.space is not None:
        formatter = domain.format
    kwargs = dict(options)
    if cls.persistent:
        kwargs.update(storage=storage, study_name=study_name, formatter=formatter)
    strategy = cls(domain, directions, seed, budget, **kwargs)

    result = SearchResult(directions=directions, method=cls.name, study_name=strategy.study_name)
    cache: dict = {}
    rng = np.random.default_rng([int(seed), 7919])

    def record(arch: Arch, values, source: str) -> None:
        cache[domain.key(arch)] = values
        result.n_eval += 1
        rec = {"arch": arch, "values": values, "n_eval": result.n_eval, "source": source}
        result.history.append(rec)
        if on_trial is not None:
            on_trial(rec)

    # Evaluations of an earlier session of the same study.
    for arch, values in strategy.prior():
        if domain.key(arch) not in cache and result.n_eval < budget:
            record(arch, values, "prior")

    # Initial architectures: evaluate those without values, all count against the budget.
    if initial is not None:
        todo, given = [], []
        for item in initial:
            arch, values, has = (item[0], item[1], True) if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Arch) else (item, None, False)
            k = domain.key(arch)
            if k in cache or any(domain.key(a) == k for a, _, _ in given):
                continue
            given.append((arch, values, has))
        given = given[: max(0, budget - result.n_eval)]
        todo = [a for a, _, has in given if not has]
        got = iter([_normalise(v, len(directions)) for v in objective(todo)] if todo else [])
        for arch, values, has in given:
            values = _normalise(values, len(directions)) if has else next(got)
            record(arch, values, "initial")
            strategy.observe(arch, values)

    fallback_iter = None
    while result.n_eval < budget and not result.exhausted:
        want = min(max(1, int(batch_size)), budget - result.n_eval)
        batch: list[tuple[Arch, str]] = []
        batch_keys: set = set()
        deferred: list[Arch] = []  # duplicates of a proposal still in this batch
        streak = 0
        while len(batch) < want:
            if streak >= max_retries:
                arch = _unseen(domain, cache, batch_keys, rng, fallback_iter)
                if arch is None:
                    if fallback_iter is None and domain.size <= 1_000_000:
                        fallback_iter = domain.enumerate()
                        arch = _unseen(domain, cache, batch_keys, rng, fallback_iter)
                    if arch is None:
                        result.exhausted = True
                        break
                batch.append((arch, "fallback"))
                batch_keys.add(domain.key(arch))
                result.n_fallbacks += 1
                streak = 0
                continue
            arch = strategy.ask()
            k = domain.key(arch)
            if k in cache:
                strategy.tell(arch, cache[k], duplicate=True)
                result.n_duplicates += 1
                streak += 1
            elif k in batch_keys:
                deferred.append(arch)
                result.n_duplicates += 1
                streak += 1
            else:
                batch.append((arch, "search"))
                batch_keys.add(k)
                streak = 0
        if not batch:
            break
        raw = objective([a for a, _ in batch])
        if len(raw) != len(batch):
            raise ValueError(f"objective returned {len(raw)} results for {len(batch)} architectures")
        for (arch, source), value in zip(batch, raw):
            values = _normalise(value, len(directions))
            record(arch, values, source)
            if source == "search":
                strategy.tell(arch, values)
            else:
                strategy.observe(arch, values)
        for arch in deferred:
            strategy.tell(arch, cache[domain.key(arch)], duplicate=True)
        if result.n_eval >= domain.size:
            result.exhausted = True

    _summarise(result)
    return result


def _unseen(domain: Domain, cache: dict, pending: set, rng: np.random.Generator, enum_iter) -> Arch | None:
    """An architecture not evaluated yet: random tries first, then the enumeration (if any)."""
    for _ in range(200):
        arch = domain.random_arch(rng)
        k = domain.key(arch)
        if k not in cache and k not in pending:
            return arch
    if enum_iter is not None:
        for arch in enum_iter:
            k = domain.key(arch)
            if k not in cache and k not in pending:
                return arch
    return None
