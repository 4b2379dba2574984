"""Iterative, ranker-guided AutoBuild search (``"autobuild"``) and its ablation (``"predictor"``).

Seeds, then rounds: retrain a small ensemble of rankers on everything evaluated so far (targets
clipped from below so the many failed cells do not dominate the loss), score every unit
configuration with :func:`~autobuild_core.scoring.score_units`, draw candidates from mutations of
the best evaluated architectures, from the unit-score-pruned space and at random, and pick the
next batch by an upper confidence bound on the ensemble (plus a share of model-free mutations of
the best, because greedy top-predicted batches stall). ``"predictor"`` is the same loop without
unit scores: the pruned-space share of the pool is drawn uniformly instead, so comparing the two
measures what module scores add. Two objectives: one ensemble per objective, ParEGO-style
random-weight Chebyshev scalarisation per batch slot, parents spread along the front by crowding
distance. Design and citations: docs/search.md.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from search_spaces.base import Arch
from search_spaces.errors import ConfigError, EncodingError

from .domain import Domain
from .pareto import crowding_distance, hypervolume_improvement_2d, non_dominated
from .strategies import SearchStrategy, Values


class IterativeSettings(BaseModel):
    """Settings of the iterative AutoBuild loop; how the defaults were chosen: docs/search.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_init: int = Field(10, ge=0, description="seed architectures (stratified sample) evaluated before the first round; "
                        "prior observations count towards them")
    min_train: int = Field(10, ge=8, description="fewest successful evaluations before the ranker is trained "
                           "(below it, rounds propose stratified/random architectures)")
    batch_min: int = Field(5, ge=1, description="smallest batch proposed per round")
    batch_max: int = Field(20, ge=1, description="largest batch proposed per round")
    batch_growth: float = Field(0.1, ge=0, description="round batch = clip(batch_growth x evaluations so far, batch_min, batch_max): "
                                "small batches early, when each evaluation moves the rankers most; larger ones late, when "
                                "retraining costs most")
    ensemble: int = Field(3, ge=1, description="rankers per objective per round (different seeds and validation splits); "
                          "their spread is the uncertainty of the acquisition")
    graph_passes: int = Field(4000, ge=100, description="training work per ranker and round, in graphs seen: "
                              "epochs = clip(graph_passes / n_train, epochs_min, epochs_max)")
    epochs_min: int = Field(20, ge=1, description="fewest epochs per ranker and round")
    epochs_max: int = Field(60, ge=1, description="most epochs per ranker and round")
    lr: float = Field(1e-2, gt=0, description="ranker learning rate (AdamW)")
    train_batch: int = Field(128, ge=2, description="ranker mini-batch size")
    gnn: Literal["gatv2", "graphconv", "gin"] = Field("graphconv", description="message-passing layer of the ranker")
    clip_quantile: float = Field(0.5, ge=0, lt=1, description="training targets are clipped from below at this quantile "
                                 "of the evaluated values, so the ranker spends its capacity on the top")
    front_order: Literal["sum", "crowding"] = Field("crowding", description="two objectives: order within each non-dominated "
                                                   "front when choosing parents (crowding: NSGA-II's crowding distance, extremes "
                                                   "first, so parents spread along the front; sum: by the sum of the training "
                                                   "targets, which favours the most accurate end)")
    mo_acquisition: Literal["parego", "hvi"] = Field("parego", description="two objectives: how a batch slot scores the "
                                                     "candidates (parego: augmented Chebyshev with random weights per slot; hvi, "
                                                     "a probe, not the default: "
                                                     "the hypervolume the candidate's upper confidence bound adds to the front, "
                                                     "each pick joining the front for the next slot)")
    pool_parents: int = Field(10, ge=1, description="best evaluated architectures whose one-edit neighbours enter the pool "
                              "(for two objectives: non-dominated first)")
    pool_mutations: int = Field(400, ge=0, description="cap on the neighbours in the pool (sampled when more)")
    pool_units: int = Field(200, ge=0, description="pool share drawn from the unit-score-pruned space "
                            "(predictor: drawn uniformly instead)")
    units_credit: bool = Field(False, description="(probe, not the default: worse on the tuning tables) keep the full pruned-space share only while the proposals it supplied rank "
                               "at least as well as the other model-chosen proposals; otherwise draw most of that share uniformly")
    units_credit_min: int = Field(4, ge=1, description="evaluated pruned-space proposals needed before units_credit judges them")
    units_credit_floor: float = Field(0.25, ge=0, le=1, description="share of pool_units still drawn from the pruned space while "
                                      "it is distrusted (so its credit can recover)")
    units_until: int = Field(0, ge=0, description="(probe, not the default) draw no pool share from the pruned space once this "
                             "many evaluations are in (0: always draw it): unit scores to find good regions early, the "
                             "neighbours of the best to refine them late")
    units_min_spearman: float = Field(0.0, ge=0, le=1, description="(probe, not the default) draw no pool share from the pruned "
                                      "space while the rankers' held-out Spearman, averaged over the rounds so far, is below this "
                                      "(0: always draw it): unit scores from a weak ranker steer the pool away from the good region")
    ridge_members: int = Field(0, ge=0, description="(probe, not the default) bootstrap ridge regressions on the one-hot "
                               "encoding added to each ranker ensemble: on noisy tables a linear model ranks as well as the GNN")
    pool_random: int = Field(400, ge=0, description="pool share drawn uniformly from the domain")
    pool_all_below: int = Field(0, ge=0, description="(probe, not the default: mixed on the tables that hold part of their "
                                "space) a domain of at most this many architectures enters the pool whole, so the rankers score "
                                "every candidate (0: never)")
    keep_exponent: float = Field(0.5, gt=0, le=1, description="the pruned space keeps the top ceil(n_u ** keep_exponent) "
                                 "configurations of unit u (all global choices are kept)")
    units_thompson: bool = Field(False, description="(probe, not the default: level with it on the tuning tables, worse on Citeseer) each round the pruned space keeps the top configurations by "
                                 "one ensemble member's unit scores, drawn at random, instead of the ensemble mean (Thompson "
                                 "sampling over the rankers: the pruned space varies from round to round as the rankers disagree)")
    units_temperature: float = Field(0.0, ge=0, description="(probe, not the default: worse on Cora and Citeseer at T = 1 and 0.5) > 0: the pool_units share is drawn from the whole space "
                                     "with each unit's configuration sampled with probability proportional to exp(z / T), z its "
                                     "unit score standardised within the unit, instead of uniformly from the pruned space "
                                     "(weighting the space rather than pruning it; 0: prune)")
    unit_scoring: Literal["paper", "marginal"] = Field("paper", description="score_units method")
    kappas: tuple[float, ...] = Field((0.0, 1.0, 2.0), description="UCB factors (mean + kappa x std), cycled over a batch's slots")
    explore_fraction: float = Field(0.2, ge=0, le=1, description="share of each batch spent on model-free random mutations of "
                                    "the best evaluated architectures")
    explore_top: int = Field(5, ge=1, description="parents of the model-free mutations")
    explore_units: float = Field(0.0, ge=0, le=1, description="(probe) share of the model-free mutations that replace one "
                                 "unit of a parent with a configuration the pruned space kept for it, instead of a random "
                                 "edit (predictor: random edits throughout)")
    stall_rounds: int = Field(0, ge=0, description="rounds without a change among the best explore_top architectures "
                              "after which a round explores harder (0: never)")
    stall_explore_fraction: float = Field(0.5, ge=0, le=1, description="explore_fraction of a stalled round")
    stall_edits: int = Field(3, ge=1, description="most edits per model-free mutation in a stalled round "
                             "(parents: the best 2 x explore_top)")

    def batch(self, n_seen: int) -> int:
        return int(np.clip(round(self.batch_growth * n_seen), self.batch_min, max(self.batch_min, self.batch_max)))

    def epochs(self, n_train: int) -> int:
        return int(np.clip(round(self.graph_passes / max(1, n_train)), self.epochs_min, max(self.epochs_min, self.epochs_max)))


