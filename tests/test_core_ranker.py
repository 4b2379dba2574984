"""The ranker, its training, moments, scoring, importance, build/prune and persistence, on real
NB-201 data (skipped without ../shared) and on the real spaces."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from autobuild_core.baseline import ridge_spearman
from autobuild_core.build import build_arch, prune_space
from search_spaces.errors import CheckpointError, ConfigError
from search_spaces.graph import GraphSet
from autobuild_core.importance import feature_importance
from autobuild_core.loss import hard_rank, soft_spearman
from autobuild_core.metrics import spearman
from autobuild_core.ranker import Ranker, RankerConfig
from autobuild_core.scoring import score_units
from autobuild_core.train import TrainConfig, TrainedRanker, train_ranker
from search_spaces import get_space


@pytest.fixture(scope="module")
def nb201_data(shared_dir):
    df = pd.read_csv(shared_dir / "data" / "nb201" / "nb201_cifar10.csv")
    space = get_space("nb201")
    rng = np.random.default_rng(7)
    idx = rng.permutation(len(df))[:1300]
    archs = [space.parse(s) for s in df.arch.values[idx]]
    return space, archs, df.cifar10_test_acc.values[idx]


@pytest.fixture(scope="module")
def trained(nb201_data):
    space, archs, y = nb201_data
    return train_ranker(space, archs[:300], y[:300], RankerConfig(), TrainConfig(epochs=60, lr=1e-3, val_fraction=0.1, seed=3))


def test_graphset_batch_matches_naive_collation():
    space = get_space("ofa_mbv3")
    graphs = [space.to_graph(a) for a in space.sample(6, seed=1)]
    gs = GraphSet(graphs)
    b = gs.batch([4, 1, 3])
    offset, edges = 0, []
    for i in [4, 1, 3]:
        edges.append(graphs[i].edge_index + offset)
        offset += graphs[i].num_nodes
    assert torch.equal(b.edge_index, torch.cat(edges, 1))
    assert torch.equal(b.x_cat, torch.cat([graphs[i].x_cat for i in [4, 1, 3]]))
    assert b.batch.tolist() == sum(([j] * graphs[i].num_nodes for j, i in enumerate([4, 1, 3])), [])


def test_soft_spearman_tracks_exact_and_ranks_both_sides():
    torch.manual_seed(0)
    x = torch.randn(64, requires_grad=True)
    y = x.detach() ** 3 + 0.3 * torch.randn(64)  # monotone-ish but not linear: ranks matter
    rho = soft_spearman(x, y, tau=0.01)
    assert float(rho.detach()) == pytest.approx(spearman(x.detach().numpy(), y.numpy()), abs=0.02)
    (-rho).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert hard_rank(torch.tensor([3.0, 1.0, 3.0])).tolist() == [2.5, 1.0, 2.5]


def test_embeddings_are_non_negative_and_hops_complete():
    space = get_space("ofa_mbv3")
    model = Ranker(space.features, RankerConfig(gnn="gin", layers=3)).eval()
    out = model(GraphSet([space.to_graph(a) for a in space.sample(4, seed=0)]).batch())
    assert len(out.node_h) == 4 and len(out.graph_h) == 4
    assert all(float(h.min()) >= 0 for h in out.node_h)
    assert out.graph_norms().shape == (4, 4)


def test_training_lowers_loss_and_raises_hop_spearman(nb201_data, trained):
    space, archs, y = nb201_data
    test_archs, test_y = archs[300:1300], y[300:1300]
    untrained = train_ranker(space, archs[:300], y[:300], RankerConfig(), TrainConfig(epochs=1, lr=1e-9, seed=3))
    before = untrained.evaluate(test_archs, test_y)
    after = trained.evaluate(test_archs, test_y)
    losses = [h["loss"] for h in trained.history]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:3])
    assert after["hop_spearman"][-1] > before["hop_spearman"][-1] + 0.2
    assert after["hop_spearman"][-1] > 0.6 and after["pred_spearman"] > 0.6
    assert len(after["hop_spearman"]) == RankerConfig().layers + 1


def test_training_is_deterministic_on_cpu(nb201_data):
    space, archs, y = nb201_data
    cfg = TrainConfig(epochs=3, lr=1e-3, seed=11)
    a = train_ranker(space, archs[:120], y[:120], train=cfg).predict(archs[200:260])
    b = train_ranker(space, archs[:120], y[:120], train=cfg).predict(archs[200:260])
    np.testing.assert_array_equal(a, b)


def test_moments(trained, nb201_data):
    space, archs, y = nb201_data
    assert len(trained.hop_moments) == trained.num_hops
    assert all(s > 0 for _, s in trained.hop_moments)
    # nb201 units have fixed depths 1, 2, 3: one moment per unit, equal to the training targets'
    assert sorted(trained.unit_moments) == [(0, 1), (1, 2), (2, 3)]
    m, s, n = trained.unit_moments[(1, 2)]
    assert n == trained.meta["n_train"] and m == pytest.approx(trained.y_mean)


def test_unit_scores_equal_scores_inside_whole_networks(trained):
    """A unit configuration's exit-node norm on its own graph appears, identically, in a whole
    network made with that configuration (the receptive-field invariant, end to end)."""
    for name in ("nb201", "ofa_mbv3"):
        space = get_space(name)
        model = trained.model if name == "nb201" else Ranker(space.features, RankerConfig()).eval()
        for arch in space.sample(3, seed=5):
            g = space.to_graph(arch)
            with torch.no_grad():
                hs = model.node_embeddings(g.x_cat, g.x_cont, g.edge_index)
            for u, cfg in enumerate(arch.units):
                ug = space.unit_graph(u, cfg, arch.global_dict)
                with torch.no_grad():
                    uh = model.node_embeddings(ug.graph.x_cat, ug.graph.x_cont, ug.graph.edge_index)
                hop = min(ug.hop, model.num_hops - 1)
                target = uh[hop][ug.exit_node]
                diffs = (hs[hop] - target).abs().sum(1)
                assert float(diffs.min()) < 1e-4, f"{name} unit {u}: no node of the whole network matches"


def test_score_units_build_and_prune(trained):
    space = get_space("nb201")
    scores = score_units(trained, space)
    assert list(scores.groupby("unit").size()) == [5, 25, 125]
    assert scores.groupby("unit")["rank"].min().tolist() == [1, 1, 1]
    imp = feature_importance(trained, space)
    assert set(imp.feature) == {f.name for f in space.features}
    assert len(imp) == sum(len(f.values) for f in space.features)
    assert (imp.score >= 0).all()
    arch = build_arch(space, scores, imp)
    for u, cfg in enumerate(arch.units):
        best = scores[(scores.unit == u) & (scores["rank"] == 1)].iloc[0]
        assert json.loads(best.config) == [list(x) for x in cfg]
    pruned = prune_space(space, scores, k=[2, 3, 4], importance=imp)
    assert pruned.size == 24
    archs = list(pruned.enumerate_by_score())
    assert len(archs) == 24 and len(set(archs)) == 24
    assert archs[0] == arch
    totals = [sum(pruned.unit_scores[u][pruned.unit_choices[u].index(c)] for u, c in enumerate(a.units)) for a in archs]
    assert all(t1 >= t2 - 1e-9 for t1, t2 in zip(totals, totals[1:]))
    assert all(pruned.contains(a) for a in pruned.sample(10, seed=0))
    with pytest.raises(ConfigError, match="prune.k"):
        prune_space(space, scores, k=[1, 2])


def test_global_choices_come_from_feature_importance():
    """ofa_mbv3's resolution is a global choice read out of the FE-MLP's `r` coordinate."""
    space = get_space("ofa_mbv3")
    archs = space.sample(40, seed=0, stratified=True)
    y = np.array([a.global_dict["r"] / 10 + sum(len(c) for c in a.units) for a in archs], dtype=float)
    tr = train_ranker(space, archs, y, train=TrainConfig(epochs=2, lr=1e-3))
    imp = feature_importance(tr, space, archs)
    r_rows = imp[imp.feature == "r"]
    assert len(r_rows) == len(space.global_choices["r"])
    scores = score_units(tr, space, units=[0])
    assert len(scores) == 9**2 + 9**3 + 9**4


def test_save_load_scores_identically(tmp_path, trained):
    space = get_space("nb201")
    path = trained.save(tmp_path / "ranker")
    again = TrainedRanker.load(path)
    a, b = score_units(trained, space), score_units(again, space)
    np.testing.assert_array_equal(a.score.values, b.score.values)
    assert again.unit_moments == trained.unit_moments
    (path / "ranker.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupted"):
        TrainedRanker.load(path)
    with pytest.raises(CheckpointError, match="No ranker checkpoint"):
        TrainedRanker.load(tmp_path / "nowhere")


def test_too_few_or_bad_targets_are_clear_errors(nb201_data):
    space, archs, y = nb201_data
    with pytest.raises(ConfigError, match="Too few evaluated architectures"):
        train_ranker(space, archs[:5], y[:5])
    with pytest.raises(ConfigError, match="NaN"):
        train_ranker(space, archs[:50], np.r_[y[:49], np.nan])
    with pytest.raises(ConfigError, match="identical"):
        train_ranker(space, archs[:50], np.ones(50))
    with pytest.raises(ConfigError, match="ranker.gnn"):
        RankerConfig(gnn="gcn")


def test_ridge_baseline(nb201_data):
    space, archs, y = nb201_data
    rho = ridge_spearman(space, archs[:300], y[:300], archs[300:800], y[300:800])
    assert 0.3 < rho < 1.0
