"""The OFA macro spaces (ofa_mbv3, ofa_pn): encodings, graphs, unit graphs, sampling, networks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.errors import EncodingError
from search_spaces import Arch, get_space
from search_spaces.ofa_mbv3 import OFAMobileNetV3Space
from search_spaces.ofa_pn import OFAProxylessSpace

SPACES = ["ofa_mbv3", "ofa_pn"]
SHARED = Path(os.environ.get("AUTOBUILD_SHARED_DIR", Path(__file__).parents[2] / "shared"))
OFA_JSONL = SHARED / "data" / "ofa_mbv3_imagenet" / "ofa_mbv3_w10_top1.jsonl"


@pytest.fixture(params=SPACES)
def space(request):
    return get_space(request.param)


def _archs(space, n=40):
    return space.sample(n, seed=1) + space.sample(n, seed=2, stratified=True)


# ---- registry and sizes ----------------------------------------------------------------------
def test_registry_and_schema():
    assert isinstance(get_space("ofa_mbv3"), OFAMobileNetV3Space)
    assert isinstance(get_space("ofa_pn"), OFAProxylessSpace)
    for name in SPACES:
        sp = get_space(name)
        assert [f.name for f in sp.features] == ["unit", "layer", "e", "k", "r"]
        assert [f.kind for f in sp.features] == ["positional", "positional", "categorical", "categorical", "continuous"]
        r = sp.features[4]
        assert (r.low, r.high) == (192.0, 224.0) and r.values == tuple(range(192, 225, 4))
        assert sp.global_choices == {"r": tuple(range(192, 225, 4))}
        assert sp.default_globals() == {"r": 224}
    assert get_space("ofa_mbv3").features[1].values == (0, 1, 2, 3)
    assert get_space("ofa_pn").features[1].values == (0, 1, 2, 3, 4)


def test_config_counts():
    mb, pn = get_space("ofa_mbv3"), get_space("ofa_pn")
    assert mb.n_unit_configs() == [7371] * 5 and sum(mb.n_unit_configs()) == 36855
    assert [u.depths for u in mb.units] == [(2, 3, 4)] * 5
    assert pn.n_unit_configs() == [7371] * 4 + [9**3 + 9**4 + 9**5]
    assert [u.depths for u in pn.units] == [(2, 3, 4)] * 4 + [(3, 4, 5)]
    assert mb.size() == 7371**5 * 9
    assert len(mb.unit_configs(0)) == 7371


# ---- encodings -------------------------------------------------------------------------------
def test_round_trip(space):
    for a in _archs(space):
        assert space.contains(a)
        enc = space.format(a)
        assert set(enc) == {"ks", "e", "d", "r"}
        json.dumps(enc)  # JSON-able
        assert space.parse(enc) == a
        assert space.parse(json.dumps(enc)) == a
        assert space.parse(a) == a
        units = [[list(layer) for layer in cfg] for cfg in a.units]
        assert space.parse({"units": units, "r": a.global_dict["r"]}) == a
        assert space.parse(json.dumps({"units": units, "r": a.global_dict["r"]})) == a
        if a.global_dict["r"] == 224:
            assert space.parse(units) == a
        assert space.key(space.parse(enc)) == space.key(a)


def test_padding_is_zero_and_does_not_matter(space):
    rng = np.random.default_rng(0)
    for a in _archs(space, 15):
        enc = space.format(a)
        used = {i for i, k in enumerate(enc["ks"]) if k != 0}
        assert all((enc["e"][i] == 0) == (i not in used) for i in range(len(enc["e"])))
        assert len(used) == sum(len(c) for c in a.units)
        noisy = dict(enc, ks=list(enc["ks"]), e=list(enc["e"]), top1=75.0)
        for i in set(range(len(enc["ks"]))) - used:
            noisy["ks"][i] = [9, None, "x", 5][rng.integers(4)]
            noisy["e"][i] = [3, -1, 2.5, None][rng.integers(4)]
        b = space.parse(noisy)
        assert b == a and space.key(b) == space.key(a) and space.format(b) == enc


def test_parse_defaults_and_numeric_leniency():
    mb = get_space("ofa_mbv3")
    a = mb.sample(1, seed=3)[0]
    enc = mb.format(a)
    no_r = {k: v for k, v in enc.items() if k != "r"}
    assert mb.parse(no_r).global_dict == {"r": 224}
    floats = {"ks": [float(x) for x in enc["ks"]], "e": [float(x) for x in enc["e"]], "d": [float(x) for x in enc["d"]], "r": float(enc["r"])}
    assert mb.parse(floats) == a
    assert all(type(v) is int for cfg in mb.parse(floats).units for layer in cfg for v in layer)


def test_pn_merge_mapping():
    pn = get_space("ofa_pn")
    units = [[[3, 3], [4, 5]], [[6, 7], [3, 3]], [[4, 3], [4, 3]], [[3, 5], [3, 5]], [[6, 3], [6, 5], [4, 7]]]
    a = pn.parse({"units": units, "r": 208})
    enc = pn.format(a)
    assert len(enc["ks"]) == len(enc["e"]) == 21
    assert enc["d"] == [2, 2, 2, 2, 2, 1]
    # unit 4 = stage 4 (slots 16..) + final block (slot 20, always the unit's last layer)
    assert enc["ks"][16:21] == [3, 5, 0, 0, 7] and enc["e"][16:21] == [6, 6, 0, 0, 4]
    assert pn.parse(enc) == a
    # d without the final stage's implicit 1, and the unmerged 6-stage list form
    assert pn.parse(dict(enc, d=enc["d"][:5])) == a
    assert pn.parse({"units": units[:4] + [units[4][:2], units[4][2:]], "r": 208}) == a
    # the final block keeps layer feature 4 whatever the unit's depth
    g = pn.to_graph(a)
    assert g.x_cat[-3:, 1].tolist() == [0, 1, 4]
    with pytest.raises(EncodingError, match=r"d\[5\].*depth 2 not in \[1\]"):
        pn.parse(dict(enc, d=[2, 2, 2, 2, 2, 2]))
    with pytest.raises(EncodingError, match="21 per-slot values"):
        pn.parse(dict(enc, ks=enc["ks"][:20]))
    with pytest.raises(EncodingError, match=r"stage 5.*exactly 1 layer"):
        pn.parse(units[:4] + [units[4][:1], units[4][1:]])
    full = pn.parse({"units": units[:4] + [[[3, 3]] * 5]})
    assert pn.format(full)["d"] == [2, 2, 2, 2, 4, 1]


def test_every_shared_jsonl_line_parses():
    if not OFA_JSONL.exists():
        pytest.skip(f"OFA MobileNetV3 table not found at {OFA_JSONL} (set AUTOBUILD_SHARED_DIR to the shared folder)")
    mb = get_space("ofa_mbv3")
    lines = [json.loads(line) for line in OFA_JSONL.read_text().splitlines() if line.strip()]
    assert len(lines) > 100
    by_key: dict[str, set] = {}
    for rec in lines:
        a = mb.parse(rec)
        assert [len(c) for c in a.units] == rec["d"] and a.global_dict["r"] == rec["r"]
        enc = mb.format(a)
        for s, d in enumerate(rec["d"]):
            sl = slice(4 * s, 4 * s + d)
            assert enc["ks"][sl] == rec["ks"][sl] and enc["e"][sl] == rec["e"][sl]
        by_key.setdefault(mb.key(a), set()).add((rec["top1"], rec["macs"], rec["params"]))
    # A few lines differ only in padding (the table was de-duplicated on raw encodings); they are
    # the same subnet, and indeed carry identical measurements.
    assert len(by_key) > 0.95 * len(lines)
    assert all(len(v) == 1 for v in by_key.values())
    # the network is OFA's: same parameter count and MACs (FLOPs = 2 MACs) at 224, 1000 classes
    for rec in lines[:2]:
        pf = mb.count_params_flops(mb.parse(rec))
        assert pf["params"] == rec["params"] and pf["flops"] == 2 * rec["macs"]


def test_bad_encodings_have_useful_messages():
    mb = get_space("ofa_mbv3")
    good = [[[3, 3], [3, 3]] for _ in range(5)]
    bad = [list(map(list, u)) for u in good]
    bad[3] = [[3, 3], [3, 3], [4, 9]]
    cases = [
        (bad, r"unit 3 layer 2: kernel size 9 not in \[3, 5, 7\]"),
        ([[[5, 3], [3, 3]]] + good[1:], r"unit 0 layer 0: expansion ratio 5 not in \[3, 4, 6\]"),
        ([[[3, 3]] * 5] + good[1:], r"unit 0: depth 5 not allowed; allowed depths: \[2, 3, 4\]"),
        (good[:4], r"expected 5 unit lists"),
        ([[[3, 3], [3]]] + good[1:], r"unit 0 layer 1: a layer is a pair \[e, k\]"),
        ({"units": good, "r": 202}, r"r: resolution 202 not in \[192, 196"),
        ({"units": good, "r": True}, r"resolution True not in"),
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2, 2, 5, 2, 2]}, r"d\[2\] \(stage 2\): depth 5 not in \[2, 3, 4\]"),
        ({"ks": [3] * 19, "e": [3] * 20, "d": [2] * 5}, r"'ks' must be a list of 20"),
        ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 4}, r"'d' must be a list of 5 stage depths"),
        ({"ks": [3] * 4 + [11] + [3] * 15, "e": [3] * 20, "d": [2] * 5}, r"ks\[4\] \(unit 1 layer 0\): kernel size 11"),
        ({"ks": [3] * 20, "e": [3] * 5 + ["6"] + [3] * 14, "d": [2] * 5}, r"e\[5\] \(unit 1 layer 1\): expansion ratio '6'"),
        ({"arch": good}, r"needs keys 'ks', 'e', 'd' \(OFA\) or 'units'"),
        ("{not json", r"not valid JSON"),
        (42, r"cannot parse int"),
        (Arch.make(good, {"r": 224, "w": 1.0}), r"unknown global choice\(s\) \['w'\]"),
        (Arch.make(good, {"r": 100}), r"resolution 100"),
    ]
    for obj, pattern in cases:
        with pytest.raises(EncodingError, match=pattern) as exc:
            mb.parse(obj)
        assert str(exc.value).startswith("ofa_mbv3: ")
    with pytest.raises(EncodingError, match="depth not in"):
        mb.unit_graph(0, ((3, 3),))
    with pytest.raises(EncodingError, match="unit index 7"):
        mb.unit_graph(7, ((3, 3), (3, 3)))
    with pytest.raises(EncodingError, match="kernel size 4"):
        mb.unit_graph(1, ((3, 3), (3, 4)))


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=6) | st.sampled_from([2, 3, 4, 5, 6, 7, 224]),
    lambda inner: st.lists(inner, max_size=22) | st.dictionaries(st.sampled_from(["ks", "e", "d", "r", "units", "x"]) | st.text(max_size=3), inner, max_size=5),
    max_leaves=60,
)


@st.composite
def _mutated_ofa(draw, name):
    """A valid OFA dict with one field or one entry replaced by garbage: exercises deep checks."""
    sp = get_space(name)
    a = sp.sample(1, seed=draw(st.integers(0, 10**6)))[0]
    enc = sp.format(a)
    field = draw(st.sampled_from(["ks", "e", "d", "r"]))
    junk = draw(_json)
    if field == "r" or draw(st.booleans()):
        enc[field] = junk
    else:
        enc[field][draw(st.integers(0, len(enc[field]) - 1))] = junk
    return enc if draw(st.booleans()) else json.dumps(enc)


@pytest.mark.parametrize("name", SPACES)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parser_only_raises_encoding_error(name, data):
    sp = get_space(name)
    obj = data.draw(st.one_of(_json, _json.map(json.dumps), st.text(max_size=30), _mutated_ofa(name)))
    try:
        a = sp.parse(obj)
    except EncodingError as exc:
        assert str(exc).startswith(f"{name}: ")
        return
    assert sp.contains(a) and sp.parse(sp.format(a)) == a


# ---- graphs ----------------------------------------------------------------------------------
def test_graph_shapes(space):
    cat_feats = [f for f in space.features if f.is_categorical]
    for a in _archs(space, 10):
        g = space.to_graph(a)
        n = sum(len(c) for c in a.units)
        assert g.num_nodes == n and g.x_cat.shape == (n, 4) and g.x_cont.shape == (n, 1)
        assert g.edge_index.tolist() == [list(range(n - 1)), list(range(1, n))]
        for col, f in enumerate(cat_feats):
            assert 0 <= int(g.x_cat[:, col].min()) and int(g.x_cat[:, col].max()) < len(f.values)
        assert torch.all(g.x_cont == float(a.global_dict["r"]))
        # node order follows the units and their layers
        flat = [(u, layer) for u, cfg in enumerate(a.units) for layer in cfg]
        assert g.x_cat[:, 0].tolist() == [u for u, _ in flat]
        assert [(space.features[2].values[i], space.features[3].values[j]) for i, j in g.x_cat[:, 2:4].tolist()] == [l for _, l in flat]


def _receptive_field(g, node: int, hops: int):
    """Upstream nodes within ``hops`` of ``node`` as (distance, cat row, cont row), plus edges as
    distance pairs: a description independent of node numbering (ties broken by features)."""
    src, dst = g.edge_index.tolist() if g.edge_index.numel() else ([], [])
    dist = {node: 0}
    frontier = [node]
    for h in range(1, hops + 1):
        frontier = [s for s, t in zip(src, dst) if t in frontier and s not in dist]
        for s in frontier:
            dist[s] = h
    nodes = sorted((d, tuple(g.x_cat[v].tolist()), tuple(g.x_cont[v].tolist())) for v, d in dist.items())
    edges = sorted((dist[s], dist[t]) for s, t in zip(src, dst) if s in dist and t in dist)
    return nodes, edges


def test_unit_graph_receptive_field_matches_whole_network(space):
    for a in _archs(space, 6):
        g = space.to_graph(a)
        offset = 0
        for u, cfg in enumerate(a.units):
            ug = space.unit_graph(u, cfg, a.global_dict)
            d = len(cfg)
            assert ug.hop == d - 1 and ug.exit_node == d - 1 and ug.graph.num_nodes == d
            assert ug.graph.edge_index.tolist() == [list(range(d - 1)), list(range(1, d))]
            exit_in_whole = offset + d - 1
            whole = _receptive_field(g, exit_in_whole, ug.hop)
            alone = _receptive_field(ug.graph, ug.exit_node, ug.hop)
            assert whole == alone
            # hop d-1 covers exactly the unit's nodes
            assert [row[1][0] for row in whole[0]] == [u] * d
            offset += d


def test_unit_graph_uses_default_globals(space):
    cfg = space.units[0].layer_choices[:2]
    ug = space.unit_graph(0, cfg)
    assert torch.all(ug.graph.x_cont == 224.0)
    ug2 = space.unit_graph(0, cfg, {"r": 192})
    assert torch.all(ug2.graph.x_cont == 192.0)


def test_stratified_sampling_covers_every_choice(space):
    archs = space.sample(30, seed=5, stratified=True)
    assert len(archs) == 30 and all(space.contains(a) for a in archs)
    for u, spec in enumerate(space.units):
        assert {len(a.units[u]) for a in archs} == set(spec.depths)
        assert {layer for a in archs for layer in a.units[u]} == set(spec.layer_choices)
    assert {a.global_dict["r"] for a in archs} == set(space.global_choices["r"])


# ---- networks --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", SPACES)
def test_build_model_forward_small_inputs(name):
    sp = get_space(name)
    torch.manual_seed(0)
    a = sp.sample(1, seed=7)[0]
    with torch.no_grad():
        m = sp.build_model(a, num_classes=10, in_chans=1, resolution=28).eval()
        assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)
        m3 = sp.build_model(a, num_classes=5, in_chans=3).eval()
        assert m3(torch.randn(1, 3, 64, 64)).shape == (1, 5)


@pytest.mark.parametrize("name", SPACES)
def test_params_flops_grow_with_expansion(name):
    sp = get_space(name)
    small = sp.assemble([[(3, 3)] * min(u.depths) for u in sp.units], {"r": 192})
    big = sp.assemble([[(6, 3)] * min(u.depths) for u in sp.units], {"r": 192})
    ps = sp.count_params_flops(small, num_classes=10, in_chans=3, resolution=32)
    pb = sp.count_params_flops(big, num_classes=10, in_chans=3, resolution=32)
    assert 0 < ps["params"] < pb["params"] and 0 < ps["flops"] < pb["flops"]


def test_ofa_mbv3_block_plan_matches_ofa():
    mb = get_space("ofa_mbv3")
    a = mb.assemble([[(3, 3)] * 2] * 5)
    plan = mb.block_plan(a)
    firsts = [b for b in plan if b["in"] != b["out"] or b["stride"] != 1]
    assert [(b["out"], b["stride"], b["act"], b["se"]) for b in firsts] == [
        (24, 2, "relu", False), (40, 2, "relu", True), (80, 2, "hard_swish", False), (112, 1, "hard_swish", True), (160, 2, "hard_swish", True)
    ]
