"""Iterative AutoBuild (``autobuild``) and the predictor-guided baseline (``predictor``) on real
tables: NAS-Bench-Graph (the installed wheel, always there) and NAS-Bench-201 (shared data,
skipped when absent). Settings are shrunk (2 rankers, few epochs) so the file runs in seconds."""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd
import pytest

from autobuild_core.search import IterativeSettings, get_strategy, list_methods, run_search
from autobuild_core.search.autobuild import transform_targets
from search_spaces import get_space
from search_spaces.errors import ConfigError

FAST = dict(ensemble=2, graph_passes=200, epochs_min=6, epochs_max=10, pool_mutations=100, pool_units=60, pool_random=60)


@pytest.fixture(scope="module")
def nbg():
    from search_spaces.nasbench_graph import load_bench

    space = get_space("nasbench_graph")
    table = load_bench("cora")
    return space, table


class TableObjective:
    """Table lookups that remember every architecture they were asked to evaluate."""

    def __init__(self, space, table, metrics=("acc",)):
        self.space, self.table, self.metrics, self.seen = space, table, metrics, []

    def __call__(self, archs):
        self.seen += list(archs)
        out = []
        for a in archs:
            m = self.table.get(self.space.key(a))
            out.append(None if m is None else tuple(float(m[k]) for k in self.metrics))
        return out


def _search(method, space, obj, budget, seed=0, **kw):
    from autobuild_core.search import as_domain

    kw.setdefault("settings", FAST)
    return run_search(method, as_domain(space, key=space.key), obj, budget, seed=seed, **kw)


def test_registered():
    assert {"autobuild", "predictor"} <= set(list_methods())
    assert get_strategy("autobuild").name == "autobuild"
    with pytest.raises(Exception):
        IterativeSettings(no_such_field=1)


@pytest.mark.parametrize("method", ["autobuild", "predictor"])
def test_budget_unique_and_deterministic(nbg, method):
    space, table = nbg
    runs = []
    for _ in range(2):
        obj = TableObjective(space, table)
        res = _search(method, space, obj, 26, seed=5)
        keys = [space.key(a) for a in obj.seen]
        assert res.n_eval == 26 and len(obj.seen) == 26
        assert len(set(keys)) == len(keys), "an architecture was evaluated twice"
        runs.append(keys)
    assert runs[0] == runs[1], "same seed, different search"


def test_prior_observations_and_on_round(nbg):
    space, table = nbg
    prior_archs = space.sample(12, seed=3)
    prior = list(zip(prior_archs, TableObjective(space, table)(prior_archs)))
    obj = TableObjective(space, table)
    rounds = []
    res = _search("autobuild", space, obj, 40, seed=1, initial=prior, on_round=rounds.append)
    assert res.n_eval == 40 and len(obj.seen) == 40 - 12, "prior observations must not be evaluated again"
    assert not {space.key(a) for a in obj.seen} & {space.key(a) for a in prior_archs}
    # n_init (10) is covered by the 12 prior observations: the first round trains on them at once
    assert rounds and rounds[0]["n_evaluated"] == 12
    first = rounds[0]
    for key in ("round", "n_evaluated", "val_spearman", "val_spearman_members", "epochs", "unit_scores", "pruned", "changed", "batch", "pool_size", "seconds"):
        assert key in first, key
    assert isinstance(first["unit_scores"], pd.DataFrame) and {"unit", "label", "score", "rank"} <= set(first["unit_scores"].columns)
    assert first["pruned"]["size"] >= 1 and len(first["pruned"]["k"]) == len(space.units)
    assert all(len(u) == k for u, k in zip(first["pruned"]["units"], first["pruned"]["k"]))
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert all(isinstance(c, dict) and {"unit", "before", "after"} <= set(c) for r in rounds for c in r["changed"])
    assert all(r["val_spearman"] is None or -1 <= r["val_spearman"] <= 1 for r in rounds)
    # each round keeps the batch it proposed (not emptied as the driver takes proposals)
    assert all(len(r["batch"]) >= 1 for r in rounds) and sum(len(r["batch"]) for r in rounds) >= 40 - 12