def transform_targets(values: np.ndarray, direction: str, clip_quantile: float) -> np.ndarray:
    """Objective values -> 'larger is better' training targets, clipped from below.

    Minimised objectives learn ``-log`` (latencies span orders of magnitude) when all values are
    positive, ``-value`` otherwise; NaN (a failed evaluation) becomes the clip floor."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    if direction == "minimize":
        v = -np.log(v) if np.all(v[ok] > 0) else -v
    floor = float(np.quantile(v[ok], clip_quantile)) if ok.any() else 0.0
    v = np.where(np.isfinite(v), v, floor)
    return np.maximum(v, floor)


class IterativeAutoBuild(SearchStrategy):
    """Iterative AutoBuild: ranker ensemble + unit-score-pruned candidates + UCB batches.

    Options: ``settings`` (an :class:`IterativeSettings` or a dict of its fields) and
    ``on_round`` (called after each retraining with a dict: ``round``, ``n_evaluated``,
    ``val_spearman`` (mean held-out Spearman of the rankers; ``val_spearman_members`` per ranker
    and objective), ``epochs``, ``unit_scores`` (DataFrame of the first objective, mean over the
    ensemble; None for ``predictor``), ``pruned`` (``k``, ``size``, ``units``: kept configuration
    labels per unit; None for ``predictor``), ``changed`` (units whose top configuration changed
    since the previous round, with ``before``/``after`` labels), ``batch`` (proposed
    architectures), ``pool_size`` and ``seconds``).
    Prior observations (``observe``) join the training data and count towards ``n_init``.
    """

    name = "autobuild"
    multi_objective = True
    use_units = True

    def __init__(self, domain: Domain, directions: Sequence[str], seed: int, budget: int,
                 settings: IterativeSettings | dict | None = None, on_round: Callable[[dict], None] | None = None):
        super().__init__(domain, directions, seed, budget)
        if isinstance(settings, dict):
            settings = IterativeSettings(**settings)
        self.settings = settings or IterativeSettings()
        self.on_round = on_round
        self.space = domain.space
        if self.space is None:
            raise ConfigError(f"search method {self.name!r} needs a domain over a search space (its rankers read the space's graphs)")
        self._obs: dict = {}  # key -> (arch, values or None), in order of arrival
        self._pending: set = set()
        self._queue: list = []
        self._round = 0
        self._ridges: list = []  # per objective, set every round: [(weights, intercept)] of its ridge members
        self._prev_top: list | None = None
        self._unit_logits: list | None = None  # units_temperature: per unit {config: standardised score}
        self._init: list | None = None
        self._prev_best: frozenset | None = None
        self._stalled = 0
        self._src: dict = {}  # pool key -> where the candidate came from (neighbour/units/uniform)
        self._picks: list = []  # (key, source) of every model-chosen proposal
        self.rounds: list = []  # the info dicts also passed to on_round (without the DataFrame)

    # ---- ask / tell ---------------------------------------------------------------------------
    def tell(self, arch: Arch, values: Values | None, duplicate: bool = False) -> None:
        k = self.domain.key(arch)
        self._pending.discard(k)
        if not duplicate and k not in self._obs:
            self._obs[k] = (arch, None if values is None else tuple(float(v) for v in values))

    def observe(self, arch: Arch, values: Values | None) -> None:
        self.tell(arch, values)

    def ask(self) -> Arch:
        while not self._queue:
            self._fill()
        arch = self._queue.pop(0)
        self._pending.add(self.domain.key(arch))
        return arch

    # ---- rounds -----------------------------------------------------------------------------
    def _seen(self, k) -> bool:
        return k in self._obs or k in self._pending

    def _fill(self) -> None:
        s = self.settings
        ok = [(a, v) for a, v in self._obs.values() if v is not None]
        if len(self._obs) < s.n_init or len(ok) < s.min_train or len({v for _, v in ok}) < 2:
            self._queue = self._initial(max(1, s.n_init - len(self._obs)) if len(self._obs) < s.n_init else s.batch_min)
            return
        self._queue = self._round_batch(ok)

    def _initial(self, n: int) -> list:
        if self._init is None:
            try:
                cand = self.space.sample(max(self.settings.n_init, 1), seed=self.seed, stratified=True)
            except Exception:  # spaces without stratified sampling
                cand = []
            self._init = [a for a in cand if self.domain.contains(a)]
        out, keys = [], set()
        while self._init and len(out) < n:
            a = self._init.pop(0)
            k = self.domain.key(a)
            if not self._seen(k) and k not in keys:
                out.append(a), keys.add(k)
        for _ in range(50 * n):
            if len(out) >= n:
                break
            a = self.domain.random_arch(self.rng)
            k = self.domain.key(a)
            if not self._seen(k) and k not in keys:
                out.append(a), keys.add(k)
        return out or [self.domain.random_arch(self.rng)]

    def _train(self, archs: list, y: np.ndarray, obj: int) -> list:
        from ..ranker import RankerConfig
        from ..train import TrainConfig, train_ranker

        s = self.settings
        n_val = int(round(0.1 * len(archs)))
        epochs = s.epochs(len(archs) - n_val)
        models = []
        for m in range(s.ensemble):
            seed = int(np.random.SeedSequence([self.seed, self._round, obj, m]).generate_state(1)[0] % (2**31))
            models.append(train_ranker(self.space, archs, y, RankerConfig(gnn=s.gnn),
                                       TrainConfig(epochs=epochs, lr=s.lr, batch_size=s.train_batch, seed=seed,
                                                   val_fraction=0.1, eval_every=epochs)))
        self._epochs = epochs
        return models

    def _round_batch(self, ok: list) -> list:
        t0 = time.time()
        s = self.settings
        self._round += 1
        archs = [a for a, _ in self._obs.values()]
        vals = np.array([[np.nan] * len(self.directions) if v is None else list(v) for _, v in self._obs.values()], dtype=float)
        ensembles, targets = [], []
        for j, d in enumerate(self.directions):
            y = transform_targets(vals[:, j], d, s.clip_quantile)
            targets.append(y)
            ensembles.append(self._train(archs, y, j) if np.std(y) > 0 else [])
        x = self._onehot(archs) if s.ridge_members else None
        self._ridges = [_fit_ridges(x, y, s.ridge_members, [self.seed, self._round, j]) if x is not None and ens else []
                        for j, (ens, y) in enumerate(zip(ensembles, targets))]
        info: dict[str, Any] = {"round": self._round, "n_evaluated": len(self._obs), "epochs": self._epochs}
        members = [[_val_spearman(t) for t in ens] for ens in ensembles]
        flat = [x for row in members for x in row if x is not None and np.isfinite(x)]
        info["val_spearman"] = float(np.mean(flat)) if flat else None
        info["val_spearman_members"] = members

        pruned = None
        if self.use_units and all(ensembles):
            pruned = self._units(ensembles, info)
        else:
            info.update(unit_scores=None, pruned=None, changed=[])

        keys = list(self._obs)
        best = frozenset(keys[i] for i in self._scalar_rank(targets)[: s.explore_top])
        self._stalled = self._stalled + 1 if best == self._prev_best else 0
        self._prev_best = best
        stalled = bool(s.stall_rounds) and self._stalled >= s.stall_rounds
        info["source_percentile"] = self._source_credit(targets)
        share = self._units_share(info["source_percentile"], info["val_spearman"]) if pruned is not None else 0.0
        info["units_share"] = share
        pool = self._pool(targets, pruned, share)
        n = s.batch(len(self._obs))
        batch = self._select(pool, ensembles, targets, n, stalled, pruned)
        info.update(batch=list(batch), pool_size=len(pool), stalled=stalled, seconds=time.time() - t0)
        self.rounds.append({k: v for k, v in info.items() if k != "unit_scores"})
        if self.on_round is not None:
            self.on_round(info)
        return batch

    # ---- unit scores -> pruned space ------------------------------------------------------------
    def _units(self, ensembles: list, info: dict):
        from ..build import PrunedSpace
        from ..scoring import config_of, score_units

        s = self.settings
        choices = [[] for _ in self.space.units]
        first = None
        logits = None  # per unit: {config: standardised score summed over objectives}
        for j, ens in enumerate(ensembles):
            tables = [score_units(t, self.space, method=s.unit_scoring, seed=self.seed) for t in ens]
            df = tables[0].copy()
            df["score"] = np.mean([t["score"].to_numpy() for t in tables], axis=0)
            df["score_std"] = np.std([t["score"].to_numpy() for t in tables], axis=0)
            df["rank"] = df.groupby("unit")["score"].rank(ascending=False, method="first").astype(int)
            if first is None:
                first = df
            if s.units_thompson:
                pick = np.random.default_rng([self.seed, self._round, j, 99]).integers(len(tables))
                df = df.assign(score=tables[pick]["score"].to_numpy())
            if s.units_temperature > 0:
                logits = logits or [{} for _ in self.space.units]
                for u in range(len(self.space.units)):
                    sub = df[df["unit"] == u]
                    sc = sub["score"].to_numpy(float)
                    z = (sc - sc.mean()) / (sc.std() or 1.0)
                    for c, zz in zip(sub["config"], z):
                        cfg = config_of(c)
                        logits[u][cfg] = logits[u].get(cfg, 0.0) + float(zz) / len(ensembles)
            for u, spec in enumerate(self.space.units):
                k = max(1, math.ceil(spec.n_configs ** s.keep_exponent))
                if len(ensembles) > 1:
                    k = max(1, math.ceil(k / len(ensembles)))
                sub = df[df["unit"] == u].sort_values("score", ascending=False, kind="stable").head(k)
                for c in sub["config"]:
                    cfg = config_of(c)
                    if cfg not in choices[u]:
                        choices[u].append(cfg)
        scores = [[0.0] * len(c) for c in choices]
        pruned = PrunedSpace(self.space, choices, scores, {k: tuple(v) for k, v in self.space.global_choices.items()})
        self._unit_logits = logits
        top = [first[first["unit"] == u].sort_values("score", ascending=False, kind="stable").iloc[0]["label"] for u in range(len(self.space.units))]
        changed = []
        if self._prev_top is not None:
            changed = [{"unit": u, "before": b, "after": a} for u, (b, a) in enumerate(zip(self._prev_top, top)) if a != b]
        self._prev_top = top
        info.update(
            unit_scores=first,
            pruned={"k": [len(c) for c in choices], "size": int(pruned.size),
                    "units": [[self.space.format_config(u, c) for c in cs] for u, cs in enumerate(choices)]},
            changed=changed,
        )
        return pruned

    # ---- candidates ---------------------------------------------------------------------------
    def _scalar_rank(self, targets: list) -> np.ndarray:
        """Order of the evaluated architectures, best first (two objectives: non-dominated first)."""
        t = np.stack(targets, 1)
        if t.shape[1] == 1:
            return np.argsort(-t[:, 0], kind="stable")
        rest, order = list(range(len(t))), []
        while rest:
            front = [rest[i] for i in non_dominated(t[rest], ["maximize"] * t.shape[1])]
            if self.settings.front_order == "crowding":
                cd = crowding_distance(t[front])
                front = [front[i] for i in sorted(range(len(front)), key=lambda i: (-cd[i], -t[front[i]].sum()))]
            else:
                front.sort(key=lambda i: -t[i].sum())
            order += front
            rest = [i for i in rest if i not in set(front)]
        return np.array(order)

    def _neighbours(self, idx: tuple) -> list:
        out = []
        act = self.domain.active(idx)
        for i, (d, a) in enumerate(zip(self.domain.dims, act)):
            if not a or d.size < 2:
                continue
            for v in range(d.size):
                if v != idx[i]:
                    new = list(idx)
                    new[i] = v
                    after = self.domain.active(new)
                    for j, (b0, a1) in enumerate(zip(act, after)):
                        if a1 and not b0:
                            new[j] = int(self.rng.integers(self.domain.dims[j].size))
                    out.append(tuple(new))
        return out

    def _source_credit(self, targets: list) -> dict:
        """Mean percentile (among everything evaluated, 1 = best) of the evaluated model-chosen
        proposals, by where they came from, with their counts: ``{source: (mean, n)}``."""
        keys = list(self._obs)
        order = self._scalar_rank(targets)
        pct = {keys[i]: 1.0 - r / max(1, len(keys) - 1) for r, i in enumerate(order)}
        by: dict = {}
        for k, src in self._picks:
            if k in pct:
                by.setdefault(src, []).append(pct[k])
        return {src: (float(np.mean(v)), len(v)) for src, v in by.items()}

    def _units_share(self, credit: dict, val_spearman: float | None = None) -> float:
        """Share of ``pool_units`` drawn from the pruned space this round (the rest uniformly): 0 past
        ``units_until`` evaluations or while the rankers' mean held-out Spearman (``val_spearman``:
        this round's) is below ``units_min_spearman``; the ``units_credit`` gate otherwise; else 1."""
        s = self.settings
        if s.units_until and len(self._obs) >= s.units_until:
            return 0.0
        seen = [r["val_spearman"] for r in self.rounds if r["val_spearman"] is not None] + ([val_spearman] if val_spearman is not None else [])
        if s.units_min_spearman and seen and float(np.mean(seen)) < s.units_min_spearman:
            return 0.0
        if not s.units_credit or "units" not in credit or credit["units"][1] < s.units_credit_min:
            return 1.0
        n_other = sum(n for src, (_, n) in credit.items() if src != "units")
        if not n_other:
            return 1.0
        other = sum(m * n for src, (m, n) in credit.items() if src != "units") / n_other
        return 1.0 if credit["units"][0] >= other else s.units_credit_floor

    def _pool(self, targets: list, pruned, share: float = 1.0) -> list:
        s = self.settings
        archs = [a for a, _ in self._obs.values()]
        pool, keys = [], set()

        src = "neighbour"
        self._src = {}

        def add(a) -> None:
            k = self.domain.key(a)
            if not self._seen(k) and k not in keys and self.domain.admits(a):
                keys.add(k)
                pool.append(a)
                self._src[k] = src

        # 1. one-edit neighbours of the best evaluated
        neigh = []
        for i in self._scalar_rank(targets)[: s.pool_parents]:
            idx = self.domain.encode(archs[i])
            if idx is not None:
                neigh += self._neighbours(idx)
        if len(neigh) > s.pool_mutations:
            neigh = [neigh[i] for i in self.rng.choice(len(neigh), s.pool_mutations, replace=False)]
        for idx in neigh:
            add(self.domain.decode(idx))
        # 2. the unit-score-pruned space (or, for the predictor, the same number drawn uniformly)
        n_units = int(round(share * s.pool_units)) if pruned is not None else 0
        src = "units"
        draws = []
        if n_units and s.units_temperature > 0 and self._unit_logits:
            draws = self._weighted_draws(n_units)
        elif n_units:
            draws = list(pruned.enumerate_by_score()) if pruned.size <= n_units else pruned.sample(n_units, self.rng)
        for a in draws:
            if self.domain.contains(a):
                add(a)
        # 3. uniform: the pool_random share, plus the part of pool_units not drawn from the pruned space
        src = "uniform"
        for _ in range(s.pool_units - n_units + s.pool_random):
            add(self.domain.random_arch(self.rng))
        if s.pool_all_below and self.domain.size <= s.pool_all_below:
            for a in self.domain.enumerate():
                add(a)
        return pool

    def _weighted_draws(self, n: int) -> list:
        """``n`` architectures with each unit's configuration drawn with probability proportional to
        exp(z / units_temperature) over its standardised unit scores; global choices uniform."""
        T = self.settings.units_temperature
        per_unit = []
        for lg in self._unit_logits:
            cfgs = list(lg)
            z = np.array([lg[c] for c in cfgs]) / T
            p = np.exp(z - z.max())
            per_unit.append((cfgs, p / p.sum()))
        out = []
        for _ in range(n):
            cfgs = [c[int(self.rng.choice(len(c), p=p))] for c, p in per_unit]
            g = {k: v[int(self.rng.integers(len(v)))] for k, v in self.space.global_choices.items()}
            try:
                out.append(self.space.assemble(cfgs, g))
            except EncodingError:
                continue
        return out

    # ---- acquisition ---------------------------------------------------------------------------
    def _predict(self, ensembles: list, pool: list) -> tuple[np.ndarray, np.ndarray]:
        from search_spaces.graph import GraphSet

        gs = GraphSet([self.space.to_graph(a) for a in pool])
        x = self._onehot(pool) if any(self._ridges) else None
        means, stds = [], []
        for ens, rid in zip(ensembles, self._ridges):
            if not ens:
                means.append(np.zeros(len(pool))), stds.append(np.zeros(len(pool)))
                continue
            p = np.stack([_predict_graphs(t, gs) for t in ens] + [x @ w + b for w, b in rid])
            means.append(p.mean(0)), stds.append(p.std(0))
        return np.stack(means, 1), np.stack(stds, 1)

    def _select(self, pool: list, ensembles: list, targets: list, n: int, stalled: bool = False, pruned=None) -> list:
        s = self.settings
        n_explore = int(round((s.stall_explore_fraction if stalled else s.explore_fraction) * n))
        n_model = n - n_explore
        out, keys = [], set()
        if pool and n_model > 0:
            mu, sd = self._predict(ensembles, pool)
            t = np.stack(targets, 1)
            lo, hi = t.min(0), t.max(0)
            span = np.where(hi > lo, hi - lo, 1.0)
            taken = np.zeros(len(pool), dtype=bool)
            hvi = t.shape[1] == 2 and s.mo_acquisition == "hvi"
            front = (t[non_dominated(t, ["maximize"] * t.shape[1])] - lo) / span if hvi else None
            for slot in range(min(n_model, len(pool))):
                kappa = s.kappas[slot % len(s.kappas)] if s.kappas else 0.0
                ucb = (mu + kappa * sd - lo) / span
                if ucb.shape[1] == 1:
                    acq = ucb[:, 0]
                elif hvi:
                    acq = _hvi_or_gap(front, ucb)
                else:  # ParEGO: augmented Chebyshev with random weights per slot
                    w = self.rng.dirichlet(np.ones(ucb.shape[1]))
                    gap = 1.0 - ucb
                    acq = -(np.max(w * gap, 1) + 0.05 * np.sum(w * gap, 1))
                acq = np.where(taken, -np.inf, acq)
                i = int(np.argmax(acq))
                taken[i] = True
                if front is not None:  # the pick joins the front it is scored against (its optimistic value)
                    front = np.vstack([front, ucb[i]])
                k = self.domain.key(pool[i])
                out.append(pool[i]), keys.add(k)
                self._picks.append((k, self._src.get(k, "uniform")))
        # model-free exploration: random mutations (1 or 2 edits) of the best evaluated
        archs = [a for a, _ in self._obs.values()]
        parents = [archs[i] for i in self._scalar_rank(targets)[: s.explore_top * (2 if stalled else 1)]]
        max_edits = s.stall_edits if stalled else 2
        tries = 0
        while len(out) < n and tries < 200 * n:
            tries += 1
            parent = parents[int(self.rng.integers(len(parents)))]
            a = (self._unit_swap(parent, pruned)
                 if s.explore_units and pruned is not None and self.rng.random() < s.explore_units else None)
            idx = self.domain.encode(parent) if a is None else None
            if a is None and idx is None:
                a = self.domain.random_arch(self.rng)
            elif a is None:
                for _ in range(int(self.rng.integers(1, max_edits + 1))):
                    idx = self.domain.mutate_indices(idx, self.rng)
                a = self.domain.decode(idx)
            k = self.domain.key(a)
            if not self._seen(k) and k not in keys:
                out.append(a), keys.add(k)
        return out or [self.domain.random_arch(self.rng)]

    def _unit_swap(self, parent: Arch, pruned) -> Arch | None:
        """``parent`` with one unit's configuration replaced by another one the pruned space kept for
        that unit (None when no unit has one, or the result leaves the domain)."""
        units = [u for u, ch in enumerate(pruned.unit_choices) if any(c != parent.units[u] for c in ch)]
        if not units:
            return None
        u = units[int(self.rng.integers(len(units)))]
        options = [c for c in pruned.unit_choices[u] if c != parent.units[u]]
        cfgs = list(parent.units)
        cfgs[u] = options[int(self.rng.integers(len(options)))]
        try:
            a = self.space.assemble(cfgs, parent.global_dict)
        except EncodingError:
            return None
        return a if self.domain.contains(a) else None

    def _onehot(self, archs: list) -> np.ndarray:
        """One-hot rows of the domain's encoding (a row of zeros where an architecture has none)."""
        sizes = [d.size for d in self.domain.dims]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int)
        x = np.zeros((len(archs), int(sum(sizes))))
        for r, a in enumerate(archs):
            idx = self.domain.encode(a)
            if idx is not None:
                x[r, offsets + np.asarray(idx, dtype=int)] = 1.0
        return x


