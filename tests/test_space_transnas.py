"""TransNAS-Bench-101 micro: encodings, isomorphism counts, graphs, unit invariant, model, table evaluator."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import Arch, get_space
from search_spaces._cell import EDGES, cell_key
from search_spaces.errors import ConfigError, EncodingError, TableError, UnknownNameError
from search_spaces.transnas_micro import N_CELLS, OPS, all_cells

SHARED = Path(os.environ.get("AUTOBUILD_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
JSON = SHARED / "data" / "transnas101_micro" / "zc_transbench101_micro.json"
needs_data = pytest.mark.skipif(not JSON.exists(), reason=f"TransNAS-Bench-101 file not found at {JSON} "
                                "(set AUTOBUILD_SHARED_DIR to the folder holding data/transnas101_micro)")


@pytest.fixture(scope="module")
def space():
    return get_space("transnas_micro")


@pytest.fixture(scope="module")
def all_archs(space):
    return [space.parse(c) for c in all_cells()]


@pytest.fixture(scope="module")
def ev():
    if not JSON.exists():
        pytest.skip(f"TransNAS-Bench-101 file not found at {JSON}")
    from evaluators import get_evaluator

    return get_evaluator("transnas_table", path=str(JSON))


@pytest.fixture(scope="module")
def raw():
    if not JSON.exists():
        pytest.skip(f"TransNAS-Bench-101 file not found at {JSON}")
    return json.loads(JSON.read_text())


# ---- the space -----------------------------------------------------------------------------------
def test_description(space):
    assert space.size() == N_CELLS == 4096
    assert [u.depths for u in space.units] == [(1,), (2,), (3,)]
    assert space.n_unit_configs() == [4, 16, 64] and space.global_choices == {}
    assert space.describe()["name"] == "transnas_micro"


def test_encodings_and_round_trips(space):
    a = space.parse("(1, 0, 0, 2, 1, 0)")
    assert space.edge_ops(a) == ["skip_connect", "none", "none", "nor_conv_1x1", "skip_connect", "none"]
    assert space.format(a) == "64-41414-1_00_210" and space.tuple_string(a) == "(1, 0, 0, 2, 1, 0)"
    for enc in ("64-41414-1_00_210", "1_00_210", " (1,0,0,2,1,0) ", [1, 0, 0, 2, 1, 0], (1, 0, 0, 2, 1, 0),
                np.array([1, 0, 0, 2, 1, 0]).tolist(), ["skip_connect", "none", "none", "nor_conv_1x1", "skip_connect", "none"],
                [["skip_connect"], ["none", "none"], ["nor_conv_1x1", "skip_connect", "none"]], [list(c) for c in a.units], a):
        assert space.parse(enc) == a, enc
    for arch in space.sample(50, seed=1):
        assert space.parse(space.format(arch)) == arch
        assert space.parse(space.tuple_string(arch)) == arch
        assert space.parse(space.codes(arch)) == arch
        assert json.loads(json.dumps(space.format(arch))) == space.format(arch)


def test_every_cell_round_trips(space, all_archs):
    assert len({space.format(a) for a in all_archs}) == N_CELLS
    assert all(space.parse(space.format(a)) == a and space.parse(space.tuple_string(a)) == a for a in all_archs)


def test_isomorphism_counts(space, all_archs):
    assert len({space.key(a) for a in all_archs}) == N_CELLS  # the benchmark measured every cell
    fkeys = {space.functional_key(a) for a in all_archs}
    assert len(fkeys) == 871
    assert len({cell_key(space.edge_ops(a)) for a in all_archs}) == 1236  # NAS-Bench-201's rule on this menu
    dead = [a for a in all_archs if not space.output_reachable(a)]
    assert len(dead) == 169 and {space.functional_key(a) for a in dead} == {"0"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60) | st.text(alphabet="()0123456789_-, ４", max_size=40))
def test_garbage_strings_raise_encoding_error(s):
    space = get_space("transnas_micro")
    try:
        arch = space.parse(s)
    except EncodingError as e:
        assert str(e).startswith("transnas_micro:") and len(str(e)) > 30
    else:
        assert space.contains(arch) and space.parse(space.format(arch)) == arch


@pytest.mark.parametrize("bad, needle", [
    ("64-41414-1_00_214", "cell part"),
    ("32-41414-1_00_210", "prefix"),
    ("64-4141-1_00_210", "prefix"),
    ("1_00_21", "cell part"),
    ("(1, 0, 0, 2, 1)", "cell part"),
    ("(1, 0, 0, 2, 1, 4)", "cell part"),
    ("(１, 0, 0, 2, 1, 0)", "cell part"),  # non-ASCII digit
    ("1-2-3-4", "cannot parse"),
    ([1, 0, 0, 2, 1], "6 op codes"),
    ([1, 0, 0, 2, 1, 4], "op code 4"),
    ([1, 0, 0, 2, 1, True], "op code True"),
    ([1.0, 0, 0, 2, 1, 0], "op code 1.0"),
    (["avg_pool_3x3"] * 6, "unknown op"),
    ([["none"], ["none"], ["none", "none", "none"]], "node 2 needs 2"),
    (7, "cannot parse a int"),
    (None, "cannot parse a NoneType"),
])
def test_bad_inputs(space, bad, needle):
    with pytest.raises(EncodingError, match=needle):
        space.parse(bad)


def test_graph_shapes(space):
    a = space.parse("64-41414-1_00_210")
    g = space.to_graph(a)
    assert g.num_nodes == 10 and g.x_cat.shape == (10, 4) and g.x_cont.shape == (10, 0)
    edges = set(zip(*g.edge_index.tolist()))
    ops = space.edge_ops(a)
    assert g.edge_index.shape[1] == 6 + sum(op != "none" for op in ops)
    for e, ((i, j), op) in enumerate(zip(EDGES, ops)):
        assert (4 + e, j) in edges and ((i, 4 + e) in edges) == (op != "none")
    op_col = [f.name for f in space.features].index("op")
    assert [space.features[op_col].values[v] for v in g.x_cat[4:, op_col].tolist()] == ops


def _message_pass(g, hops: int, seed: int = 0) -> torch.Tensor:
    """A fixed random in-neighbour-sum GNN standing in for the ranker's encoder."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(32, 8, generator=gen)
    ws = [torch.randn(8, 8, generator=gen) for _ in range(hops)]
    h = emb[g.x_cat + torch.arange(g.x_cat.shape[1]) * 8].sum(1)
    for w in ws:
        h = torch.relu((h + torch.zeros_like(h).index_add_(0, g.edge_index[1], h[g.edge_index[0]])) @ w)
    return h


