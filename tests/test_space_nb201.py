"""NB-201 space: encodings, official index order, isomorphism count, graphs, unit invariant, model."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces.errors import EncodingError
from search_spaces import Arch, get_space
from search_spaces.nb201 import EDGES, N_CELLS, OPS, all_cells

EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
SHARED = Path(os.environ.get("AUTOBUILD_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
CSV = SHARED / "data" / "nb201" / "nb201_cifar10.csv"


@pytest.fixture(scope="module")
def space():
    return get_space("nb201")


@pytest.fixture(scope="module")
def all_archs(space):
    return [space.parse(ops) for ops in all_cells()]


def test_description(space):
    assert space.size() == N_CELLS == 15625
    assert [u.depths for u in space.units] == [(1,), (2,), (3,)]
    assert space.global_choices == {}
    assert space.n_unit_configs() == [5, 25, 125]


def test_round_trips(space):
    a = space.parse(EXAMPLE)
    assert space.format(a) == EXAMPLE
    assert space.edge_ops(a) == ["nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_3x3", "skip_connect"]
    assert space.parse(space.edge_ops(a)) == a
    assert space.parse(space.index(a)) == a
    assert space.parse(str(space.index(a))) == a
    assert space.parse(a) == a
    assert space.parse([["nor_conv_3x3"], ["nor_conv_3x3", "avg_pool_3x3"], ["skip_connect", "nor_conv_3x3", "skip_connect"]]) == a
    assert space.parse([list(c) for c in a.units]) == a
    for arch in space.sample(50, seed=1):
        assert space.parse(space.format(arch)) == arch
        assert space.parse(space.index(arch)) == arch


def test_known_indices(space):
    # fixed points of NAS-Bench-201's published order (also asserted by its generation script)
    assert space.format(space.parse(0)) == "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
    assert space.index(space.parse(EXAMPLE)) == 1


def test_index_is_a_bijection(space, all_archs):
    assert sorted(space.index(a) for a in all_archs) == list(range(N_CELLS))


@pytest.mark.skipif(not CSV.exists(), reason=f"NB-201 table not found at {CSV} (set AUTOBUILD_SHARED_DIR to the folder holding data/nb201)")
def test_index_order_matches_official_table(space):
    with open(CSV, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_CELLS
    for r in rows:
        idx = int(r["index"])
        assert space.format(space.parse(idx)) == r["arch"], idx
        assert space.index(space.parse(r["arch"])) == idx


def test_isomorphism_counts(space, all_archs):
    keys = [space.key(a) for a in all_archs]
    assert len(set(keys)) == 6466  # NAS-Bench-201's published number of unique cells
    fkeys = [space.functional_key(a) for a in all_archs]
    assert len(set(fkeys)) == 4930
    # the benchmark's classes refine the strict functional ones
    cls: dict[str, set] = {}
    for k, fk in zip(keys, fkeys):
        cls.setdefault(k, set()).add(fk)
    assert all(len(v) == 1 for v in cls.values())
    # spot checks: commuted sums and a dead branch
    a = space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|")
    b = space.parse("|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|skip_connect~2|")
    assert space.key(a) == space.key(b)
    dead1 = space.parse("|none~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|")
    dead2 = space.parse("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert space.functional_key(dead1) == space.functional_key(dead2) == "0"


@pytest.mark.skipif(not CSV.exists(), reason=f"NB-201 table not found at {CSV}")
def test_isomorphism_count_on_table(space):
    with open(CSV, newline="") as f:
        keys = {space.key(space.parse(r["arch"])) for r in csv.DictReader(f)}
    assert len(keys) == 6466


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120) | st.text(alphabet="|+~0123456789_abcdefghijklmnopqrstuvwxyz", max_size=120))
def test_garbage_strings_raise_encoding_error(s):
    space = get_space("nb201")
    try:
        arch = space.parse(s)
    except EncodingError as e:
        msg = str(e)
        assert msg.startswith("nb201:") and len(msg) > 30
    else:  # only a valid string or index can get here
        assert space.contains(arch)


@pytest.mark.parametrize(
    "bad, needle",
    [
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|", "node group"),
        ("|conv~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "unknown op"),
        ("|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|", "exactly once"),
        (N_CELLS, "out of range"),
        (-1, "out of range"),
        (["none"] * 5, "6 entries"),
        (3.5, "cannot parse"),
        (True, "not an architecture"),
    ],
)
def test_bad_inputs(space, bad, needle):
    with pytest.raises(EncodingError, match=needle):
        space.parse(bad)


def test_graph_shapes(space):
    g = space.to_graph(space.parse(EXAMPLE))
    assert g.num_nodes == 10 and g.x_cat.shape == (10, 4) and g.x_cont.shape == (10, 0)
    assert g.edge_index.shape == (2, 12)
    src, dst = g.edge_index
    for e, (i, j) in enumerate(EDGES):
        k = 4 + e
        assert (i, k) in set(zip(src.tolist(), dst.tolist())) and (k, j) in set(zip(src.tolist(), dst.tolist()))
    op_col = [f.name for f in space.features].index("op")
    assert [space.features[op_col].values[v] for v in g.x_cat[4:, op_col].tolist()] == space.edge_ops(space.parse(EXAMPLE))


def _message_pass(g, hops: int, seed: int = 0) -> torch.Tensor:
    """A fixed random in-neighbour-sum GNN: stands in for the ranker's encoder."""
    gen = torch.Generator().manual_seed(seed)
    emb = torch.randn(16, 8, generator=gen)
    ws = [torch.randn(8, 8, generator=gen) for _ in range(hops)]
    h = emb[g.x_cat * 0 + g.x_cat + torch.arange(g.x_cat.shape[1]) * 4].sum(1)  # feature-wise embeddings
    for w in ws:
        agg = torch.zeros_like(h).index_add_(0, g.edge_index[1], h[g.edge_index[0]])
        h = torch.relu((h + agg) @ w)
    return h


