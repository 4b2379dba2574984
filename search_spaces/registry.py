"""One registry type for every named plug-in: search spaces, evaluators, search strategies.

Entries are classes or lazy ``"package.module:Class"`` strings (imported only when asked for, so
listing names stays cheap). Lookups of unknown names raise :class:`UnknownNameError` with the
closest known names.

    >>> reg = Registry("colour")
    >>> reg.register("dict", "builtins:dict")
    >>> reg.get("dict") is dict
    True
"""

from __future__ import annotations

import importlib
from typing import Any, Generic, TypeVar

from search_spaces.errors import ConfigError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> classes, with aliases and lazy imports.

    Args:
        kind: what the entries are, for error messages ("search space", "evaluator", ...).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, target: Any, aliases: tuple[str, ...] = ()) -> None:
        """Register ``target`` (a class or ``"module:Class"``) under ``name`` and its ``aliases``."""
        if isinstance(target, str) and ":" not in target:
            raise ConfigError(f"{self.kind} target must look like 'package.module:Class', got {target!r}")
        self._entries[name] = target
        for a in aliases:
            self._aliases[a] = name

    def names(self) -> list[str]:
        """Registered names (aliases excluded), sorted."""
        return sorted(self._entries)

    def canonical(self, name: str) -> str:
        """The registered name behind ``name`` (an alias or the name itself); raises if unknown."""
        key = self._aliases.get(name, name)
        if key not in self._entries:
            key = self._aliases.get(str(name).lower(), str(name).lower())
        if key not in self._entries:
            raise UnknownNameError(self.kind, name, self._entries)
        return key

    def get(self, name: str) -> type[T]:
        """The class registered as ``name``, imported on first use."""
        key = self.canonical(name)
        target = self._entries[key]
        if isinstance(target, str):
            mod, cls = target.split(":")
            try:
                target = getattr(importlib.import_module(mod), cls)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"{self.kind} {key!r} ({self._entries[key]}) is not available: {e}") from e
            self._entries[key] = target
        return target

    def __contains__(self, name: str) -> bool:
        try:
            self.canonical(name)
        except UnknownNameError:
            return False
        return True