def test_unit_graph_covers_the_unit(space, all_archs):
    for arch in all_archs[::131]:
        whole = space.to_graph(arch)
        for u, cfg in enumerate(arch.units):
            ug = space.unit_graph(u, cfg)
            assert ug.hop == 1 and ug.graph.num_nodes == len(cfg) + 1
            assert torch.equal(ug.graph.x_cat[ug.exit_node], whole.x_cat[u + 1])
            assert torch.allclose(_message_pass(whole, 1)[u + 1], _message_pass(ug.graph, 1)[ug.exit_node], atol=1e-5)
    with pytest.raises(EncodingError):
        space.unit_graph(1, (("none",),))
    with pytest.raises(EncodingError):
        space.unit_graph(0, (("avg_pool_3x3",),))


def test_unit_scoring_both_methods(space):
    from autobuild_core.scoring import score_units
    from benchmarks.motifs import untrained_ranker

    for method in ("paper", "marginal"):
        df = score_units(untrained_ranker(space), space, method=method, n_context=4)
        assert len(df) == 84 and df["score"].notna().all()


def test_build_model_forward(space):
    arch = space.parse("64-41414-3_13_210")
    m = space.build_model(arch, num_classes=10, C=4, N=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    seg = space.build_model(arch, num_classes=17, in_chans=1, C=4, N=1, head="dense").eval()
    with torch.no_grad():
        assert seg(torch.randn(2, 1, 28, 28)).shape == (2, 17, 28, 28)
    dead = space.build_model(space.parse("(3, 0, 0, 0, 0, 0)"), C=4, N=1, structure="12").eval()
    with torch.no_grad():
        assert dead(torch.randn(1, 3, 16, 16)).shape == (1, 10)
    out = m(torch.randn(2, 3, 16, 16))
    out.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
    with pytest.raises(EncodingError, match="head"):
        space.build_model(arch, head="panoptic")
    with pytest.raises(EncodingError, match="structure"):
        space.build_model(arch, structure="415")


def test_full_size_network_scale(space):
    n = sum(p.numel() for p in space.build_model(space.parse([3] * 6)).parameters())
    assert 2e7 < n < 1e8  # same order as the benchmark's 41 M for all-3x3 classification networks


# ---- the table evaluator ---------------------------------------------------------------------------
@needs_data
def test_lookup_equals_the_file(space, ev, raw):
    assert len(ev) == 711 and len(ev.items(ev.space)) == 711
    assert ev.metric_names() == ev.metrics and "segmentsemantic" in ev.metrics
    tasks = ("class_scene", "class_object", "autoencoder", "normal", "jigsaw", "room_layout", "segmentsemantic")
    assert tuple(ev.tasks) == tasks
    cells = list(raw["segmentsemantic"])
    recs = ev.evaluate(space, cells[::37])
    for cell, r in zip(cells[::37], recs):
        assert r.ok and r.space == "transnas_micro" and r.key == space.format(space.parse(cell))
        for t in tasks:
            rec = raw[t][cell]
            assert r.metrics[t] == rec["val_accuracy"]
            assert r.metrics[f"{t}_flops"] == rec["flops"]["score"] and r.metrics[f"{t}_params"] == rec["params"]["score"]
            for p in ("snip", "nwot", "jacov", "grasp", "fisher", "grad_norm", "l2_norm", "plain"):
                assert r.metrics[f"{t}_zc_{p}"] == rec[p]["score"]
    assert ev.lookup(cells[0])["segmentsemantic"] == raw["segmentsemantic"][cells[0]]["val_accuracy"]
    # NASLib's failure value: epe_nas failed on reachable cells (dropped), jacov only on dead ones (kept)
    assert all(ev.stats["dropped_proxies"][t] == ["epe_nas"] for t in tasks)
    assert not any(m.endswith("_zc_epe_nas") for m in ev.metrics)
    assert ev.proxy_names("jigsaw")[:2] == ["jigsaw_flops", "jigsaw_params"]


@needs_data
def test_missing_cells_fail_cleanly(space, ev, raw):
    labelled = {space.format(space.parse(c)) for c in raw["segmentsemantic"]}
    absent = [a for a in space.sample(200, seed=3) if space.format(a) not in labelled][:5]
    recs = ev.evaluate(space, absent)
    assert absent and all(not r.ok and r.error.startswith("not in table") and not r.metrics for r in recs)
    assert ev.lookup(absent[0]) is None
    with pytest.raises(ConfigError):
        ev.evaluate(get_space("nb201"), [[ "none"] * 6])


@needs_data
def test_unreachable_outputs_share_one_value(space, ev):
    """README check of the encoding: the 20 cells whose output is unreachable from the input are the
    same (zero) network, so every classification/segmentation task gives them one value."""
    dead = [(a, m) for a, m in ev.items() if not space.output_reachable(a)]
    assert len(dead) == 20
    for t in ("class_scene", "class_object", "jigsaw", "segmentsemantic"):
        assert len({m[t] for _, m in dead}) == 1, t
    assert round(dead[0][1]["class_object"], 2) == 26.55 and round(dead[0][1]["segmentsemantic"], 2) == 91.89
    live = [m["class_object"] for a, m in ev.items() if space.output_reachable(a)]
    assert len(set(live)) > 400  # live cells differ (some functionally equal cells repeat a value)


@needs_data
def test_task_subset_and_fingerprint(space, ev):
    from evaluators import get_evaluator

    seg = get_evaluator("transnas_table", path=str(JSON), tasks=["segmentsemantic"], proxies=False)
    assert seg.metrics == ["segmentsemantic"] and seg.fingerprint() != ev.fingerprint()
    a = ev.items(ev.space)[5][0]
    assert seg.lookup(a)["segmentsemantic"] == ev.lookup(a)["segmentsemantic"]
    with pytest.raises(UnknownNameError, match="segmentsemantic"):
        get_evaluator("transnas_table", path=str(JSON), tasks=["segmentsemantik"])


def _write(tmp_path, data, name="t.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return str(p)


def _record(cell: str, acc: float = 50.0) -> dict:
    r = {"idx": "1", "arch": cell, "val_accuracy": acc, "flops": {"score": 1.0}, "params": {"score": 2.0}}
    r.update({p: {"score": 0.5, "time": 0.1} for p in ("grasp", "fisher", "grad_norm", "l2_norm", "plain", "nwot", "epe_nas", "jacov", "snip")})
    return r


def test_bad_files_raise_table_errors(tmp_path):
    from evaluators.transnas import TransNASTableEvaluator

    good = {"class_scene": {"(1, 0, 0, 2, 1, 0)": _record("(1, 0, 0, 2, 1, 0)"), "(3, 3, 3, 3, 3, 3)": _record("(3, 3, 3, 3, 3, 3)", 60.0)}}
    ev = TransNASTableEvaluator(_write(tmp_path, good))
    assert ev.lookup([3] * 6)["class_scene"] == 60.0 and len(ev) == 2
    with pytest.raises(TableError, match="does not exist"):
        TransNASTableEvaluator(tmp_path / "nope.json")
    with pytest.raises(TableError, match="JSON"):
        TransNASTableEvaluator(_write(tmp_path, {}, "t.csv"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TableError, match="not valid JSON"):
        TransNASTableEvaluator(tmp_path / "broken.json")
    bad = json.loads(json.dumps(good))
    bad["class_scene"]["(1, 0, 0, 2, 1, 0)"]["val_accuracy"] = "NaN"
    with pytest.raises(TableError, match="val_accuracy"):
        TransNASTableEvaluator(_write(tmp_path, bad))
    bad = json.loads(json.dumps(good))
    del bad["class_scene"]["(3, 3, 3, 3, 3, 3)"]["snip"]
    with pytest.raises(TableError, match="snip"):
        TransNASTableEvaluator(_write(tmp_path, bad))
    bad = {"class_scene": {"(1, 0, 0, 2, 1, 7)": _record("x")}}
    with pytest.raises(TableError, match="not a transnas_micro cell"):
        TransNASTableEvaluator(_write(tmp_path, bad))
    bad = {"class_scene": good["class_scene"], "segmentsemantic": {"(1, 0, 0, 2, 1, 0)": _record("(1, 0, 0, 2, 1, 0)")}}
    with pytest.raises(TableError, match="other cells"):
        TransNASTableEvaluator(_write(tmp_path, bad))


# ---- benchmarks and config ---------------------------------------------------------------------------
@needs_data
def test_bench_ranker_accepts_any_task_as_target():
    from benchmarks.common import labelled_table, targets

    space, archs, metrics = labelled_table("transnas_micro", str(JSON))
    assert space.name == "transnas_micro" and len(archs) == 711
    for t in ("segmentsemantic", "room_layout", "class_object - 0.001*class_object_flops"):
        y, text = targets(metrics, t)
        assert text == t and np.isfinite(y).all()


@needs_data
def test_bench_transnas_plumbing(tmp_path):
    from benchmarks.transnas import bench_transnas, markdown, summary

    res = bench_transnas(str(JSON), tasks=["class_object", "segmentsemantic"], train_size=50, repeats=1,
                         pairs=[("class_object", "segmentsemantic")], sizes=[10, 20], transfer_repeats=1, epochs=2, log=lambda s: None)
    assert set(res["quality"]) == {"class_object", "segmentsemantic"}
    assert np.array(res["agreement"]["truth"]).shape == (2, 2) and res["agreement"]["marginal"][0][0] == pytest.approx(1.0)
    tr = res["transfer"]["class_object->segmentsemantic"]
    assert set(tr["sizes"]) == {"10", "20"} and -1 <= tr["sizes"]["10"]["finetuned"] <= 1
    md = markdown(res, tmp_path / "results")
    assert "TransNAS-Bench-101" in md and (tmp_path / "results" / "transnas_transfer.png").is_file()
    assert "segmentsemantic" in summary(res)
    with pytest.raises(ConfigError):
        bench_transnas(str(JSON), pairs=[("jigsaw", "normal")], tasks=["normal"], log=lambda s: None)


def test_config_validates_and_names_the_table():
    from tasks.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "transnas_segmentation.yaml")
    assert cfg.space == "transnas_micro" and cfg.target == "segmentsemantic"
    assert cfg.evaluator.kind == "transnas_table" and "path" in cfg.evaluator.settings and cfg.evaluator.settings["proxies"] is False
    assert ".." not in Path(cfg.evaluator.settings["path"]).parts


def test_fine_tuning_starts_from_the_given_weights(space):
    from autobuild_core.train import TrainConfig, train_ranker

    archs = space.sample(40, seed=0)
    y = np.array([sum(space.codes(a)) for a in archs], dtype=float)
    src = train_ranker(space, archs, y, None, TrainConfig(epochs=2, val_fraction=0.0))
    same = train_ranker(space, archs, -y, None, TrainConfig(epochs=1, lr=1e-12, val_fraction=0.0), init=src)
    for k, v in src.model.state_dict().items():
        if v.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(v, same.model.state_dict()[k], atol=1e-6), k
    with pytest.raises(ConfigError):
        train_ranker(get_space("nb201"), get_space("nb201").sample(20), np.arange(20.0), None, TrainConfig(epochs=1), init=src)
