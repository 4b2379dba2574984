"""Error types that carry a message meant for a person.

Every error a user can cause by bad input derives from :class:`AutoBuildError`, so the CLI can
print one clear paragraph (no traceback unless ``--debug``) and exit non-zero, while genuine bugs
still surface as ordinary exceptions.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class AutoBuildError(Exception):
    """Base class of all errors caused by input a user can fix."""


class EncodingError(AutoBuildError, ValueError):
    """An architecture encoding could not be parsed or lies outside its space."""


class ConfigError(AutoBuildError, ValueError):
    """A configuration value is missing, of the wrong type or out of range."""


class TableError(AutoBuildError, ValueError):
    """A benchmark or labelled table is unreadable, or misses or corrupts required columns."""


class ExpressionError(AutoBuildError, ValueError):
    """A target expression is malformed, unsafe or names unknown metrics."""


class CheckpointError(AutoBuildError, ValueError):
    """A saved ranker, store or other artefact is missing or corrupted."""


class UnknownNameError(AutoBuildError, KeyError):
    """A registry lookup failed; the message suggests the closest known names.

    Args:
        kind: what was looked up (``"search space"``, ``"evaluator"``, ...).
        name: the name given.
        known: the names that exist.
    """

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = sorted(known)
        close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        msg = f"Unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(known)}."
        super().__init__(msg)
        self.kind, self.name, self.known, self.suggestions = kind, name, known, close

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return self.args[0]


def suggest(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint (or '') for messages built elsewhere.

    Args:
        name: the name given.
        known: the names that exist.

    Example:
        >>> suggest("gcm", ["gcn", "gat", "gin"])
        " Did you mean 'gcn'?"
    """
    close = difflib.get_close_matches(str(name), list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
