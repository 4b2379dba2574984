"""OFA ProxylessNAS, with the paper's merge of the 1-block final stage into the 5th unit.

OFA's ``OFAProxylessNASNets`` has five elastic stages of up to 4 MBConv blocks and a sixth stage
of exactly one (elastic e/k) block; its encoding is ``ks``/``e`` of 21 slots (5 x 4 + 1) and
``d`` of 6 stage depths whose last is always 1. AutoBuild (method.md section 5) merges the 6th
stage into the 5th, giving five units:

* units 0-3 = stages 0-3, depth {2, 3, 4}, slots 0-15 (4 each);
* unit 4 = stage 4 (variable, depth 2-4, slots 16-19) followed by stage 5's block (slot 20), so
  depth {3, 4, 5}; its *last* layer is always the final block. A unit-4 configuration of depth n
  maps to ``d[4] = n - 1``, ``d[5] = 1``, its first n-1 layers to slots 16.., its last to slot 20.

The ``layer`` node feature is the slot offset inside the unit, so the final block always has
layer 4 (e.g. a depth-3 unit 4 has layers 0, 1, 4), which keeps it distinguishable from stage 4's
blocks. Per unit 7,371 configurations; unit 4 has 9^3 + 9^4 + 9^5 = 66,339.

Network (OFA w1.3, the released ``ofa_proxyless_d234_e346_k357_w1.3`` supernet; pass
``width_mult=1.0`` for the base widths): 3x3/2 stem (40 ch), a fixed 3x3 depthwise-separable
block to 24, stages of widths 32, 56, 104, 128, 248 and the final 416 block (w1.0: 16 / 24, 40,
80, 96, 192, 320) with strides 2, 2, 2, 1, 2, 1, ReLU6 throughout and no squeeze-excite, then a
1x1 conv to 1664 (w1.0: 1280) + BN + ReLU6, global pooling and the classifier.

Encodings accepted by :meth:`parse` (also as JSON strings):

* OFA's dict ``{"ks": [21], "e": [21], "d": [6] or [5], "r"}``: ``d[5]``, if given, must be 1;
  unused slots are ignored whatever they hold; other keys too.
* ``{"units": [...], "r"}`` or a plain list of 5 unit lists (unit 4 of depth 3-5, final block
  last), or of 6 OFA stage lists whose 6th holds exactly one layer.
* an :class:`~search_spaces.base.Arch` (validated).

:meth:`format` returns OFA's dict with 6 depths (last 1) and unused slots set to 0.
"""

from __future__ import annotations

from timm.layers import make_divisible

from ._mbconv import MacroSpec, MBConvMacroSpace, StageSpec

_BASE_STEM, _BASE_FIRST, _BASE_LAST = 32, 16, 1280
_BASE_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))
_BASE_FINAL = (320, 1)


def ofa_proxyless_spec(width_mult: float = 1.3) -> MacroSpec:
    """OFA's widths: every base width times ``width_mult``, rounded to a multiple of 8."""
    w = lambda c: make_divisible(c * width_mult, 8)  # noqa: E731
    stages = tuple(StageSpec(w(c), s, "relu6", False) for c, s in _BASE_STAGES)
    final = StageSpec(w(_BASE_FINAL[0]), _BASE_FINAL[1], "relu6", False, depths=(1,))
    return MacroSpec(
        stem_width=w(_BASE_STEM),
        stem_act="relu6",
        first_width=w(_BASE_FIRST),
        first_act="relu6",
        stages=stages + (final,),
        unit_stages=((0,), (1,), (2,), (3,), (4, 5)),
        head_expand=w(_BASE_LAST),
        head_expand_act="relu6",
        head_mix=None,
        head_mix_act="relu6",
    )


class OFAProxylessSpace(MBConvMacroSpace):
    name = "ofa_pn"
    description = "OFA ProxylessNAS w1.3: 5 units (the 1-block final stage merged into unit 4: depth {3,4,5}) x MBConv (e in {3,4,6}, k in {3,5,7}), resolution 192..224"

    def __init__(self, width_mult: float = 1.3):
        self.width_mult = width_mult
        super().__init__(ofa_proxyless_spec(width_mult))