def test_rounds_record_where_picks_came_from_and_credit_gates_the_pruned_share(nbg):
    space, table = nbg
    runs = {}
    for credit in (False, True):
        rounds = []
        _search("autobuild", space, TableObjective(space, table), 50, seed=4, on_round=rounds.append,
                settings={**FAST, "pool_mutations": 10, "pool_units": 200, "pool_random": 10,  # a pool mostly from the pruned space
                          "units_credit": credit, "units_credit_min": 1, "units_credit_floor": 0.0})
        runs[credit] = rounds
    later = runs[False][-1]["source_percentile"]
    assert later and set(later) <= {"neighbour", "units", "uniform"}
    assert all(0 <= pct <= 1 and n >= 1 for pct, n in later.values())
    assert sum(n for _, n in later.values()) > 10  # model-chosen picks evaluated so far
    assert all(r["units_share"] == 1.0 for r in runs[False])
    # with the gate on, a round whose pruned-space picks ranked below the others draws none from it
    for r in runs[True]:
        sp = r["source_percentile"]
        others = [(p, n) for src, (p, n) in sp.items() if src != "units"]
        if "units" in sp and others:
            mean_other = sum(p * n for p, n in others) / sum(n for _, n in others)
            assert r["units_share"] == (1.0 if sp["units"][0] >= mean_other else 0.0)
    assert any(r["units_share"] == 0.0 for r in runs[True])  # on this seed the pruned-space picks do rank lower


def test_ridge_members_fit_an_additive_table_and_join_the_ensemble(nbg):
    """The probe option ``ridge_members``: each bootstrap ridge recovers an additive function of the
    one-hot encoding, and a search with them stays within budget, without repeats."""
    from autobuild_core.search import as_domain
    from autobuild_core.search.autobuild import IterativeAutoBuild, _fit_ridges

    rng = np.random.default_rng(0)
    x = np.eye(4)[rng.integers(0, 4, 300)]
    y = x @ np.array([0.0, 1.0, 2.0, 3.0]) + 0.01 * rng.normal(size=300)
    for w, b in _fit_ridges(x, y, 2, [7]):
        assert np.abs(x @ w + b - y).max() < 0.1  # ridge shrinks a little (alpha 1 on ~75 rows a level)
    space, table = nbg
    obj = TableObjective(space, table)
    res = _search("autobuild", space, obj, 30, seed=2, settings={**FAST, "ridge_members": 2})
    assert res.n_eval == 30 and len({space.key(a) for a in obj.seen}) == 30
    strat = IterativeAutoBuild(as_domain(space, key=space.key), ["maximize"], 0, 30, settings={**FAST, "ridge_members": 1})
    onehot = strat._onehot(space.sample(3, seed=1))
    assert onehot.shape == (3, sum(d.size for d in strat.domain.dims)) and (onehot.sum(1) == len(strat.domain.dims)).all()


def test_units_until_and_units_min_spearman_stop_drawing_from_the_pruned_space(nbg):
    """``units_until``: rounds before that many evaluations draw the pruned-space share, later ones
    none (unit scores and the pruned space are still computed and recorded every round);
    ``units_min_spearman``: none while the rankers' mean held-out Spearman is below it."""
    space, table = nbg
    rounds = []
    res = _search("autobuild", space, TableObjective(space, table), 40, seed=4, settings={**FAST, "units_until": 30},
                  on_round=rounds.append)
    assert res.n_eval == 40
    trained = [r for r in rounds if r["pruned"] is not None]
    assert trained and all(r["units_share"] == (0.0 if r["n_evaluated"] >= 30 else 1.0) for r in trained), \
        [(r["n_evaluated"], r["units_share"]) for r in trained]
    assert any(r["n_evaluated"] >= 30 for r in trained) and all(r["unit_scores"] is not None for r in trained)
    # units_min_spearman: no pruned-space share once the rankers' mean held-out Spearman so far is below it
    rounds = []
    _search("autobuild", space, TableObjective(space, table), 40, seed=4, settings={**FAST, "units_min_spearman": 0.999},
            on_round=rounds.append)
    seen = []
    for r in (r for r in rounds if r["pruned"] is not None):
        seen += [r["val_spearman"]] if r["val_spearman"] is not None else []
        assert r["units_share"] == (0.0 if seen and np.mean(seen) < 0.999 else 1.0), (r["round"], r["val_spearman"], r["units_share"])
    assert seen, "no round had a held-out Spearman"


