"""Shared pytest fixtures. Several test modules add fixtures here; keep each one small and documented."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Under pytest-xdist (`make test` runs the main suite on 2 workers) each worker gets its own Prefect
# home and MLflow store, so two ephemeral Prefect servers never share one SQLite database. This runs
# before any test module imports Prefect; CLI subprocesses inherit it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER:
    if os.environ.get("PREFECT_HOME"):
        os.environ["PREFECT_HOME"] = f"{os.environ['PREFECT_HOME']}-{_WORKER}"
    _uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if _uri.startswith("sqlite:///") and _uri.endswith(".db"):
        os.environ["MLFLOW_TRACKING_URI"] = f"{_uri[:-3]}-{_WORKER}.db"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The project's shared data folder (``../shared`` beside the repository, or
    ``$AUTOBUILD_SHARED_DIR``); tests that need ground-truth tables skip when it is absent."""
    env = os.environ.get("AUTOBUILD_SHARED_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    if not (path / "data").is_dir():
        pytest.skip(f"shared data folder {path / 'data'} not found (set AUTOBUILD_SHARED_DIR to the folder holding data/)")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> dict:
    """One uninterrupted tiny `autobuild run` (NAS-Bench-Graph, SQLite MLflow store in the run
    directory), shared by the pipeline and MLflow-model tests: its summary, plus ``_out`` (the run
    directory) and ``_tmp`` (its scratch folder)."""
    from pipeline_support import run_cli, tiny_args

    tmp_path = tmp_path_factory.mktemp("tiny-run")
    out = tmp_path / "run"
    r = run_cli(tiny_args(out), tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Summary:" in r.stdout and "mlflow ui" in r.stdout and "MLflow runs: http://127.0.0.1:5000/#/experiments/" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    s["_out"], s["_tmp"] = str(out), str(tmp_path)
    return s


# `make test` distributes whole groups over the xdist workers (`--dist loadgroup`): one group per
# test file, except that the files sharing the session's `tiny_run` share one group, so the run is
# made once.
_SHARED_GROUPS = {"test_pipeline": "tiny_run", "test_mlflow_models": "tiny_run"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(_SHARED_GROUPS.get(module, module)))

