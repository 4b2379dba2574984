"""A real local Prefect server: deploy from prefect.yaml to a process pool, trigger through the REST
API, and watch the flow run complete (with its MLflow run) on a process worker.

Bounded everywhere: each wait has a deadline and every process started here is stopped (by its
own process-group id) in a finalizer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_CONFIG = {
    "name": "server-test", "space": "nasbench_graph", "target": "acc",
    # evaluations run as flow runs of the evaluate-batch deployment (the GPU-pool path, here on the local pool)
    "evaluator": {"kind": "nasbench_graph", "settings": {"dataset": "cora"}, "batch_size": 30,
                  "deployment": "evaluate-batch/evaluate-local", "deployment_timeout_s": 240},
    "seeds": {"n": 40}, "train": {"epochs": 3, "batch_size": 32}, "prune": {"k": 2},
    "search": {"method": "tpe", "budget": 46, "batch_size": 6}, "winners": {"top": 1},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: dict | None = None, timeout: float = 15, attempts: int = 12) -> dict:
    """JSON request to the local server. A Prefect server on SQLite answers 503 while its database
    is busy (a worker and the deploy writing at once on a loaded 2-core machine): such answers are
    retried with a pause, as a client of a real deployment would, and anything else fails at once."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback server started here
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            if e.code not in (502, 503, 504) or attempt == attempts - 1:
                raise
            time.sleep(2.0 + attempt)


def _wait(pred, timeout: float, what: str, procs=()):
    deadline = time.time() + timeout
    while time.time() < deadline:
        for name, p, log in procs:
            if p.poll() is not None:
                pytest.fail(f"{name} exited ({p.returncode}) while waiting for {what}:\n{Path(log).read_text()[-3000:]}")
        try:
            v = pred()
            if v:
                return v
        except Exception:
            pass
        time.sleep(1.0)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.server
@pytest.mark.timeout(420)
def test_deploy_trigger_via_rest_and_complete(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = dict(os.environ)
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_API_URL=api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2",
               MPLBACKEND="Agg", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    procs: list = []

    def start(name, cmd, extra_env=None):
        log = tmp_path / f"{name}.log"
        p = subprocess.Popen(cmd, cwd=REPO, env=dict(env, **(extra_env or {})), stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                             start_new_session=True)
        procs.append((name, p, log))
        return p

    try:
        start("server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], {"PREFECT_API_URL": ""})
        _wait(lambda: _http("GET", f"{api}/health", timeout=3) is not None, 180, "the Prefect server", procs)

        r = subprocess.run([str(BIN / "prefect"), "work-pool", "create", "local", "--type", "process", "--overwrite"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--name", "quickstart", "--name", "evaluate-local"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "local", "--type", "process"])

        dep = _http("GET", f"{api}/deployments/name/autobuild/quickstart")
        run_dir = tmp_path / "run"
        fr = _http("POST", f"{api}/deployments/{dep['id']}/create_flow_run",
                   {"parameters": {"config": TINY_CONFIG, "run_dir": str(run_dir)}})

        def finished():
            st = _http("GET", f"{api}/flow_runs/{fr['id']}")["state"]
            return st if st and st["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        state = _wait(finished, 300, "the triggered flow run", procs)
        logs = "".join(Path(l).read_text(errors="replace")[-3000:] for _, _, l in procs if _ == "worker")
        assert state["type"] == "COMPLETED", f"{state}\n{logs}"

        s = json.loads((run_dir / "summary.json").read_text())
        assert s["status"] == "completed" and s["prefect_flow_run_id"] == fr["id"]
        from mlflow import MlflowClient

        uri = f"sqlite:///{run_dir / 'mlflow.db'}"
        run = MlflowClient(tracking_uri=uri).get_run(s["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["prefect.flow_run_id"] == fr["id"]
        arts = _http("POST", f"{api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [fr["id"]]}}})
        assert any(a.get("key") == "autobuild-summary" for a in arts)
        # the evaluations ran as separate flow runs of the evaluate-batch deployment
        ev_dep = _http("GET", f"{api}/deployments/name/evaluate-batch/evaluate-local")
        runs = _http("POST", f"{api}/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [ev_dep["id"]]}}})
        assert runs and all(r["state"]["type"] == "COMPLETED" for r in runs)
        assert s["evaluations"]["total"] >= 40 and s["evaluations"]["failed"] == 0
    finally:
        for name, p, _ in reversed(procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait(timeout=20)
                except (OSError, subprocess.TimeoutExpired):
                    try:
                        os.killpg(p.pid, signal.SIGKILL)
                    except OSError:
                        pass
                    p.wait(timeout=10)


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
    port = _free_port()
    (tmp_path / ".autobuild").mkdir()
    state = tmp_path / ".autobuild" / "serve.json"
    state.write_text(json.dumps({"pids": {}, "prefect_api_url": f"http://127.0.0.1:{port}/api", "mlflow_tracking_uri": "", "home": ""}))
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    r = subprocess.run([sys.executable, "-m", "autobuild_cli.main", "trigger", "autobuild/quickstart"], cwd=sub, env=_cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert f"Prefect API: http://127.0.0.1:{port}/api (from {state})" in r.stdout
    assert r.returncode == 2 and "unreachable" in r.stderr and "Traceback" not in r.stderr, r.stderr