def test_explore_units_swaps_one_unit_for_a_kept_configuration(nbg):
    """The probe option ``explore_units``: a model-free mutation replaces one unit of an evaluated
    architecture with a configuration the round's pruned space kept; random edits (the default)
    also reach configurations it dropped."""
    space, table = nbg

    def off_menu(explore_units):
        rounds, obj = [], TableObjective(space, table)
        _search("autobuild", space, obj, 25, seed=3, on_round=rounds.append,
                settings={**FAST, "explore_fraction": 1.0, "explore_units": explore_units})
        bad = 0
        for r in rounds:
            seen = obj.seen[: r["n_evaluated"]]
            for a in r["batch"]:
                diffs = [[u for u, (x, y) in enumerate(zip(a.units, b.units)) if x != y] for b in seen]
                one = [d[0] for d in diffs if len(d) == 1]
                assert one or explore_units == 0  # a unit swap is one unit away from an evaluated parent
                kept = any(space.format_config(u, a.units[u]) in r["pruned"]["units"][u] for u in one)
                bad += not kept
        return bad, sum(len(r["batch"]) for r in rounds)

    bad, n = off_menu(1.0)
    assert n >= 10 and bad == 0
    assert off_menu(0.0)[0] > 0


def test_units_thompson_keeps_one_members_top_configurations(nbg):
    """The probe option ``units_thompson``: each round's pruned space is one ranker's top
    configurations, drawn at random, not the ensemble mean's; with a single ranker the two agree,
    so the search is the same evaluation for evaluation."""
    space, table = nbg

    def rounds_of(ensemble, thompson):
        rounds, obj = [], TableObjective(space, table)
        _search("autobuild", space, obj, 25, seed=5, on_round=rounds.append,
                settings={**FAST, "ensemble": ensemble, "units_thompson": thompson})
        return rounds, [space.key(a) for a in obj.seen]

    def mean_top(r):  # the kept labels per unit by the ensemble mean (what the default keeps)
        df = r["unit_scores"]
        return [df[df["unit"] == u].sort_values("score", ascending=False, kind="stable").head(len(kept))["label"].tolist()
                for u, kept in enumerate(r["pruned"]["units"])]

    one, seen_one = rounds_of(1, True)
    assert seen_one == rounds_of(1, False)[1]
    assert all(r["pruned"]["units"] == mean_top(r) for r in one if r["pruned"] is not None)
    two, _ = rounds_of(3, True)
    trained = [r for r in two if r["pruned"] is not None]
    assert trained and any(r["pruned"]["units"] != mean_top(r) for r in trained)


def test_units_temperature_weights_the_space_by_unit_scores(nbg):
    """The probe option ``units_temperature``: the pool's unit share is drawn from the whole space,
    each unit's configuration with probability growing with its unit score. Near zero it always
    takes each unit's top-scored configuration; very high, any of them."""
    space, table = nbg

    def model_picks_with_top_units(temperature):
        rounds = []
        _search("autobuild", space, TableObjective(space, table), 25, seed=6, on_round=rounds.append,
                settings={**FAST, "units_temperature": temperature, "pool_mutations": 0, "pool_random": 0,
                          "explore_fraction": 0.0})
        shares = []
        for r in (r for r in rounds if r["unit_scores"] is not None):
            df = r["unit_scores"]
            top = [df[df["unit"] == u].sort_values("score", ascending=False, kind="stable").iloc[0]["label"]
                   for u in range(len(space.units))]
            picks = r["batch"][: r["pool_size"]]  # the pool holds only the weighted draws: these came from it
            shares += [all(space.format_config(u, c) == top[u] for u, c in enumerate(a.units)) for a in picks]
        return shares

    cold = model_picks_with_top_units(0.01)
    assert cold and all(cold)
    hot = model_picks_with_top_units(100.0)
    assert hot and not any(hot)


