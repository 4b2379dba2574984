"""Shared machinery of the OFA macro spaces (MobileNetV3 and ProxylessNAS supernets).

Both supernets are a stem, stages of elastic MBConv blocks (each block picks an expansion ratio
``e`` and a kernel size ``k``; each stage how many of its slots are active) and a head. A
:class:`MacroSpec` describes a supernet as data and :class:`MBConvMacroSpace` derives encodings,
graphs and real timm networks from it, so the two concrete spaces are only their descriptions
and cannot drift apart. Units are stages, except that a unit may absorb trailing fixed-depth
stages (ProxylessNAS). Encoding conventions (unused slots, the ``layer`` feature): docs/spaces.md.
"""

from __future__ import annotations

import numpy as np

import json
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Sequence

from search_spaces.errors import EncodingError
from search_spaces.graph import ArchGraph, FeatureSpec

from .base import Arch, SearchSpace, UnitGraph, UnitSpec, chain_graph

EXPAND_CHOICES = (3, 4, 6)
KERNEL_CHOICES = (3, 5, 7)
RESOLUTION_CHOICES = tuple(range(192, 225, 4))
LAYER_CHOICES = tuple((e, k) for e in EXPAND_CHOICES for k in KERNEL_CHOICES)


@dataclass(frozen=True)
class StageSpec:
    """One OFA stage.

    Attributes:
        width: output channels.
        stride: stride of the stage's first block.
        act: activation name (timm's ``get_act_layer``).
        se: whether its blocks use squeeze-excite.
        depths: allowed block counts; a single value marks a fixed-depth stage, which must be
            merged into the unit before it (it has nothing to search on its own but its blocks'
            ``e``/``k``).
    """

    width: int
    stride: int
    act: str
    se: bool
    depths: tuple = (2, 3, 4)

    @property
    def slots(self) -> int:
        """Slots the stage occupies in OFA's per-slot lists (its largest depth)."""
        return max(self.depths)

    @property
    def fixed(self) -> bool:
        """Whether the stage has a single allowed depth."""
        return len(self.depths) == 1


@dataclass(frozen=True)
class MacroSpec:
    """A whole OFA-style supernet as data.

    Attributes:
        stem_width: channels of the 3x3 stride-2 stem conv.
        stem_act: its activation.
        first_width: output channels of the fixed depthwise-separable first block.
        first_act: its activation.
        stages: the :class:`StageSpec` of every stage, in order.
        unit_stages: ``unit_stages[u]`` lists the stages unit ``u`` covers, in order; only the
            first may vary in depth.
        head_expand: channels of a 1x1 conv + BN + act before pooling (None: absent).
        head_expand_act: its activation.
        head_mix: channels of a 1x1 conv + act (no BN) after pooling, MobileNetV3's "efficient
            last stage" (None: absent).
        head_mix_act: its activation.
        dropout: dropout before the classifier.
    """

    stem_width: int
    stem_act: str
    first_width: int
    first_act: str
    stages: tuple
    unit_stages: tuple
    head_expand: int | None
    head_expand_act: str
    head_mix: int | None
    head_mix_act: str
    dropout: float = 0.1


