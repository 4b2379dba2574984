"""Shared pytest fixtures. Several test modules add fixtures here; keep each one small and documented."""

from __future__ import annotations

import json
import logging
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
    directory) and ``_tmp`` (its scratch folder). Under pytest-xdist the first worker that needs it
    makes it (a file lock in the session's shared temporary folder) and the others read it."""
    from filelock import FileLock
    from pipeline_support import run_cli, tiny_args

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if _WORKER else base
    tmp_path = shared / "tiny-run"
    out = tmp_path / "run"
    with FileLock(str(shared / "tiny-run.lock")):
        if not (out / "summary.json").is_file():
            tmp_path.mkdir(parents=True, exist_ok=True)
            r = run_cli(tiny_args(out), tmp_path)
            assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
            assert "Summary:" in r.stdout and "mlflow ui" in r.stdout and "MLflow runs: http://127.0.0.1:5000/#/experiments/" in r.stdout
    s = json.loads((out / "summary.json").read_text())
    s["_out"], s["_tmp"] = str(out), str(tmp_path)
    return s


def pytest_unconfigure(config):
    """Prefect stops its ephemeral API server at interpreter exit and logs that to a console
    handler whose stream pytest has already closed; without this the suite ends with a
    "--- Logging error ---" traceback that is no failure of any test."""
    logging.raiseExceptions = False
