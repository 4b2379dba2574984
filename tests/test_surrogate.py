"""The OFA-MobileNetV3 surrogate oracle (evaluators/surrogate.py) and `bench search --surrogate`:
fit quality by cross-validation on the real measured table, the evaluator contract (determinism,
fingerprint, failures with reasons), the exactness of its optimum, and a tiny search through the
AutoBuild driver."""

from __future__ import annotations

import json

import numpy as np
import pytest

from search_spaces import get_space
from search_spaces.errors import ConfigError, EncodingError

OFA_TABLE = "ofa_mbv3_imagenet/ofa_mbv3_w10_top1.jsonl"


@pytest.fixture(scope="module")
def data_dir(shared_dir):
    data = shared_dir / "data"
    if not (data / OFA_TABLE).is_file():
        pytest.skip(f"OFA-MobileNetV3 ImageNet table {data / OFA_TABLE} not found")
    return data


@pytest.fixture(scope="module")
def surrogate(data_dir):
    from evaluators.surrogate import OFASurrogateEvaluator

    return OFASurrogateEvaluator(data_dir / OFA_TABLE)


def test_fit_quality_by_cross_validation(surrogate):
    cv = surrogate.cv
    assert cv["n"] == surrogate.n_train > 700 and cv["folds"] == 5
    # held-out ranking and error: a surrogate only stands in for ImageNet if it ranks unseen subnets well
    assert cv["spearman"] > 0.9 and cv["kendall"] > 0.75 and cv["r2"] > 0.9
    assert cv["rmse"] < cv["table_std"] / 3
    assert min(cv["spearman_per_fold"]) > 0.85


def test_evaluator_is_deterministic_and_fingerprinted(surrogate, data_dir):
    from evaluators import get_evaluator
    from evaluators.surrogate import OFASurrogateEvaluator

    space = surrogate.space
    archs = space.sample(50, seed=3)
    a = surrogate.evaluate(space, archs)
    b = get_evaluator("ofa_mbv3_surrogate", path=data_dir / OFA_TABLE).evaluate(space, [space.format(x) for x in archs], seed=7)
    assert all(r.ok for r in a) and [r.metrics for r in a] == [r.metrics for r in b]
    assert {r.fingerprint for r in a + b} == {surrogate.fingerprint()}
    assert surrogate.metric_names() == ["top1"] and surrogate.deterministic
    other = OFASurrogateEvaluator(data_dir / OFA_TABLE, alpha=surrogate.alpha * 10)
    assert other.fingerprint() != surrogate.fingerprint()
    # predictions stay in a plausible range for ImageNet top-1 of these subnets
    preds = np.array([r.metrics["top1"] for r in a])
    assert 60 < preds.min() and preds.max() < 85
    with pytest.raises(ConfigError):
        OFASurrogateEvaluator(data_dir / OFA_TABLE, alpha=0.0)


def test_other_resolutions_fail_with_a_reason(surrogate):
    full = get_space("ofa_mbv3")
    arch = full.assemble(full.sample(1, seed=0)[0].units, {"r": 192})
    rec = surrogate.evaluate(full, [arch])[0]
    assert not rec.ok and "resolution 224" in rec.error
    with pytest.raises(EncodingError):
        surrogate.space.parse({**full.format(arch)})
    from search_spaces.ofa_mbv3 import OFAMobileNetV3Space

    assert full.size() == 9 * surrogate.space.size()
    with pytest.raises(EncodingError, match="subset of"):
        OFAMobileNetV3Space(resolutions=(100,))


def test_optimum_is_exact(surrogate):
    space = surrogate.space
    best, value = surrogate.optimum()
    assert space.contains(best) and value == pytest.approx(float(surrogate.predict([best])[0]))
    assert value > max(surrogate.predict(surrogate.table_archs)) and value > max(surrogate.predict(space.sample(2000, seed=1)))
    # no single change (one layer's e or k, or one unit's depth) improves it
    from autobuild_core.search import as_domain

    dom = as_domain(space)
    rng = np.random.default_rng(0)
    neighbours = [dom.mutate(best, rng) for _ in range(300)]
    assert len({space.key(n) for n in neighbours}) > 50
    assert max(surrogate.predict(neighbours)) <= value + 1e-9
    assert space.size() == 7371 ** 5


