"""Search strategies, the budget-keeping driver, Pareto helpers and ``bench search``."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from autobuild_core.build import PrunedSpace
from autobuild_core.search import as_domain, hypervolume_2d, non_dominated, run_search
from autobuild_core.search.domain import PrunedDomain, SpaceDomain
from search_spaces import get_space

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


@pytest.fixture(scope="module")
def nb201():
    return get_space("nb201")


def additive(seed: int = 0):
    """A known additive score over NB-201's six edges (optimum computable by enumeration)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 1, size=(6, len(OPS)))

    def f(archs):
        return [float(sum(w[i, OPS.index(layer[0])] for i, layer in enumerate(l for cfg in a.units for l in cfg))) for a in archs]

    return f, float(w.max(axis=1).sum())


class Recorder:
    """Objective wrapper that remembers every architecture it was asked to evaluate."""

    def __init__(self, f):
        self.f, self.seen = f, []

    def __call__(self, archs):
        self.seen += list(archs)
        return self.f(archs)


def small_pruned(nb201):
    """A PrunedSpace-like object of 1 x 3 x 4 = 12 architectures (forces many duplicates)."""
    u0 = [(("nor_conv_3x3",),)]
    u1 = [(("nor_conv_3x3",), (b,)) for b in OPS[:3]]
    u2 = [(("skip_connect",), (b,), (c,)) for b, c in itertools.product(OPS[2:4], OPS[2:4])]
    return PrunedSpace(nb201, [u0, u1, u2], [[0.0] * len(u) for u in (u0, u1, u2)], {})


@pytest.mark.parametrize("method", ["random", "rea", "tpe", "nsga2", "ordered"])
def test_budget_is_unique_evaluations(nb201, method):
    f, _ = additive(1)
    dirs = ("maximize", "minimize") if method == "nsga2" else ("maximize",)
    obj = Recorder((lambda A: [(v, -v + 0.1 * i) for i, v in enumerate(f(A))]) if method == "nsga2" else f)
    res = run_search(method, nb201, obj, 40, seed=3, directions=dirs, batch_size=4)
    assert res.n_eval == 40 == len(obj.seen) == len(res.history)
    assert len(set(obj.seen)) == 40
    assert [r["n_eval"] for r in res.history] == list(range(1, 41))


@pytest.mark.parametrize("method", ["random", "rea", "tpe", "nsga2"])
def test_small_domain_duplicates_do_not_stall_or_count(nb201, method):
    f, _ = additive(2)
    dirs = ("maximize", "minimize") if method == "nsga2" else ("maximize",)
    obj = Recorder((lambda A: [(v, float(i)) for i, v in enumerate(f(A))]) if method == "nsga2" else f)
    res = run_search(method, small_pruned(nb201), obj, 30, seed=0, directions=dirs, max_retries=10)
    assert res.n_eval == 12 and res.exhausted  # the whole domain, each arch once
    assert len(obj.seen) == len(set(obj.seen)) == 12
    assert all(len(a.units[2]) == 3 and a.units[2][0] == ("skip_connect",) for a in obj.seen)


def test_initial_archs_count_against_budget_and_failures_are_kept(nb201):
    f, _ = additive(3)
    init = nb201.sample(5, seed=1)
    given = (init[0], (123.0,))  # already evaluated: not passed to the objective again

    def obj(archs):
        vals = f(archs)
        return [None if i == 0 else v for i, v in enumerate(vals)]  # first of every batch fails

    rec = Recorder(obj)
    res = run_search("rea", nb201, rec, 12, seed=0, initial=[given] + init[1:])
    assert res.n_eval == 12 and len(rec.seen) == 11 and init[0] not in rec.seen
    assert [r["source"] for r in res.history[:5]] == ["initial"] * 5
    assert res.best["values"] == (123.0,)
    assert any(r["values"] is None for r in res.history)
    assert res.best_within(1) == 123.0


def test_rea_and_tpe_beat_random_on_additive_objective(nb201):
    means = {}
    for method in ("random", "rea", "tpe"):
        found, gaps = [], []
        for s in range(4):
            f, opt = additive(100 + s)
            found.append(opt - run_search(method, nb201, f, 60, seed=s).best["values"][0])
        means[method] = float(np.mean(found))
    # mean gap to the optimum: random ~1.4, REA/TPE well under 1 on these seeds
    assert means["rea"] < 0.75 * means["random"], means
    assert means["tpe"] < 0.75 * means["random"], means


def test_nsga2_returns_non_dominated_front(nb201):
    f, _ = additive(5)
    rng = np.random.default_rng(0)
    cost = {op: c for op, c in zip(OPS, rng.uniform(0.1, 1, len(OPS)))}

    def obj(archs):
        return [(v, float(sum(cost[l[0]] for cfg in a.units for l in cfg))) for a, v in zip(archs, f(archs))]

    res = run_search("nsga2", nb201, obj, 80, seed=1, directions=("maximize", "minimize"))
    front = [r["values"] for r in res.pareto]
    assert len(front) >= 2
    for a, b in itertools.permutations(front, 2):
        assert not (b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1])), (a, b)
    every = [r["values"] for r in res.history]
    assert sorted(front) == sorted(every[i] for i in non_dominated(every, ("maximize", "minimize")))


