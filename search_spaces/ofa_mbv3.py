"""OFA MobileNetV3 (width 1.0), the main macro space of the AutoBuild paper.

Five units (OFA's five elastic stages) of depth {2, 3, 4}; each block an MBConv with expansion
ratio e in {3, 4, 6} and kernel size k in {3, 5, 7}; one global choice, the input resolution
r in {192, 196, ..., 224}. Per unit 9^2 + 9^3 + 9^4 = 7,371 configurations.

Network (OFA ``OFAMobileNetV3`` w1.0): 3x3/2 stem to 16 channels (h-swish), a fixed 3x3
depthwise-separable block (16 -> 16, ReLU), the five stages (widths 24, 40, 80, 112, 160;
strides 2, 2, 2, 1, 2; ReLU, ReLU, h-swish, h-swish, h-swish; squeeze-excite in units 1, 3, 4,
0-based), then 1x1 conv to 960 + BN + h-swish, global pooling, 1x1 conv to 1280 + h-swish and the
classifier. With ``num_classes=1000`` at 224 the parameter count equals OFA's own.

Encodings accepted by :meth:`parse` (also as JSON strings):

* OFA's dict ``{"ks": [20], "e": [20], "d": [5], "r": 224}``: stage s uses the first ``d[s]`` of
  its 4 slots; the other slots are ignored whatever they hold; other keys (``top1``...) too.
* ``{"units": [[[e, k], ...] x 5], "r": 224}`` or a plain list of the 5 unit lists (r = 224).
* an :class:`~search_spaces.base.Arch` (validated).

:meth:`format` returns OFA's dict with unused slots set to 0, so ``key`` (the compact JSON of
that dict) is canonical: two encodings that differ only in padding get the same key.
"""

from __future__ import annotations

from ._mbconv import MacroSpec, MBConvMacroSpace, StageSpec

OFA_MBV3_W10 = MacroSpec(
    stem_width=16,
    stem_act="hard_swish",
    first_width=16,
    first_act="relu",
    stages=(
        StageSpec(24, 2, "relu", False),
        StageSpec(40, 2, "relu", True),
        StageSpec(80, 2, "hard_swish", False),
        StageSpec(112, 1, "hard_swish", True),
        StageSpec(160, 2, "hard_swish", True),
    ),
    unit_stages=((0,), (1,), (2,), (3,), (4,)),
    head_expand=960,
    head_expand_act="hard_swish",
    head_mix=1280,
    head_mix_act="hard_swish",
)


class OFAMobileNetV3Space(MBConvMacroSpace):
    name = "ofa_mbv3"
    description = "OFA MobileNetV3 w1.0: 5 units x depth {2,3,4} x MBConv (e in {3,4,6}, k in {3,5,7}), resolution 192..224"

    def __init__(self):
        super().__init__(OFA_MBV3_W10)