def _hvi_or_gap(front: np.ndarray, points: np.ndarray, margin: float = 0.1) -> np.ndarray:
    """Acquisition of two maximised, [0, 1]-scaled objectives: the hypervolume a point adds to
    ``front`` (reference ``-margin`` below the evaluated range, so the front's ends count) where it
    adds any; otherwise minus how far it must move in both objectives to become non-dominated
    (the additive epsilon), so dominated candidates are still ordered."""
    gain = hypervolume_improvement_2d(front, points, [-margin, -margin])
    gap = np.min(np.max(front[None, :, :] - points[:, None, :], axis=2), axis=1) if len(front) else np.zeros(len(points))
    return np.where(gain > 0, gain, -np.maximum(gap, 0.0))


def _fit_ridges(x: np.ndarray, y: np.ndarray, members: int, seed: list, alpha: float = 1.0) -> list:
    """``members`` ridge regressions (closed form, intercept unpenalised), each on a bootstrap
    resample of (x, y); returns [(weights, intercept)]."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = []
    for _ in range(members):
        i = rng.integers(0, len(y), len(y))
        xs, ys = x[i], y[i]
        xm, ym = xs.mean(0), ys.mean()
        xc = xs - xm
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (ys - ym))
        out.append((w, float(ym - xm @ w)))
    return out


class PredictorGuided(IterativeAutoBuild):
    """The same loop without unit scores: the ablation that shows what module scores add."""

    name = "predictor"
    use_units = False


def _val_spearman(trained) -> float | None:
    for rec in reversed(trained.history or []):
        if "val_pred_spearman" in rec:
            v = rec["val_pred_spearman"]
            return None if v is None else float(v)
    return None


def _predict_graphs(trained, gs) -> np.ndarray:
    """Predictions (training-target units) for a pre-built GraphSet: built once per round and
    shared by the ensemble instead of rebuilding graphs per ranker."""
    import torch

    model = trained.model
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(gs), 4096):
            out.append(model(gs.batch(torch.arange(start, min(start + 4096, len(gs))))).pred)
    return torch.cat(out).numpy().astype(np.float64) * trained.y_std + trained.y_mean

