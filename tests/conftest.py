"""Shared pytest fixtures. Several test modules add fixtures here; keep each one small and documented."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared data folder (``../shared`` beside the repository, or
    ``$AUTOBUILD_SHARED_DIR``); tests that need ground-truth tables skip when it is absent."""
    env = os.environ.get("AUTOBUILD_SHARED_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    if not (path / "data").is_dir():
        pytest.skip(f"shared data folder {path / 'data'} not found (set AUTOBUILD_SHARED_DIR to the folder holding data/)")
    return path
