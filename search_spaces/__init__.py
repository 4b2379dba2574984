"""Registry of search spaces: one name per space, resolved lazily so importing the registry is cheap.

    >>> from search_spaces import get_space, list_spaces
    >>> space = get_space("nb201")
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from search_spaces.errors import UnknownNameError

from .base import Arch, SearchSpace, UnitGraph, UnitSpec

# name -> "module:Class"; a new space adds one line here.
_REGISTRY: dict[str, str] = {
    "ofa_mbv3": "search_spaces.ofa_mbv3:OFAMobileNetV3Space",
    "ofa_pn": "search_spaces.ofa_pn:OFAProxylessSpace",
    "nb201": "search_spaces.nb201:NB201Space",
    "nasbench_graph": "search_spaces.nasbench_graph:NASBenchGraphSpace",
    "transnas_micro": "search_spaces.transnas_micro:TransNASMicroSpace",
}


def register_space(name: str, target: str) -> None:
    """Register ``"module:Class"`` under ``name`` (plug-ins may call this)."""
    _REGISTRY[name] = target
    get_space.cache_clear()


def list_spaces() -> list[str]:
    return list(_REGISTRY)


@lru_cache(maxsize=None)
def get_space(name: str) -> SearchSpace:
    """The (stateless, shared) space instance called ``name``."""
    if name not in _REGISTRY:
        raise UnknownNameError("search space", name, _REGISTRY)
    mod, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(mod), cls)()


__all__ = ["Arch", "SearchSpace", "UnitGraph", "UnitSpec", "get_space", "list_spaces", "register_space"]