def test_hypervolume_of_known_front():
    dirs = ("maximize", "minimize")
    front = [(3.0, 1.0), (2.0, 0.5)]
    assert hypervolume_2d(front, (0.0, 2.0), dirs) == pytest.approx(4.0)
    # a dominated point and a point beyond the reference change nothing
    assert hypervolume_2d(front + [(1.0, 1.5), (5.0, 3.0)], (0.0, 2.0), dirs) == pytest.approx(4.0)
    assert hypervolume_2d([], (0.0, 2.0), dirs) == 0.0
    assert hypervolume_2d([(1.0, 1.0)], (2.0, 2.0), ("minimize", "minimize")) == pytest.approx(1.0)
    assert non_dominated(front + [(1.0, 1.5)], dirs) == [0, 1]


def test_crowding_distance_favours_extremes_and_sparse_parts():
    from autobuild_core.search import crowding_distance

    # a front along a line: the ends are infinite, the point in the widest gap comes next
    front = np.array([[0.0, 4.0], [1.0, 3.0], [1.2, 2.8], [4.0, 0.0]])
    cd = crowding_distance(front)
    assert np.isinf(cd[0]) and np.isinf(cd[3])
    assert cd[2] > cd[1]  # (1.2, 2.8) borders the long gap to (4, 0)
    assert cd[1] == pytest.approx((1.2 - 0.0) / 4 + (4.0 - 2.8) / 4)
    assert np.all(np.isinf(crowding_distance(front[:2])))
    with pytest.raises(ValueError, match="2-D"):
        crowding_distance([1.0, 2.0])


def test_hypervolume_improvement_is_the_hypervolume_a_point_adds():
    from autobuild_core.search import hypervolume_improvement_2d

    rng = np.random.default_rng(0)
    dirs = ("maximize", "maximize")
    for n_front in (0, 1, 3, 7):
        front = rng.uniform(0, 1, (n_front, 2))
        cands = rng.uniform(-0.2, 1.2, (30, 2))
        ref = rng.uniform(-0.1, 0.3, 2)
        base = hypervolume_2d(front, ref, dirs) if n_front else 0.0
        expected = [hypervolume_2d(np.vstack([front, c[None]]), ref, dirs) - base for c in cands]
        assert np.allclose(hypervolume_improvement_2d(front, cands, ref), expected)


def test_optuna_study_persists_and_resumes(nb201, tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path / 'search.db'}"
    f, _ = additive(6)
    res = run_search("tpe", nb201, f, 15, seed=0, storage=url, study_name="s1")
    assert res.study_name == "s1"
    study = optuna.load_study(study_name="s1", storage=url)
    done = [t for t in study.trials if t.state.name == "COMPLETE" and not t.user_attrs.get("duplicate")]
    assert len(done) == 15
    assert all(t.user_attrs["arch"].startswith("|") for t in done)  # the space's own encoding
    rec = Recorder(f)
    res2 = run_search("tpe", nb201, rec, 20, seed=1, storage=url, study_name="s1")
    assert res2.n_eval == 20 and len(rec.seen) == 5  # the 15 stored evaluations are reused
    assert [r["source"] for r in res2.history[:15]] == ["prior"] * 15
    assert res2.best["values"][0] >= res.best["values"][0]


def test_domains_encode_decode_and_mutate():
    space = get_space("ofa_mbv3")
    dom = SpaceDomain(space)
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = dom.random_arch(rng)
        assert space.contains(arch)
        assert dom.decode(dom.encode(arch)) == arch
        child = dom.mutate(arch, rng)
        assert child != arch and space.contains(child)
    n_units = sum(1 for a, b in zip(arch.units, child.units) if a != b) + (arch.globals != child.globals)
    assert n_units == 1  # one dimension changed: one unit (or one global) differs
    pr = PrunedSpace(space, [[c] for c in arch.units], [[0.0] for _ in arch.units], {k: (v,) for k, v in arch.globals})
    pd_ = as_domain(pr)
    assert isinstance(pd_, PrunedDomain) and pd_.size == 1 and pd_.decode(()) == arch
    assert pd_.encode(child) is None


