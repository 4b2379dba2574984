"""The tiny `autobuild run` several test modules share (one run per session, see conftest's
``tiny_run``): the CLI in a subprocess, as a user runs it, on NAS-Bench-Graph (in its wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AUTOBUILD = [sys.executable, "-m", "autobuild_cli.main"]

TINY = [
    "seeds.n=20", "train.epochs=4", "train.batch_size=32", "search.budget=40", "winners.top=2", "evaluator.batch_size=20",
    "search.options={ensemble: 1, graph_passes: 100, epochs_min: 2, epochs_max: 3, batch_min: 10, pool_mutations: 50, pool_units: 50, pool_random: 20}",
]


def pipeline_env(tmp_path: Path) -> dict:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.setdefault("PREFECT_HOME", str(tmp_path / "prefect-home"))
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["MPLBACKEND"] = "Agg"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(AUTOBUILD + args, cwd=REPO, env=pipeline_env(tmp_path), capture_output=True, text=True, timeout=timeout)


def tiny_args(out: Path) -> list[str]:
    return ["run", "-c", "configs/quickstart.yaml", "--out", str(out), *[a for x in TINY for a in ("--set", x)]]