def test_bench_search_surrogate_through_the_driver(data_dir, tmp_path):
    from autobuild_cli.main import main

    out = tmp_path / "ofa.json"
    rc = main(["bench", "search", "--surrogate", "ofa_mbv3", "--data", str(data_dir), "--methods", "autobuild,random",
               "--budgets", "20", "--repeats", "1", "--quiet", "--json", str(out),
               "--set", "search.options={ensemble: 1, graph_passes: 100, epochs_min: 2, epochs_max: 3}", "--set", "train.epochs=3"])
    assert rc == 0
    res = json.loads(out.read_text())
    sur = res["surrogate"]
    assert res["optimum"] == pytest.approx(sur["optimum"]) and sur["space_size"] == 7371 ** 5
    for m in ("autobuild", "random"):
        cell = res["methods"][m]["20"]
        assert cell["evaluations_used"] == 20
        assert 60 < cell["best_mean"] <= res["optimum"] + 1e-9


def test_missing_table_is_a_clear_error(tmp_path):
    from benchmarks.search import load_surrogate_bench

    with pytest.raises(ConfigError, match="does not exist"):
        load_surrogate_bench("ofa_mbv3", str(tmp_path))
    with pytest.raises(ConfigError, match="unknown surrogate"):
        load_surrogate_bench("nb201", str(tmp_path))


@pytest.fixture(scope="module")
def trees(data_dir):
    from evaluators.surrogate import OFASurrogateEvaluator

    return OFASurrogateEvaluator(data_dir / OFA_TABLE, model="gbt")


def test_tree_surrogate_fits_has_interactions_and_a_local_optimum(trees, surrogate, data_dir):
    """The harder oracle: held-out fit as good as the ridge's in rank, not additive, deterministic,
    and its reference optimum is a local maximum above every measured subnet's prediction."""
    from evaluators.surrogate import OFASurrogateEvaluator, _ridge_path

    cv = trees.cv
    assert cv["n"] == trees.n_train and cv["spearman"] > 0.9 and cv["rmse"] < cv["table_std"] / 3
    space = trees.space
    sample = space.sample(3000, seed=5)
    pred = trees.predict(sample)
    assert trees.settings()["model"] == "gbt-numeric-v1" and trees.alpha is None
    assert trees.fingerprint() != surrogate.fingerprint()
    # not additive: the best additive (one-hot ridge) fit of its own predictions leaves a visible share unexplained
    X = np.stack([surrogate._feat.row(space.format(a)) for a in sample])
    b, w = _ridge_path(X[:2000], pred[:2000], [1.0])[0]
    resid = pred[2000:] - (X[2000:] @ w + b)
    assert 1 - resid.var() / pred[2000:].var() < 0.99
    best, value = trees.optimum()
    assert space.contains(best) and value == pytest.approx(float(trees.predict([best])[0]))
    assert value >= max(trees.predict(trees.table_archs)) and value >= pred.max()
    moves = trees._moves(trees._feat.numeric(space.format(best)))
    assert len(moves) > 100 and trees._predict_numeric(moves).max() <= value + 1e-12
    again = OFASurrogateEvaluator(data_dir / OFA_TABLE, model="gbt")
    assert np.array_equal(again.predict(sample[:200]), pred[:200])
    with pytest.raises(ConfigError, match="takes none"):
        OFASurrogateEvaluator(data_dir / OFA_TABLE, model="gbt", alpha=1.0)
    with pytest.raises(ConfigError, match="unknown surrogate model"):
        OFASurrogateEvaluator(data_dir / OFA_TABLE, model="forest")


def test_bench_search_tree_surrogate_reports_a_bound(data_dir, tmp_path):
    from autobuild_cli.main import main

    out = tmp_path / "gbt.json"
    assert main(["bench", "search", "--surrogate", "ofa_mbv3_gbt", "--data", str(data_dir), "--methods", "random,rea",
                 "--budgets", "30", "--repeats", "1", "--quiet", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    sur = res["surrogate"]
    assert sur["kind"] == "gbt" and sur["optimum_exact"] is False and res["optimum"] == pytest.approx(sur["optimum"])
    for m in ("random", "rea"):
        assert res["methods"][m]["30"]["evaluations_used"] == 30 and res["methods"][m]["30"]["best_mean"] <= res["optimum"] + 1e-9