def test_bench_search_end_to_end(shared_dir, tmp_path, capsys):
    table = shared_dir / "data" / "nb201" / "nb201_cifar10.csv"
    if not table.exists():
        pytest.skip(f"NAS-Bench-201 table not found at {table}")
    from autobuild_cli.main import main

    out = tmp_path / "search.json"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["bench", "search", "--space", "nb201", "--table", str(table), "--budgets", "20,24", "--repeats", "1",
                   "--methods", "autobuild,autobuild-build,random,rea,tpe", "--set", "seeds.n=10", "--set", "train.epochs=5",
                   "--set", "search.options={ensemble: 1, graph_passes: 100, epochs_min: 2, epochs_max: 3}", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["optimum"] == pytest.approx(94.3733, abs=1e-3)
    printed = capsys.readouterr().out
    # progress per finished repeat, then the computed reading against the best baseline per budget
    assert "autobuild budget   24: repeat 1/1 (seed 0) done in" in printed and "tpe budget   20: repeat 1/1" in printed
    best_other = max(("random", "rea", "tpe"), key=lambda m: data["methods"][m]["24"]["best_mean"])
    assert f"autobuild {data['methods']['autobuild']['24']['best_mean']:.2f} vs {best_other}" in printed.split("Reading")[1]
    for m in ("autobuild", "autobuild-build", "random", "rea", "tpe"):
        for b in ("20", "24"):
            cell = data["methods"][m][b]
            assert set(cell) >= {"best_mean", "best_std", "regret_mean", "evaluations_used"}
            assert cell["evaluations_used"] <= int(b)
            assert cell["regret_mean"] == pytest.approx(data["optimum"] - cell["best_mean"])
    assert data["methods"]["random"]["24"]["evaluations_used"] == 24
    assert data["methods"]["autobuild-build"]["20"]["evaluations_used"] == 11  # 10 seeds + the built architecture
    assert data["settings"]["seeds"]["n"] == 10 and data["settings"]["search"]["method"] == "autobuild"


def test_log_scaled_k():
    from autobuild_core.build import log_scaled_k

    ks = log_scaled_k([5, 25, 125], 200)
    assert ks[0] <= ks[1] <= ks[2] and 100 <= np.prod(ks) <= 400
    assert log_scaled_k([9, 9], 1000) == [9, 9]
    assert log_scaled_k([7, 7, 7], 30) == [3, 3, 3]


def test_budget_free_methods_are_prefixes_of_longer_runs():
    """bench search reads smaller budgets off one long run for these methods: check that it is exact."""
    from benchmarks.search import BUDGET_FREE, bench_settings, load_bench, make_objective, run_method

    bench = load_bench("nasbench_graph", None, None, "cora")
    objective = make_objective(bench, "acc", None)
    st = bench_settings("default", ["train.epochs=5", "search.options={ensemble: 1, graph_passes: 100, epochs_min: 2, epochs_max: 3}"])
    for m in BUDGET_FREE:
        short, long = run_method(m, bench.space, objective, 25, 3, st), run_method(m, bench.space, objective, 35, 3, st)
        assert [bench.key(r["arch"]) for r in short] == [bench.key(r["arch"]) for r in long[:25]], m
    pareto = make_objective(bench, "acc", "acc,latency_ms")  # run_multi reads prefixes too
    for m in ("autobuild", "random"):  # 15 evaluations: the seeds and one round of proposals
        short, long = run_method(m, bench.space, pareto, 15, 3, st), run_method(m, bench.space, pareto, 22, 3, st)
        assert [bench.key(r["arch"]) for r in short] == [bench.key(r["arch"]) for r in long[:15]], m


def test_bench_search_keeps_finished_methods_and_resumes(tmp_path, monkeypatch, capsys):
    """The results file is written after every method; --resume reuses the finished ones and
    refuses a file written with other options."""
    import benchmarks.search as S
    from autobuild_cli.main import main

    out = tmp_path / "r.json"
    args = ["bench", "search", "--space", "nasbench_graph", "--dataset", "cora", "--budgets", "15", "--repeats", "2", "--json", str(out)]
    real = S.run_method

    def interrupted(method, *a, **k):
        if method == "tpe":
            raise KeyboardInterrupt  # as if the user stopped the run during the second method
        return real(method, *a, **k)

    monkeypatch.setattr(S, "run_method", interrupted)
    assert main(args + ["--methods", "random,tpe"]) == 130
    assert "rerun with --resume" in capsys.readouterr().err
    kept = json.loads(out.read_text())
    assert kept["complete"] is False and list(kept["methods"]) == ["random"]
    monkeypatch.setattr(S, "run_method", real)
    capsys.readouterr()
    assert main(args + ["--methods", "random,tpe", "--resume"]) == 0
    assert "random: reused from the results file" in capsys.readouterr().out
    done = json.loads(out.read_text())
    assert done["complete"] is True and list(done["methods"]) == ["random", "tpe"]
    assert done["methods"]["random"] == kept["methods"]["random"]  # reused as written, not rerun
    assert main(["bench", "search", "--space", "nasbench_graph", "--dataset", "cora", "--budgets", "20", "--repeats", "2",
                 "--json", str(out), "--methods", "random", "--resume"]) == 2
    assert "other options (budgets: file [15], now [20])" in capsys.readouterr().err
    assert json.loads(out.read_text()) == done  # a refused resume leaves the file as it was
