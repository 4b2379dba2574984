"""OFA MobileNetV3 (width 1.0), the main macro space of the AutoBuild paper.

Five units (OFA's five elastic stages) of depth {2, 3, 4}; each block an MBConv with expansion
ratio e in {3, 4, 6} and kernel size k in {3, 5, 7}; one global choice, the input resolution
r in {192, 196, ..., 224}. The network follows OFA's ``OFAMobileNetV3`` w1.0 (at 1000 classes
and 224 pixels it has OFA's parameter count). :meth:`parse` takes OFA's ``ks/e/d/r`` dict,
per-unit ``[e, k]`` lists or an ``Arch``; :meth:`format` writes OFA's dict with unused slots 0,
so two encodings that differ only in padding share a key. Details: docs/spaces.md.
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
    """The OFA-MobileNetV3 w1.0 space (registered as ``ofa_mbv3``).

    Args:
        resolutions: input resolutions searched (default all of 192..224; ``(224,)`` fixes it).

    Example:
        >>> space = OFAMobileNetV3Space()
        >>> space.n_unit_configs()[0], space.format(space.sample(1)[0])["r"] in range(192, 225, 4)
        (7371, True)
    """

    name = "ofa_mbv3"
    description = "OFA MobileNetV3 w1.0: 5 units x depth {2,3,4} x MBConv (e in {3,4,6}, k in {3,5,7}), resolution 192..224"

    def __init__(self, resolutions=None):
        super().__init__(OFA_MBV3_W10, resolutions)
