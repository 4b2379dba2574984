"""NAS-Bench-Graph space: encodings, keys vs the benchmark, graphs, unit invariant, GNN, loader."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from nas_bench_graph.architecture import Arch as BenchArch

from search_spaces.errors import EncodingError, UnknownNameError
from search_spaces import get_space
from search_spaces.nasbench_graph import DATASETS, LINKS, OPS, load_bench

EXAMPLE = {"link": [0, 0, 1, 2], "ops": ["gcn", "gat", "skip", "fc"]}


@pytest.fixture(scope="module")
def space():
    return get_space("nasbench_graph")


def test_description(space):
    assert space.size() == 9 * 9**4 == 59049
    assert space.global_choices == {"link": tuple(range(9))}
    assert [u.depths for u in space.units] == [(1,)] * 4
    assert len(LINKS) == 9 and len(OPS) == 9


def test_round_trips(space):
    a = space.parse(EXAMPLE)
    assert space.format(a) == EXAMPLE
    assert a.global_dict == {"link": 3}
    assert space.parse((EXAMPLE["link"], EXAMPLE["ops"])) == a
    assert space.parse({"link": 3, "ops": EXAMPLE["ops"]}) == a
    assert space.parse('{"link": [0, 0, 1, 2], "ops": ["gcn", "gat", "skip", "fc"]}') == a
    assert space.parse(a) == a
    h = space.bench_hash(a)
    assert space.key(space.parse(h)) == space.key(a) == str(h)
    assert space.key(space.parse(str(h))) == str(h)
    for arch in space.sample(100, seed=2):
        assert space.parse(space.format(arch)) == arch


def test_every_valid_link_pattern_is_regularised(space):
    ops = ["gat", "gcn", "sage", "skip"]
    for lk in itertools.product(range(1), range(2), range(3), range(4)):
        a = space.parse({"link": list(lk), "ops": ops})
        assert space.key(a) == str(BenchArch(list(lk), ops).valid_hash())
        assert sorted(space.ops_of(a)) == sorted(ops)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"link": [0, 0, 1]}, "missing"),
        ({"link": [0, 2, 1, 2], "ops": ["gcn"] * 4}, "invalid"),
        ({"link": 9, "ops": ["gcn"] * 4}, "out of range"),
        ({"link": [0, 0, 1, 2], "ops": ["gnc", "gcn", "gcn", "gcn"]}, "Did you mean.*'gcn'"),
        ({"link": [0, 0, 1, 2], "ops": "gcn"}, "list of 4"),
        (99999, "not a NAS-Bench-Graph hash"),
        (-5, "negative"),
        ("not json", "cannot parse"),
        (3.2, "cannot parse"),
    ],
)
def test_bad_inputs(space, bad, needle):
    with pytest.raises(EncodingError, match=needle):
        space.parse(bad)


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=80))
def test_garbage_strings_raise_encoding_error(s):
    space = get_space("nasbench_graph")
    try:
        arch = space.parse(s)
    except EncodingError as e:
        assert str(e).startswith("nasbench_graph:") and len(str(e)) > 30
    else:
        assert space.contains(arch)


def test_isomorphism_count_vs_benchmark(space):
    keys = {space.key(space.assemble([[(o,)] for o in ops], {"link": li})) for li in range(9) for ops in itertools.product(OPS, repeat=4)}
    bench = load_bench("cora")
    assert len(bench) == 26206
    assert len(keys) == 26207  # the benchmark's archs plus the all-skip network
    assert set(bench) <= keys
    assert keys - set(bench) == {space.key(space.parse({"link": 0, "ops": ["skip"] * 4}))}


def test_benchmark_keys_reachable_by_parsing(space):
    bench = load_bench("cora")
    for k in bench:
        assert space.key(space.parse(int(k))) == k


def test_loader_values(space):
    row = load_bench("cora")[space.key(space.parse(EXAMPLE))]
    assert set(row) >= {"acc", "latency_ms", "params"}
    assert 10.0 < row["acc"] < 100.0 and 0.01 < row["latency_ms"] < 1000.0 and 1e4 < row["params"] < 1e8
    assert load_bench("cora") is not load_bench("cora")  # fresh outer dict per call (cache shared)
    prot = load_bench("PROTEINS")
    assert len(prot) == 2021 and all(0 < v["acc"] <= 100 for v in prot.values())
    assert set(DATASETS) == {"cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv", "proteins"}
    with pytest.raises(UnknownNameError, match="Did you mean 'cora'"):
        load_bench("coraa")


def test_graph_shapes(space):
    a = space.parse(EXAMPLE)
    g = space.to_graph(a)
    assert g.num_nodes == 5 and g.x_cat.shape == (5, 4) and g.x_cont.shape == (5, 0)
    assert g.edge_index.tolist() == [[0, 0, 1, 2], [1, 2, 3, 4]]
    names = [f.name for f in space.features]
    assert g.x_cat[:, names.index("link")].tolist() == [3] * 5
    assert g.x_cat[:, names.index("is_output")].tolist() == [0, 0, 0, 1, 1]


def test_unit_graph_receptive_field(space):
    # hop 0 covers a unit: the unit graph's node must carry the same features as in the network
    for arch in space.sample(60, seed=4, stratified=True):
        whole = space.to_graph(arch)
        for u, cfg in enumerate(arch.units):
            ug = space.unit_graph(u, cfg, arch.global_dict)
            assert ug.hop == 0 and ug.exit_node == 0 and ug.graph.num_nodes == 1
            assert ug.graph.edge_index.shape == (2, 0)
            assert torch.equal(ug.graph.x_cat[0], whole.x_cat[u + 1])
    with pytest.raises(EncodingError):
        space.unit_graph(0, (("gcn",), ("gat",)))


def test_stratified_sampling_coverage(space):
    archs = space.sample(9, seed=0, stratified=True)
    assert {a.global_dict["link"] for a in archs} == set(range(9))
    for u in range(4):
        assert {a.units[u][0][0] for a in archs} == set(OPS)


def test_build_model_forward(space):
    x = torch.randn(12, 5)
    ei = torch.randint(0, 12, (2, 40))
    for li, ops in [(3, EXAMPLE["ops"]), (8, ["cheb", "arma", "graph", "gin"]), (0, ["sage", "skip", "fc", "gat"])]:
        m = space.build_model(space.parse({"link": li, "ops": ops}), num_classes=3, in_chans=5, hidden=8).eval()
        with torch.no_grad():
            assert m(x, ei).shape == (12, 3)
    pf = space.count_params_flops(space.parse(EXAMPLE), num_classes=3, in_chans=5)
    assert pf["params"] > 0 and pf["flops"] > 0