def test_driver_searches_on_when_most_seeds_fail(nbg):
    """A table that holds a small part of the space (NAS-Bench-Graph's proteins table: 2,021 of
    26,206 architectures) fails most seeds: the driver skips its seed ranker and the iterative
    search spends the budget, training its rankers once enough evaluations succeed; a
    non-iterative search still needs the seed ranker and says why."""
    from autobuild_core.driver import AutoBuild, AutoBuildSettings

    space, table = nbg
    obj = TableObjective(space, table)
    held = lambda a: zlib.crc32(str(space.key(a)).encode()) % 4 == 0  # noqa: E731  (a quarter of the space, fixed)
    sparse = lambda archs: [v if held(a) else None for a, v in zip(archs, obj(archs))]  # noqa: E731
    st = AutoBuildSettings.model_validate({"seeds": {"n": 12}, "search": {"budget": 60, "options": FAST}})
    res = AutoBuild(space, sparse, st, seed=1).run()
    ok = [r for r in res.history if r["values"] is not None]
    seeds_ok = [r for r in res.history if r["source"] == "seed" and r["values"] is not None]
    assert len(res.history) == 60 and res.ranker is None and res.built == [] and len(seeds_ok) < 8 and 10 <= len(ok) < 40
    assert res.best["values"][0] == max(r["values"][0] for r in ok)
    with pytest.raises(ConfigError, match="seed architectures were evaluated successfully"):
        AutoBuild(space, sparse, st.model_copy(update={"search": st.search.model_copy(update={"method": "tpe", "options": {}})}), seed=1).run()


def test_predictor_has_no_unit_scores(nbg):
    space, table = nbg
    rounds = []
    _search("predictor", space, TableObjective(space, table), 25, seed=2, on_round=rounds.append)
    assert rounds and all(r["unit_scores"] is None and r["pruned"] is None for r in rounds)
    assert all(r["units_share"] == 0.0 and "units" not in r["source_percentile"] for r in rounds)


def test_two_objectives(nbg):
    space, table = nbg
    obj = TableObjective(space, table, metrics=("acc", "latency_ms"))
    res = _search("autobuild", space, obj, 30, seed=0, directions=("maximize", "minimize"))
    assert res.n_eval == 30 and len(res.pareto) >= 1
    keys = [space.key(a) for a in obj.seen]
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("options", [dict(mo_acquisition="parego", front_order="sum"), dict(mo_acquisition="hvi", front_order="crowding")])
def test_two_objective_acquisitions_and_parent_orders(nbg, options):
    """Each two-objective acquisition and parent order runs its own proposals (not silently the
    other) and keeps the budget's evaluations unique."""
    space, table = nbg
    runs = {}
    for opts in (options, dict(mo_acquisition="hvi" if options["mo_acquisition"] == "parego" else "parego",
                               front_order=options["front_order"])):
        obj = TableObjective(space, table, metrics=("acc", "latency_ms"))
        res = _search("autobuild", space, obj, 30, seed=4, directions=("maximize", "minimize"), settings={**FAST, **opts})
        keys = [space.key(a) for a in obj.seen]
        assert res.n_eval == 30 and len(set(keys)) == len(keys) and len(res.pareto) >= 1
        runs[opts["mo_acquisition"]] = keys
    assert runs["hvi"][:10] == runs["parego"][:10]  # same seeds
    assert runs["hvi"][10:] != runs["parego"][10:]  # different acquisitions pick differently


