"""`autobuild trigger` without a server: the errors name where it looked and what to do. (Deploying
prefect.yaml, triggering through the REST API and a run completing on a process worker are tested
on the served run of tests/test_served_outputs.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from autobuild_cli.stack import free_port

REPO = Path(__file__).resolve().parents[1]


def _cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AUTOBUILD_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO))
    return env


def test_trigger_without_server_says_where_it_looked(tmp_path):
    """No PREFECT_API_URL and no serve state: the error names the paths checked and the two fixes."""
    r = subprocess.run([sys.executable, "-m", "autobuild_cli.main", "trigger", "autobuild/quickstart"], cwd=tmp_path, env=_cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert str(tmp_path / ".autobuild" / "serve.json") in r.stderr and "autobuild serve" in r.stderr and "PREFECT_API_URL" in r.stderr


def test_trigger_uses_serve_state_of_a_parent_directory(tmp_path):
    """serve.json in a parent directory is found and named; a server that is gone is reported as unreachable."""
    port = free_port()
    (tmp_path / ".autobuild").mkdir()
    state = tmp_path / ".autobuild" / "serve.json"
    state.write_text(json.dumps({"pids": {}, "prefect_api_url": f"http://127.0.0.1:{port}/api", "mlflow_tracking_uri": "", "home": ""}))
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "autobuild_cli.main", "trigger", "autobuild/quickstart"], cwd=sub, env=_cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert f"Prefect API: http://127.0.0.1:{port}/api (from {state})" in r.stdout
    assert r.returncode == 2 and "unreachable" in r.stderr and "Traceback" not in r.stderr, r.stderr
