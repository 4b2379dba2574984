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


@pytest.mark.parametrize("name", ["nb201", "ofa_mbv3"])
def test_an_epochs_batches_cut_in_one_pass_equal_single_batches(name):
    space = get_space(name)
    gs = GraphSet([space.to_graph(a) for a in space.sample(200, seed=2)])
    order = torch.randperm(200, generator=torch.Generator().manual_seed(0))[:170]
    bounds = [0, 64, 128, 140, 170]
    for dedupe in (0, 4):
        got = list(gs.batches(order, bounds, dedupe=dedupe))
        assert len(got) == 4
        for i, b in enumerate(got):
            ref = gs.batch(order[bounds[i]:bounds[i + 1]], dedupe=dedupe)
            assert b.num_graphs == ref.num_graphs
            for f in ("x_cat", "x_cont", "edge_index", "batch", "sizes", "node_of", "row_node"):
                mine, theirs = getattr(b, f), getattr(ref, f)
                assert (mine is None and theirs is None) or torch.equal(mine, theirs), (dedupe, i, f)


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


# ---- message passing, checkpoint selection, configs and presets --------------------------------

@pytest.mark.parametrize("gnn", ["gatv2", "graphconv", "gin"])
def test_own_message_passing_equals_pyg_layers(gnn):
    """The ranker runs its own gathers/index_add over PyG's parameters: same numbers as PyG's layers."""
    from torch_geometric.utils import scatter

    for name in ("nb201", "ofa_mbv3"):
        space = get_space(name)
        torch.manual_seed(0)
        model = Ranker(space.features, RankerConfig(gnn=gnn)).train()
        b = GraphSet([space.to_graph(a) for a in space.sample(24, seed=2)]).batch(torch.arange(23, -1, -1))
        out = model(b)
        h = model.fe(b.x_cat, b.x_cont)
        ref = [h]
        for m, (conv, bn) in enumerate(zip(model.convs, model.norms)):
            o = torch.relu(bn(conv(h, b.edge_index)))
            h = o + h if m >= 1 else o
            ref.append(h)
        for mine, theirs in zip(out.node_h, ref):
            torch.testing.assert_close(mine, theirs, atol=1e-4, rtol=1e-4)
        g_ref = torch.stack([scatter(x, b.batch, dim=0, reduce="mean").sum(1) for x in ref], 1)
        torch.testing.assert_close(out.graph_norms(), g_ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("gnn", ["gatv2", "graphconv", "gin"])
def test_deduplicated_batches_give_the_same_numbers(gnn):
    """A deduplicated batch computes each class of indistinguishable nodes once: same predictions,
    hop norms, batch-norm statistics and gradients as the plain batch, from far fewer rows."""
    for name in ("nb201", "ofa_mbv3"):
        space = get_space(name)
        gs = GraphSet([space.to_graph(a) for a in space.sample(300, seed=3)])
        ids = torch.randperm(300, generator=torch.Generator().manual_seed(0))[:128]
        plain, dedup = gs.batch(ids), gs.batch(ids, dedupe=4)
        assert dedup.x_cat.shape[0] < plain.x_cat.shape[0] and dedup.node_of.shape[0] == plain.x_cat.shape[0]
        models = []
        for b in (plain, dedup):
            torch.manual_seed(0)
            model = Ranker(space.features, RankerConfig(gnn=gnn)).train()
            out = model(b)
            ((out.pred ** 2).sum() + out.graph_norms().sum()).backward()
            models.append((model, out))
        (m1, o1), (m2, o2) = models
        torch.testing.assert_close(o2.pred, o1.pred, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(o2.graph_norms(), o1.graph_norms(), atol=1e-4, rtol=1e-5)
        for a, b in zip(m1.buffers(), m2.buffers()):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        for (pname, a), b in zip(m1.named_parameters(), m2.parameters()):
            if pname.startswith("convs.") and pname.endswith(".bias"):
                continue  # followed by batch norm: its true gradient is 0, both sides hold rounding noise
            torch.testing.assert_close(b.grad, a.grad, atol=1e-3, rtol=1e-3)
    # NB-201: every cell's input node is one class, and so is each first-edge operation
    gs = GraphSet([get_space("nb201").to_graph(a) for a in get_space("nb201").sample(50, seed=4)])
    cls = gs.node_classes(4)
    assert len(set(cls[gs.node_ptr[:-1]].tolist())) == 1


def test_flat_parameters_train_like_separate_ones():
    """One flat buffer for all parameters and gradients: AdamW and clipping act as on the separate
    tensors, and release() gives each parameter its own storage back."""
    from autobuild_core.train import _FlatParameters

    def make():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    x, y = torch.randn(64, 6, generator=torch.Generator().manual_seed(1)), torch.randn(64, 1)
    ref, mine = make(), make()
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    flat = _FlatParameters(mine)
    opt = torch.optim.AdamW([flat.param], lr=1e-2)
    for _ in range(20):
        opt_ref.zero_grad()
        torch.nn.functional.mse_loss(ref(x), y).backward()
        torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 0.5)
        opt_ref.step()
        flat.zero_grad()
        torch.nn.functional.mse_loss(mine(x), y).backward()
        torch.nn.utils.clip_grad_norm_([flat.param], 0.5)
        opt.step()
    for a, b in zip(ref.parameters(), mine.parameters()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    flat.release()
    ptrs = {p.untyped_storage().data_ptr() for p in mine.parameters()}
    assert len(ptrs) == len(list(mine.parameters())) and all(p.grad is None for p in mine.parameters())


def test_best_checkpoint_is_kept_and_its_val_spearman_reported(nb201_data, tmp_path):
    space, archs, y = nb201_data
    cfg = TrainConfig(epochs=40, lr=3e-3, val_fraction=0.25, eval_every=4, seed=5)
    tr = train_ranker(space, archs[:160], y[:160], train=cfg)
    checked = [h for h in tr.history if "val_pred_spearman" in h]
    assert len(checked) == 10 and tr.meta["checkpoint"] == "best"
    best = max(checked, key=lambda h: h["val_pred_spearman"])
    assert tr.best_epoch == best["epoch"] and tr.val_spearman == pytest.approx(best["val_pred_spearman"])
    assert [h["epoch"] for h in tr.history if h.get("best")][-1] == tr.best_epoch
    # recompute on the validation split with the saved model: the reported figure is what it has
    val_idx = np.random.default_rng(cfg.seed).permutation(160)[: tr.meta["n_val"]]
    again = TrainedRanker.load(tr.save(tmp_path / "r"))
    assert again.best_epoch == tr.best_epoch and again.val_spearman == tr.val_spearman
    rep = again.evaluate([archs[i] for i in val_idx], y[val_idx])
    # not bit-equal: isomorphic NB-201 cells predict equal values up to float rounding, which can
    # order them differently in another batch composition
    assert rep["pred_spearman"] == pytest.approx(tr.val_spearman, abs=5e-3)
    assert rep["hop_spearman"] == pytest.approx(tr.val_hop_spearman, abs=5e-3)
    final = [h for h in checked if h["epoch"] == 40][0]
    if abs(final["val_pred_spearman"] - tr.val_spearman) > 0.02:  # the kept weights are not the last ones
        assert abs(rep["pred_spearman"] - final["val_pred_spearman"]) > 0.01


def test_last_weights_with_few_validation_archs_or_keep_last(nb201_data):
    space, archs, y = nb201_data
    few = train_ranker(space, archs[:40], y[:40], train=TrainConfig(epochs=6, eval_every=2))  # 4 held out: < MIN_VAL_ARCHS
    assert few.meta["checkpoint"] == "last" and few.best_epoch == 6
    last = train_ranker(space, archs[:100], y[:100], train=TrainConfig(epochs=6, eval_every=2, keep="last"))
    assert last.meta["checkpoint"] == "last" and last.best_epoch == 6
    assert last.val_spearman == pytest.approx(last.history[-1]["val_pred_spearman"])
    none = train_ranker(space, archs[:40], y[:40], train=TrainConfig(epochs=2, val_fraction=0.0))
    assert none.val_spearman is None and none.meta["n_val"] == 0


def test_patience_stops_early(nb201_data):
    space, archs, y = nb201_data
    tr = train_ranker(space, archs[:120], y[:120], train=TrainConfig(epochs=400, lr=1e-2, eval_every=1, patience=3, val_fraction=0.2))
    assert tr.meta["epochs_run"] < 400 and tr.meta["epochs_run"] - tr.best_epoch == 3


def test_configs_are_pydantic_and_reject_bad_values_clearly():
    tc = TrainConfig(lr=1e-3, epochs=400)
    assert tc.to_dict() == tc.model_dump() and tc.to_dict()["epochs"] == 400
    assert TrainConfig(**tc.to_dict()) == tc and RankerConfig(**RankerConfig().model_dump()) == RankerConfig()
    assert all(f.description for f in TrainConfig.model_fields.values())
    assert all(f.description for f in RankerConfig.model_fields.values())
    with pytest.raises(ConfigError, match=r"train\.lr=0.*greater than 0"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match=r"train\.val_fraction=0\.95"):
        TrainConfig(val_fraction=0.95)
    with pytest.raises(ConfigError, match=r"train\.lrate is not a setting"):
        TrainConfig(lrate=1e-3)
    with pytest.raises(ConfigError, match=r"train\.keep='first'"):
        TrainConfig(keep="first")
    with pytest.raises(ConfigError, match=r"ranker\.hidden=0"):
        RankerConfig(hidden=0)
    with pytest.raises(ConfigError, match=r"ranker\.gnn='gcn'.*Choose one of gatv2"):
        RankerConfig(gnn="gcn")
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        tc.epochs = 0  # assignment is validated too


def test_presets():
    from autobuild_core.train import PRESETS, preset

    assert set(PRESETS) == {"default", "paper"}
    assert PRESETS["default"]["train"] == TrainConfig() and PRESETS["default"]["ranker"] == RankerConfig()
    paper = TrainConfig.preset("paper")
    assert (paper.lr, paper.epochs, paper.batch_size, paper.weight_decay, paper.grad_clip, paper.keep) == (1e-4, 200, 128, 1e-5, 5.0, "last")
    assert TrainConfig().lr == 1e-3 and TrainConfig().keep == "best"
    assert TrainConfig.preset("paper", epochs=10).epochs == 10
    assert preset("paper") == (RankerConfig.preset("paper"), paper)
    with pytest.raises(ConfigError, match="Unknown training preset 'papr'.*paper"):
        TrainConfig.preset("papr")


def test_checkpoints_saved_before_selection_still_load(tmp_path, trained):
    path = trained.save(tmp_path / "old")
    meta = json.loads((path / "ranker.json").read_text())
    meta.pop("checkpoint")
    for k in ("keep", "select_by", "patience"):
        meta["train_config"].pop(k)
    meta["train_config"].update(lr=1e-4, eval_every=10)
    (path / "ranker.json").write_text(json.dumps(meta))
    old = TrainedRanker.load(path)
    assert old.train_config.keep == "last" and old.val_spearman is None and old.best_epoch is None
    np.testing.assert_array_equal(old.predict(get_space("nb201").sample(5, seed=0)), trained.predict(get_space("nb201").sample(5, seed=0)))


def test_bench_ranker_train_size_may_equal_training_table_with_test_table(tmp_path, shared_dir):
    from benchmarks.ranker import bench_ranker

    df = pd.read_csv(shared_dir / "data" / "nb201" / "nb201_cifar10.csv")
    df.iloc[:40].to_csv(tmp_path / "train.csv", index=False)
    df.iloc[40:80].to_csv(tmp_path / "test.csv", index=False)
    res = bench_ranker("nb201", str(tmp_path / "train.csv"), test_table=str(tmp_path / "test.csv"), train_size=40, test_size=30,
                       repeats=1, epochs=2, log=lambda s: None)
    assert res["n_train"] == 40 and res["n_test"] == 30 and res["lr"] == TrainConfig().lr and res["epochs"] == 2
    with pytest.raises(ConfigError, match="train-size"):
        bench_ranker("nb201", str(tmp_path / "train.csv"), train_size=40, repeats=1, epochs=2, log=lambda s: None)
