"""Search spaces, one registry name each, resolved lazily so importing the package is cheap.

    >>> from search_spaces import get_space, list_spaces
    >>> space = get_space("nb201")
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from .registry import Registry

SPACES: Registry = Registry("search space")
for _name, _target in {
    "ofa_mbv3": "search_spaces.ofa_mbv3:OFAMobileNetV3Space",
    "ofa_pn": "search_spaces.ofa_pn:OFAProxylessSpace",
    "nb201": "search_spaces.nb201:NB201Space",
    "nasbench_graph": "search_spaces.nasbench_graph:NASBenchGraphSpace",
    "transnas_micro": "search_spaces.transnas_micro:TransNASMicroSpace",
}.items():  # a new space adds one line here
    SPACES.register(_name, _target)


def register_space(name: str, target) -> None:
    """Register a space class (or ``"module:Class"``) under ``name`` (plug-ins may call this)."""
    SPACES.register(name, target)
    get_space.cache_clear()


def list_spaces() -> list[str]:
    """Names of the registered spaces."""
    return SPACES.names()


@lru_cache(maxsize=None)
def get_space(name: str):
    """The (stateless, shared) space instance called ``name``."""
    return SPACES.get(name)()


_BASE_NAMES = ("Arch", "SearchSpace", "UnitGraph", "UnitSpec")


def __getattr__(name):  # the base classes import torch: only when asked for
    if name in _BASE_NAMES:
        return getattr(importlib.import_module("search_spaces.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [*_BASE_NAMES, "SPACES", "get_space", "list_spaces", "register_space"]