def test_targets_clipped_from_below():
    y = transform_targets(np.array([10.0, 10.0, 10.0, 90.0, 91.0, 92.0, np.nan]), "maximize", 0.5)
    assert y.min() == pytest.approx(np.quantile([10, 10, 10, 90, 91, 92], 0.5)) and np.isfinite(y).all()
    lat = transform_targets(np.array([1.0, 10.0, 100.0]), "minimize", 0.0)
    assert lat[0] > lat[1] > lat[2]


def test_needs_a_space():
    from autobuild_core.search.domain import Domain

    class Bare(Domain):
        dims = ()

        def decode(self, indices):
            return None

        def encode(self, arch):
            return ()

        def _all_archs(self):
            return iter(())

        @property
        def size(self):
            return 1

    with pytest.raises(ConfigError):
        get_strategy("autobuild")(Bare(), ("maximize",), 0, 10)


def test_finds_top_one_percent_nb201(shared_dir):
    from evaluators.tables import NB201TableEvaluator

    path = shared_dir / "data" / "nb201" / "nb201_cifar10.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    ev = NB201TableEvaluator(path)
    space = get_space("nb201")
    accs = np.array([m["cifar10_test_acc"] for m in ev._loaded().values()])
    top1 = float(np.quantile(accs, 0.99))

    def obj(archs):
        return [(ev.lookup(space.format(a))["cifar10_test_acc"],) for a in archs]

    from autobuild_core.search import as_domain

    res = run_search("autobuild", as_domain(space), obj, 60, seed=0, settings=FAST)
    assert res.best["values"][0] >= top1, f"best {res.best['values'][0]:.2f} below the top-1% threshold {top1:.2f}"


def test_table_holding_part_of_the_space_is_searched_through_its_rows():
    """NAS-Bench-Graph's proteins table holds 2,021 of the space's architectures: it is detected as
    partial (Cora is not), and every method, seeds and the built architecture included, evaluates
    only listed architectures, so no evaluation of the budget fails."""
    from autobuild_core.driver import AutoBuild, AutoBuildSettings
    from autobuild_core.search import SubsetDomain, as_domain
    from evaluators import partial_table_archs
    from evaluators.tables import NASBenchGraphEvaluator
    from search_spaces.nasbench_graph import load_bench

    space = get_space("nasbench_graph")
    assert partial_table_archs(NASBenchGraphEvaluator("cora"), space) is None
    rows = partial_table_archs(NASBenchGraphEvaluator("proteins"), space)
    assert rows is not None and len(rows) == 2021
    table = load_bench("proteins")
    listed = {space.key(a) for a in rows}
    dom = as_domain(space, key=space.key, only=rows)
    assert isinstance(dom, SubsetDomain) and dom.size == 2021
    rng = np.random.default_rng(0)
    assert all(dom.admits(dom.decode(dom.mutate_indices(dom.random_indices(rng), rng))) for _ in range(50))
    for method in ("random", "rea", "tpe", "autobuild"):
        obj = TableObjective(space, table)
        res = run_search(method, as_domain(space, key=space.key, only=rows), obj, 30, seed=3,
                         **({"settings": FAST} if method == "autobuild" else {}))
        keys = [space.key(a) for a in obj.seen]
        assert res.n_eval == 30 and len(set(keys)) == 30, method
        assert set(keys) <= listed and all(r["values"] is not None for r in res.history), method
    obj = TableObjective(space, table)
    st = AutoBuildSettings.model_validate({"seeds": {"n": 12}, "train": {"epochs": 10}, "search": {"budget": 40, "options": FAST}})
    res = AutoBuild(space, obj, st, seed=1, only=rows).run()
    assert len(res.history) == 40 and all(r["values"] is not None for r in res.history)
    assert res.ranker is not None and res.built and all(space.key(a) in listed for a in res.built)
    assert {space.key(a) for a in obj.seen} <= listed