class _Layout:
    """Index arithmetic between OFA slots, stages and units, computed once per space."""

    def __init__(self, spec: MacroSpec):
        self.spec = spec
        self.stage_start = []
        pos = 0
        for st in spec.stages:
            self.stage_start.append(pos)
            pos += st.slots
        self.n_slots = pos
        covered = [s for stages in spec.unit_stages for s in stages]
        if covered != list(range(len(spec.stages))):
            raise ValueError("unit_stages must cover every stage once, in order")
        for stages in spec.unit_stages:
            if any(not spec.stages[s].fixed for s in stages[1:]):
                raise ValueError("only a unit's first stage may vary in depth")
        # slot offset (inside the unit) of each stage of the unit
        self.unit_stage_offset = []
        for stages in spec.unit_stages:
            offs, o = [], 0
            for s in stages:
                offs.append(o)
                o += spec.stages[s].slots
            self.unit_stage_offset.append(offs)
        self.unit_slots = [sum(spec.stages[s].slots for s in stages) for stages in spec.unit_stages]
        self.unit_fixed_tail = [sum(spec.stages[s].depths[0] for s in stages[1:]) for stages in spec.unit_stages]
        self.unit_depths = [tuple(d + tail for d in spec.stages[stages[0]].depths) for stages, tail in zip(spec.unit_stages, self.unit_fixed_tail)]
        # OFA's "d" may omit trailing fixed-depth stages (they have only one possible value)
        n_trailing_fixed = 0
        for st in reversed(spec.stages):
            if not st.fixed:
                break
            n_trailing_fixed += 1
        self.d_lengths = tuple(sorted({len(spec.stages), len(spec.stages) - n_trailing_fixed}))

    def stage_depths(self, unit: int, depth: int) -> list[int]:
        """How a unit of ``depth`` layers splits over its stages."""
        stages = self.spec.unit_stages[unit]
        return [depth - self.unit_fixed_tail[unit]] + [self.spec.stages[s].depths[0] for s in stages[1:]]

    def positions(self, unit: int, depth: int) -> list[int]:
        """Slot offset inside the unit of each of a ``depth``-layer configuration's layers."""
        out = []
        for off, n in zip(self.unit_stage_offset[unit], self.stage_depths(unit, depth)):
            out.extend(off + j for j in range(n))
        return out

    def global_slots(self, unit: int, depth: int) -> list[int]:
        first = self.stage_start[self.spec.unit_stages[unit][0]]
        return [first + p for p in self.positions(unit, depth)]


def _as_int(v: Any) -> int | None:
    """Integer value of ``v`` if it is an int or an integral float (tables often store 3.0)."""
    if isinstance(v, (bool, np.bool_)):
        return None
    if isinstance(v, (int, np.integer)):  # numpy ints arrive from score and importance tables
        return int(v)
    if isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer():
        return int(v)
    return None


