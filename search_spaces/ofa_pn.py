"""OFA ProxylessNAS, with the paper's merge of the 1-block final stage into the 5th unit.

OFA's ``OFAProxylessNASNets`` has five elastic stages of up to 4 MBConv blocks and a sixth of
exactly one block. AutoBuild merges the sixth stage into the fifth, giving five units: units
0-3 of depth {2, 3, 4} and unit 4 of depth {3, 4, 5} whose last layer is always the final
block. The ``layer`` node feature is the slot offset inside the unit, so the final block keeps
its own position. The network is OFA's released w1.3 supernet's subnet (``width_mult=1.0`` for
the base widths). Encodings, slot mapping and network details: docs/spaces.md.
"""

from __future__ import annotations

from timm.layers import make_divisible

from ._mbconv import MacroSpec, MBConvMacroSpace, StageSpec

_BASE_STEM, _BASE_FIRST, _BASE_LAST = 32, 16, 1280
_BASE_STAGES = ((24, 2), (40, 2), (80, 2), (96, 1), (192, 2))
_BASE_FINAL = (320, 1)


def ofa_proxyless_spec(width_mult: float = 1.3) -> MacroSpec:
    """The ProxylessNAS supernet as a :class:`MacroSpec` at OFA's widths: every base width times
    ``width_mult``, rounded to a multiple of 8.

    Args:
        width_mult: width multiplier (1.3: OFA's released supernet; 1.0: the base widths).
    """
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
    """The OFA-ProxylessNAS space (registered as ``ofa_pn``).

    Args:
        width_mult: width multiplier of the networks built (1.3 by default, OFA's release).

    Example:
        >>> space = OFAProxylessSpace()
        >>> [u.depths for u in space.units][-1], len(space.format(space.sample(1)[0])["ks"])
        ((3, 4, 5), 21)
    """

    name = "ofa_pn"
    description = "OFA ProxylessNAS w1.3: 5 units (the 1-block final stage merged into unit 4: depth {3,4,5}) x MBConv (e in {3,4,6}, k in {3,5,7}), resolution 192..224"

    def __init__(self, width_mult: float = 1.3):
        self.width_mult = width_mult
        super().__init__(ofa_proxyless_spec(width_mult))
