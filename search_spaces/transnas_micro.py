"""TransNAS-Bench-101 micro cells as an AutoBuild space (``transnas_micro``).

The micro space of TransNAS-Bench-101 (Duan et al., CVPR 2021) is NAS-Bench-201's kind of cell
with four ops (``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``): 4^6 = 4,096 cells,
each trained on seven tasks (classification, segmentation, autoencoding, ...). Units, graph,
unit graphs and the torch cell come from :mod:`search_spaces._cell`, shared with ``nb201``.
Encodings: the benchmark's string ``64-41414-t0_t1t2_t3t4t5`` (``format``), its bare cell part
``t0_t1t2_t3t4t5``, the 6-tuple string ``"(t0, t1, t2, t3, t4, t5)"`` that NASLib's data file keys
cells by (:meth:`TransNASMicroSpace.tuple_string`), a list of six op codes 0..3 or op names,
per-node op lists, or an Arch. Edge order 0→1, 0→2, 1→2, 0→3, 1→3, 2→3; code = index in OPS.
``key`` is the exact string: the benchmark trained all 4,096 cells separately.
"""

from __future__ import annotations

import itertools
import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from search_spaces.errors import EncodingError

from ._cell import EDGES, N_NODES, Cell, CellSpace, ReLUConvBN, cell_features, cell_units
from .base import Arch

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")
N_CELLS = len(OPS) ** len(EDGES)  # 4,096
BASE_CHANNELS = 64
MACRO = "41414"  # the micro benchmark's fixed macro skeleton
_EXAMPLE = "64-41414-3_33_333"
_TUPLE_RE = re.compile(r"^\(\s*([0-3])\s*,\s*([0-3])\s*,\s*([0-3])\s*,\s*([0-3])\s*,\s*([0-3])\s*,\s*([0-3])\s*\)$")
_CELL_RE = re.compile(r"^([0-3])_([0-3])([0-3])_([0-3])([0-3])([0-3])$")
HEADS = ("classification", "dense")