def _short(v: Any, limit: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _is_seq(v: Any) -> bool:
    return isinstance(v, (list, tuple))


class MBConvMacroSpace(SearchSpace):
    """Base of the OFA macro spaces; a subclass only sets ``name``/``description`` and passes its
    :class:`MacroSpec` to ``super().__init__``, so the two spaces cannot drift apart in behaviour.

    Args:
        spec: the supernet's description.
        resolutions: the input resolutions searched (default: OFA's 192..224 in steps of 4); one
            value fixes the resolution, e.g. for a table or surrogate measured at 224 only.
    """

    spec: MacroSpec
    default_input = {"in_chans": 3, "resolution": 224, "num_classes": 1000}

    def __init__(self, spec: MacroSpec, resolutions: Sequence[int] | None = None):
        res = tuple(int(r) for r in (resolutions if resolutions is not None else RESOLUTION_CHOICES))
        bad = [r for r in res if r not in RESOLUTION_CHOICES]
        if not res or bad:
            raise EncodingError(f"{type(self).__name__}: resolutions {list(res)} must be a non-empty subset of {list(RESOLUTION_CHOICES)}")
        self.spec = spec
        self._layout = _Layout(spec)
        lay = self._layout
        self.units = tuple(
            UnitSpec(self._unit_name(u), lay.unit_depths[u], LAYER_CHOICES) for u in range(len(spec.unit_stages))
        )
        self.global_choices = {"r": tuple(sorted(set(res)))}
        self.features = (
            FeatureSpec("unit", "positional", tuple(range(len(self.units)))),
            FeatureSpec("layer", "positional", tuple(range(max(lay.unit_slots)))),
            FeatureSpec("e", "categorical", EXPAND_CHOICES),
            FeatureSpec("k", "categorical", KERNEL_CHOICES),
            FeatureSpec("r", "continuous", RESOLUTION_CHOICES, low=float(min(RESOLUTION_CHOICES)), high=float(max(RESOLUTION_CHOICES))),
        )

    def _unit_name(self, u: int) -> str:
        stages = self.spec.unit_stages[u]
        return f"unit{u}" if len(stages) == 1 else f"unit{u}+final"

    # ---- parsing ---------------------------------------------------------------------------
    def _err(self, msg: str) -> EncodingError:
        return EncodingError(f"{self.name}: {msg}")

    def _choice(self, v: Any, allowed: Sequence[int], where: str, what: str) -> int:
        iv = _as_int(v)
        if iv is None or iv not in allowed:
            raise self._err(f"{where}: {what} {_short(v)} not in {list(allowed)}")
        return iv

    def _layer(self, layer: Any, where: str) -> tuple[int, int]:
        if not _is_seq(layer) or len(layer) != 2:
            raise self._err(f"{where}: a layer is a pair [e, k] (expansion ratio, kernel size), got {_short(layer)}")
        e = self._choice(layer[0], EXPAND_CHOICES, where, "expansion ratio")
        k = self._choice(layer[1], KERNEL_CHOICES, where, "kernel size")
        return (e, k)

    def _resolution(self, obj: dict) -> int:
        if "r" not in obj:
            return self.default_globals()["r"]
        return self._choice(obj["r"], self.global_choices["r"], "r", "resolution")

    def parse(self, obj: Any) -> Arch:
        """Parse a native encoding into an :class:`~search_spaces.base.Arch`.

        Args:
            obj: OFA's ``{"ks", "e", "d", "r"}`` dict, ``{"units": [...], "r"}``, a plain list of
                per-unit ``[e, k]`` lists (or of per-stage lists), any of these as a JSON string,
                or an ``Arch`` (validated). ``r`` defaults to the largest resolution; other keys
                are ignored (metric columns ride along).

        Raises:
            EncodingError: the message names the unit, layer or slot at fault.

        Example:
            >>> from search_spaces import get_space
            >>> get_space("ofa_mbv3").parse([[[3, 3], [6, 7]]] * 5).global_dict
            {'r': 224}
        """
        if isinstance(obj, Arch):
            try:
                g = dict(obj.globals)
            except (TypeError, ValueError):
                raise self._err(f"Arch.globals must be (name, value) pairs, got {_short(obj.globals)}") from None
            extra = sorted(map(str, set(g) - {"r"}))
            if extra:
                raise self._err(f"unknown global choice(s) {extra}; known: ['r']")
            return self._from_units(obj.units, self._resolution(g))
        if isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except (ValueError, RecursionError) as exc:
                raise self._err(f"not valid JSON ({exc}); expected an OFA dict {{'ks', 'e', 'd', 'r'}} or per-unit [e, k] lists") from None
        if isinstance(obj, dict):
            if "ks" in obj or "e" in obj or "d" in obj:
                return self._from_ofa(obj)
            if "units" in obj:
                return self._from_units(obj["units"], self._resolution(obj))
            raise self._err(f"a dict encoding needs keys 'ks', 'e', 'd' (OFA) or 'units'; got keys {sorted(map(str, obj))[:10]}")
        if _is_seq(obj):
            return self._from_units(obj, self.default_globals()["r"])
        raise self._err(f"cannot parse {type(obj).__name__} {_short(obj)}; expected an OFA dict, per-unit [e, k] lists, a JSON string or an Arch")

    def _from_units(self, units: Any, r: int) -> Arch:
        spec = self.spec
        n_units, n_stages = len(self.units), len(spec.stages)
        if not _is_seq(units) or len(units) not in (n_units, n_stages):
            n = len(units) if _is_seq(units) else type(units).__name__
            allowed = f"{n_units}" if n_units == n_stages else f"{n_units} (or {n_stages} unmerged OFA stages)"
            raise self._err(f"expected {allowed} unit lists of [e, k] layers, got {n}")
        if len(units) == n_stages and n_stages != n_units:
            units = self._merge_stage_lists(units)
        cfgs = []
        for u, cfg in enumerate(units):
            allowed = self.units[u].depths
            if not _is_seq(cfg) or len(cfg) not in allowed:
                got = f"depth {len(cfg)}" if _is_seq(cfg) else _short(cfg)
                raise self._err(f"unit {u}: {got} not allowed; allowed depths: {list(allowed)}")
            cfgs.append(tuple(self._layer(layer, f"unit {u} layer {j}") for j, layer in enumerate(cfg)))
        return Arch.make(cfgs, {"r": r})

    def _merge_stage_lists(self, stage_lists: Sequence) -> list:
        """Per-stage lists (OFA's own grouping) -> per-unit lists, checking fixed stages' depths."""
        out = []
        for u, stages in enumerate(self.spec.unit_stages):
            merged: list = []
            for s in stages:
                block = stage_lists[s]
                st = self.spec.stages[s]
                if st.fixed and (not _is_seq(block) or len(block) != st.depths[0]):
                    got = len(block) if _is_seq(block) else _short(block)
                    raise self._err(f"stage {s} (merged into unit {u}) must have exactly {st.depths[0]} layer(s), got {got}")
                if not _is_seq(block):
                    raise self._err(f"stage {s}: expected a list of [e, k] layers, got {_short(block)}")
                merged.extend(block)
            out.append(merged)
        return out

    def _from_ofa(self, obj: dict) -> Arch:
        lay, spec = self._layout, self.spec
        for key, n in (("ks", lay.n_slots), ("e", lay.n_slots)):
            v = obj.get(key)
            if not _is_seq(v) or len(v) != n:
                got = f"length {len(v)}" if _is_seq(v) else _short(v)
                raise self._err(f"OFA encoding: '{key}' must be a list of {n} per-slot values ({len(spec.stages)} stages of {[s.slots for s in spec.stages]} slots), got {got}")
        d = obj.get("d")
        if not _is_seq(d) or len(d) not in lay.d_lengths:
            got = f"length {len(d)}" if _is_seq(d) else _short(d)
            raise self._err(f"OFA encoding: 'd' must be a list of {' or '.join(map(str, lay.d_lengths))} stage depths, got {got}")
        stage_d = []
        for s, st in enumerate(spec.stages):
            if s < len(d):
                stage_d.append(self._choice(d[s], st.depths, f"d[{s}] (stage {s})", "depth"))
            else:
                stage_d.append(st.depths[0])
        ks, es = obj["ks"], obj["e"]
        cfgs = []
        for u, stages in enumerate(spec.unit_stages):
            cfg = []
            for s in stages:
                start = lay.stage_start[s]
                for j in range(stage_d[s]):
                    i = start + j
                    where = f"(unit {u} layer {len(cfg)})"
                    e = self._choice(es[i], EXPAND_CHOICES, f"e[{i}] {where}", "expansion ratio")
                    k = self._choice(ks[i], KERNEL_CHOICES, f"ks[{i}] {where}", "kernel size")
                    cfg.append((e, k))
            cfgs.append(tuple(cfg))
        return Arch.make(cfgs, {"r": self._resolution(obj)})

    # ---- formatting ------------------------------------------------------------------------
    def format(self, arch: Arch) -> dict:
        """OFA's dict; unused slots are 0 and ``d`` lists every stage (ProxylessNAS: its final 1).

        Args:
            arch: an ``Arch`` or any encoding :meth:`parse` accepts.
        """
        arch = self.parse(arch)
        lay = self._layout
        ks = [0] * lay.n_slots
        es = [0] * lay.n_slots
        d = []
        for u, cfg in enumerate(arch.units):
            d.extend(lay.stage_depths(u, len(cfg)))
            for slot, (e, k) in zip(lay.global_slots(u, len(cfg)), cfg):
                ks[slot], es[slot] = k, e
        return {"ks": ks, "e": es, "d": d, "r": arch.global_dict["r"]}

    # ---- graphs ----------------------------------------------------------------------------
    def _nodes(self, u: int, cfg: Sequence, r: int) -> list[dict]:
        pos = self._layout.positions(u, len(cfg))
        return [{"unit": u, "layer": p, "e": e, "k": k, "r": r} for p, (e, k) in zip(pos, cfg)]

    def to_graph(self, arch: Arch) -> ArchGraph:
        """A chain with one node per active block (features unit, layer, e, k, r).

        Args:
            arch: an ``Arch`` or any encoding :meth:`parse` accepts.
        """
        arch = self.parse(arch)
        r = arch.global_dict["r"]
        nodes = [n for u, cfg in enumerate(arch.units) for n in self._nodes(u, cfg, r)]
        return chain_graph(self.features, nodes)

    def unit_graph(self, unit: int, config: Sequence, globals: dict | None = None) -> UnitGraph:
        """The unit's blocks as a chain; its last block at hop d-1 sees exactly the unit, and the
        block before the unit is d hops away, so the receptive field matches the whole network.

        Args:
            unit: unit index.
            config: the unit's layers, ``[(e, k), ...]``.
            globals: global choices (default: the space's; only ``r`` is used).
        """
        if not isinstance(unit, int) or not 0 <= unit < len(self.units):
            raise self._err(f"unit index {_short(unit)} not in 0..{len(self.units) - 1}")
        g = dict(self.default_globals())
        g.update(globals or {})
        r = self._choice(g.get("r"), RESOLUTION_CHOICES, "r", "resolution")
        allowed = self.units[unit].depths
        if not _is_seq(config) or len(config) not in allowed:
            raise self._err(f"unit {unit}: configuration {_short(config)} has a depth not in {list(allowed)}")
        cfg = [self._layer(layer, f"unit {unit} layer {j}") for j, layer in enumerate(config)]
        graph = chain_graph(self.features, self._nodes(unit, cfg, r))
        return UnitGraph(graph, exit_node=len(cfg) - 1, hop=len(cfg) - 1)

    def unit_graph_set(self, unit: int, configs: Sequence, globals: dict | None = None):
        """Vectorised ``unit_graph`` for every configuration at once: the node rows of all chains
        are produced as flat arrays, so scoring a whole space costs array operations rather than
        tens of thousands of small graph objects.

        Args:
            unit: unit index.
            configs: the unit's configurations to build.
            globals: global choices (default: the space's; only ``r`` is used).

        Returns:
            ``(GraphSet, exit_nodes, hops)``, one entry per configuration.
        """
        import torch

        from search_spaces.graph import GraphSet

        g = dict(self.default_globals())
        g.update(globals or {})
        r = self._choice(g.get("r"), RESOLUTION_CHOICES, "r", "resolution")
        feats = {f.name: f for f in self.features}
        depths = np.fromiter((len(c) for c in configs), dtype=np.int64, count=len(configs))
        bad = set(depths.tolist()) - set(self.units[unit].depths)
        if bad:
            raise self._err(f"unit {unit}: configuration depth(s) {sorted(bad)} not in {list(self.units[unit].depths)}")
        layers = np.array([layer for c in configs for layer in c], dtype=np.int64).reshape(-1, 2)
        e_lut = np.full(layers[:, 0].max() + 1, -1)
        k_lut = np.full(layers[:, 1].max() + 1, -1)
        for i, v in enumerate(feats["e"].values):
            if v < len(e_lut):
                e_lut[v] = i
        for i, v in enumerate(feats["k"].values):
            if v < len(k_lut):
                k_lut[v] = i
        e_idx, k_idx = e_lut[layers[:, 0]], k_lut[layers[:, 1]]
        if (e_idx < 0).any() or (k_idx < 0).any():
            raise self._err(f"unit {unit}: a configuration holds an expansion ratio or kernel size outside the space")
        pos_by_depth = {int(d): [feats["layer"].index(p) for p in self._layout.positions(unit, int(d))] for d in np.unique(depths)}
        layer_idx = np.concatenate([pos_by_depth[int(d)] for d in depths])
        unit_idx = np.full(len(layers), feats["unit"].index(unit))
        x_cat = torch.from_numpy(np.stack([unit_idx, layer_idx, e_idx, k_idx], 1))
        # column order must follow the schema's categorical order: check it once
        assert [f.name for f in self.features if f.is_categorical] == ["unit", "layer", "e", "k"]
        x_cont = torch.full((len(layers), 1), float(r))
        n_nodes = torch.from_numpy(depths)
        edges, n_edges = GraphSet.chain_edges(n_nodes)
        return GraphSet.from_flat(x_cat, x_cont, edges, n_nodes, n_edges), depths - 1, depths - 1

    # ---- real networks ---------------------------------------------------------------------
    def block_plan(self, arch: Arch) -> list[dict]:
        """Every searchable block in order with its channels, stride, activation and SE flag.

        Args:
            arch: an ``Arch`` or any encoding :meth:`parse` accepts.

        Returns:
            One dict per block: unit, stage, in, out, stride, e, k, act, se.
        """
        arch = self.parse(arch)
        plan, cin = [], self.spec.first_width
        for u, cfg in enumerate(arch.units):
            stage_ids = self.spec.unit_stages[u]
            per_stage = self._layout.stage_depths(u, len(cfg))
            it = iter(cfg)
            for s, n in zip(stage_ids, per_stage):
                st = self.spec.stages[s]
                for j in range(n):
                    e, k = next(it)
                    plan.append({"unit": u, "stage": s, "in": cin, "out": st.width, "stride": st.stride if j == 0 else 1, "e": e, "k": k, "act": st.act, "se": st.se})
                    cin = st.width
        return plan

    def build_model(self, arch: Arch, num_classes: int = 10, in_chans: int = 3, resolution: int | None = None):
        """The subnet as a timm-block network. All convolutions are padded and the head pools
        globally, so the same module runs at any input size (28x28 Fashion-MNIST up to 224).

        Args:
            arch: an ``Arch`` or any encoding :meth:`parse` accepts.
            num_classes: classifier outputs.
            in_chans: input channels.
            resolution: accepted for the contract (checked to be a positive integer) but does
                not change the module.
        """
        import torch.nn as nn
        from timm.layers import get_act_layer, make_divisible
        from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual, SqueezeExcite
        from timm.models._efficientnet_builder import efficientnet_init_weights

        if resolution is not None and (_as_int(resolution) is None or resolution < 1):
            raise self._err(f"resolution must be a positive integer, got {_short(resolution)}")
        spec = self.spec
        # OFA's SE: squeeze to make_divisible(mid / 4, 8) with ReLU, gate with hard sigmoid
        se_layer = partial(SqueezeExcite, rd_round_fn=make_divisible, force_act_layer=nn.ReLU, gate_layer="hard_sigmoid")
        stem = nn.Sequential(
            nn.Conv2d(in_chans, spec.stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(spec.stem_width),
            get_act_layer(spec.stem_act)(inplace=True),
        )
        blocks = [DepthwiseSeparableConv(spec.stem_width, spec.first_width, dw_kernel_size=3, stride=1, act_layer=get_act_layer(spec.first_act))]
        for b in self.block_plan(arch):
            blocks.append(
                InvertedResidual(
                    b["in"], b["out"], dw_kernel_size=b["k"], stride=b["stride"], exp_ratio=float(b["e"]),
                    act_layer=get_act_layer(b["act"]), se_layer=se_layer if b["se"] else None,
                )
            )
        head: list = []
        c = spec.stages[-1].width
        if spec.head_expand:
            head += [nn.Conv2d(c, spec.head_expand, 1, bias=False), nn.BatchNorm2d(spec.head_expand), get_act_layer(spec.head_expand_act)(inplace=True)]
            c = spec.head_expand
        head.append(nn.AdaptiveAvgPool2d(1))
        if spec.head_mix:
            head += [nn.Conv2d(c, spec.head_mix, 1, bias=False), get_act_layer(spec.head_mix_act)(inplace=True)]
            c = spec.head_mix
        head += [nn.Flatten(1), nn.Dropout(spec.dropout), nn.Linear(c, num_classes)]
        model = nn.Sequential(stem, nn.Sequential(*blocks), nn.Sequential(*head))
        efficientnet_init_weights(model)  # timm's MobileNet init: trains from scratch better than torch's default
        return model