def test_unit_graph_receptive_field(space, all_archs):
    for arch in all_archs[::97]:
        whole = space.to_graph(arch)
        for u, cfg in enumerate(arch.units):
            ug = space.unit_graph(u, cfg)
            assert ug.hop == 1 and ug.graph.num_nodes == len(cfg) + 1
            # exit node's own features equal those of cell node u+1 in the whole network
            assert torch.equal(ug.graph.x_cat[ug.exit_node], whole.x_cat[u + 1])
            h_whole = _message_pass(whole, ug.hop)[u + 1]
            h_unit = _message_pass(ug.graph, ug.hop)[ug.exit_node]
            assert torch.allclose(h_whole, h_unit, atol=1e-5)
    with pytest.raises(EncodingError):
        space.unit_graph(1, (("none",),))


def test_stratified_sampling_coverage(space):
    archs = space.sample(len(OPS), seed=0, stratified=True)
    for u, spec in enumerate(space.units):
        for j in range(spec.depths[0]):
            assert {a.units[u][j] for a in archs} == set(spec.layer_choices)
    assert all(space.contains(a) for a in space.sample(20, seed=5))


def test_build_model_forward(space):
    arch = space.parse(EXAMPLE)
    m = space.build_model(arch, num_classes=10, in_chans=3, C=4, N=1).eval()
    with torch.no_grad():
        assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    m1 = space.build_model(arch, num_classes=7, in_chans=1, C=4, N=1).eval()
    with torch.no_grad():
        assert m1(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    dead = space.parse("|avg_pool_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    md = space.build_model(dead, C=4, N=1).eval()
    with torch.no_grad():
        assert md(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_param_count_matches_nb201_scale(space):
    # full-size network (C=16, N=5) with all-3x3 convs: NB-201 reports ~1.5M parameters
    arch = space.parse(["nor_conv_3x3"] * 6)
    n = sum(p.numel() for p in space.build_model(arch).parameters())
    assert 1.0e6 < n < 1.6e6