class TransNASMicroSpace(CellSpace):
    name = "transnas_micro"
    description = "TransNAS-Bench-101 micro cell: 4 nodes, 6 edges, 4 ops (4,096 cells); units = incoming edges of nodes 1, 2, 3"
    OPS = OPS
    features = cell_features(OPS)
    units = cell_units(OPS)
    global_choices: dict = {}
    default_input = {"in_chans": 3, "resolution": 32, "num_classes": 10}

    # ---- encodings ---------------------------------------------------------------------------
    def codes(self, arch: Arch) -> list[int]:
        """The six op codes (index into OPS) in edge order."""
        return [OPS.index(op) for op in self.edge_ops(arch)]

    def _from_codes(self, codes: Sequence) -> Arch:
        codes = list(codes)
        if len(codes) != len(EDGES):
            raise EncodingError(f"transnas_micro: a cell needs {len(EDGES)} op codes (edges 0→1, 0→2, 1→2, 0→3, 1→3, 2→3), got {len(codes)}")
        for e, c in zip(EDGES, codes):
            if isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or not 0 <= int(c) < len(OPS):
                raise EncodingError(f"transnas_micro: edge {e[0]}→{e[1]} has op code {c!r}; codes are 0..{len(OPS) - 1} "
                                    f"({', '.join(f'{i} = {o}' for i, o in enumerate(OPS))})")
        return self._from_ops([OPS[int(c)] for c in codes])

    def _from_string(self, s: str) -> Arch:
        text = s.strip()
        hint = f"expected the benchmark's string (e.g. {_EXAMPLE}), its cell part (e.g. 3_33_333) or a tuple string such as '(1, 0, 0, 2, 1, 0)'"
        m = _TUPLE_RE.match(text)
        if m:
            return self._from_codes([int(g) for g in m.groups()])
        parts = text.split("-")
        if len(parts) == 3:
            if parts[0] != str(BASE_CHANNELS) or parts[1] != MACRO:
                raise EncodingError(f"transnas_micro: cannot parse {s!r}: the micro benchmark's cells all sit in "
                                    f"'{BASE_CHANNELS}-{MACRO}-...', got prefix '{parts[0]}-{parts[1]}'; {hint}")
            cell = parts[2]
        elif len(parts) == 1:
            cell = parts[0]
        else:
            raise EncodingError(f"transnas_micro: cannot parse {s!r}; {hint}")
        m = _CELL_RE.match(cell)
        if not m:
            raise EncodingError(f"transnas_micro: cannot parse {s!r}: the cell part must be t0_t1t2_t3t4t5 with op codes 0..3 "
                                f"({', '.join(f'{i} = {o}' for i, o in enumerate(OPS))}); {hint}")
        return self._from_codes([int(g) for g in m.groups()])

    def parse(self, obj: Any) -> Arch:
        """Benchmark string, cell part, tuple string, six op codes or names, per-node op lists, or an Arch."""
        if isinstance(obj, Arch):
            return self.validate(obj)
        if isinstance(obj, str):
            return self._from_string(obj)
        if isinstance(obj, (list, tuple)):
            if len(obj) == N_NODES - 1 and all(isinstance(g, (list, tuple)) for g in obj):
                return self._from_node_lists(obj)
            if obj and all(isinstance(x, str) for x in obj):
                return self._from_ops(obj)
            return self._from_codes(obj)
        raise EncodingError(f"transnas_micro: cannot parse a {type(obj).__name__}; give the benchmark's string (e.g. {_EXAMPLE}), "
                            "a tuple string such as '(1, 0, 0, 2, 1, 0)' or a list of six op codes 0..3")

    def format(self, arch: Arch) -> str:
        """The benchmark's string ``64-41414-t0_t1t2_t3t4t5``."""
        c = "".join(str(x) for x in self.codes(arch))
        return f"{BASE_CHANNELS}-{MACRO}-{c[0]}_{c[1:3]}_{c[3:6]}"

    def tuple_string(self, arch: Arch) -> str:
        """The 6-tuple string NASLib's data file keys cells by, e.g. ``"(1, 0, 0, 2, 1, 0)"``."""
        return "(" + ", ".join(str(x) for x in self.codes(arch)) + ")"

    def key(self, arch: Arch) -> str:
        """The exact benchmark string: TransNAS-Bench-101 measured isomorphic cells separately
        (``functional_key`` gives the strict function-level classes)."""
        return self.format(arch)

    # ---- real networks -----------------------------------------------------------------------
    def build_model(self, arch: Arch, num_classes: int = 10, in_chans: int = 3, resolution: int | None = None,
                    C: int = BASE_CHANNELS, N: int = 2, structure: str = MACRO, head: str = "classification") -> nn.Module:
        """A stack of this cell in the benchmark's macro skeleton, with a task head.

        Args:
            arch: the cell.
            num_classes: outputs of the head (classes, or channels of a dense prediction).
            in_chans: input image channels.
            resolution: unused (fully convolutional); accepted for the space contract.
            C: stem channels (the benchmark's 64; shrink for tests).
            N: cells per module.
            structure: one digit per module, TransNAS-Bench-101's macro code: 1 = cells only,
                2 = double the channels first, 3 = halve the resolution first, 4 = both.
            head: ``"classification"`` (global pool + linear: ``[B, num_classes]``) or ``"dense"``
                (1×1 conv, upsampled to the input: ``[B, num_classes, H, W]``, e.g. segmentation).
        """
        self.validate(arch)
        if head not in HEADS:
            raise EncodingError(f"transnas_micro: head {head!r} is unknown; choose one of {', '.join(HEADS)}")
        if not structure or any(ch not in "1234" for ch in structure):
            raise EncodingError(f"transnas_micro: structure {structure!r} must be a non-empty string of digits 1..4 (e.g. {MACRO!r})")
        return TransNASMicroNetwork(self.edge_ops(arch), num_classes=num_classes, in_chans=in_chans, C=C, N=N, structure=structure, head=head)


# ---- the network -----------------------------------------------------------------------------------
class Transition(nn.Module):
    """Residual block that changes channels and/or resolution between modules."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.a = ReLUConvBN(c_in, c_out, 3, stride=stride)
        self.b = ReLUConvBN(c_out, c_out, 3)
        pool = [nn.AvgPool2d(2, stride=2, ceil_mode=True)] if stride == 2 else []
        self.shortcut = nn.Sequential(*pool, nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) + self.shortcut(x)


class TransNASMicroNetwork(nn.Module):
    """Stem, one module per ``structure`` digit (optional transition, then ``N`` cells), head."""

    def __init__(self, ops: Sequence[str], num_classes: int = 10, in_chans: int = 3, C: int = BASE_CHANNELS, N: int = 2,
                 structure: str = MACRO, head: str = "classification"):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        layers: list[nn.Module] = []
        c = C
        for digit in structure:
            c_out = 2 * c if digit in "24" else c
            stride = 2 if digit in "34" else 1
            if c_out != c or stride != 1:
                layers.append(Transition(c, c_out, stride))
                c = c_out
            layers += [Cell(ops, c) for _ in range(N)]
        self.cells = nn.Sequential(*layers)
        self.dense = head == "dense"
        if self.dense:
            self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.Conv2d(c, num_classes, 1))
        else:
            self.head = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.cells(self.stem(x)))
        if self.dense:
            out = nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return out


def all_cells() -> list[list[int]]:
    """All 4,096 cells as op-code lists, in product order (edge 0→1 varying slowest)."""
    return [list(p) for p in itertools.product(range(len(OPS)), repeat=len(EDGES))]
