"""`autobuild serve --backend postgres` with real parts: its own PostgreSQL cluster, a Prefect server
and an MLflow server (basic auth) on it, 2 process workers. One stack serves every test here:
auth refuses anonymous requests; 8 runs triggered at once through the API all complete with
every evaluation stored exactly once; and a run survives, by retry or by rerun, each fault (a
worker SIGKILLed mid-batch, the Prefect server restarted, MLflow unreachable for 30 s,
PostgreSQL restarted) with zero evaluations lost or duplicated. Runs are tiny (NAS-Bench-Graph
lookups, evaluation batches as flow runs of evaluate-batch/evaluate-local) so the stack is the cost.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from autobuild_cli import stack as pgstack

REPO = Path(__file__).resolve().parents[1]
FINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
N_LOAD = 8
LOAD_SEEDS = 20  # one evaluation batch per load run (the fault runs have two batches of seeds, so one is in flight)

pytestmark = [pytest.mark.server, pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(900),
              pytest.mark.skipif(pgstack.pg_available() is not None, reason=f"PostgreSQL unavailable: {pgstack.pg_available()}")]


def tiny_config(name: str, timeout_s: float = 120.0, seeds: int = 40, build: bool = True) -> dict:
    """A tiny run. The load runs take one batch of seeds and no built architecture, so each holds
    exactly one evaluation batch (one flow run) and costs the shared CPUs least."""
    return {"name": name, "space": "nasbench_graph", "target": "acc",
            "evaluator": {"kind": "nasbench_graph", "settings": {"dataset": "cora"}, "batch_size": 20,
                          "deployment": "evaluate-batch/evaluate-local", "deployment_timeout_s": timeout_s},
            "seeds": {"n": seeds}, "train": {"epochs": 3, "batch_size": 32}, "prune": {"k": 2}, "build": {"enabled": build},
            "search": {"enabled": False}, "winners": {"top": 1}, "tracking": {"experiment": "postgres-stack"}}


class Served:
    """The running stack as the tests see it: the CLI, the authenticated Prefect API, run stores."""

    def __init__(self, work: Path, project: Path, env: dict, creds: dict):
        self.work, self.project, self.env, self.creds = work, project, env, creds
        self.state = json.loads((project / ".autobuild" / "serve.json").read_text())
        self.api_url = self.state["prefect_api_url"]
        self.mlflow_uri = self.state["mlflow_tracking_uri"]
        self.dep_ids: dict[str, str] = {}

    def refresh(self) -> None:
        self.state = json.loads((self.project / ".autobuild" / "serve.json").read_text())

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autobuild_cli.main", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def api(self, method: str, path: str, body: dict | None = None, auth: bool = True, patience: float = 120.0):
        """JSON request; connection errors and 5xx (a server restarting) are retried for ``patience`` seconds."""
        deadline = time.time() + patience
        while True:
            req = urllib.request.Request(self.api_url + path, method=method, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
            if auth:
                req.add_header("Authorization", "Basic " + base64.b64encode(self.creds["PREFECT_AUTH_STRING"].encode()).decode())
            try:
                with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 - loopback server started here
                    return json.loads(r.read() or b"null")
            except urllib.error.HTTPError as e:
                if e.code < 500 or time.time() > deadline:
                    raise
            except (urllib.error.URLError, TimeoutError, ConnectionError):
                if time.time() > deadline:
                    raise
            time.sleep(1.0)

    def trigger(self, name: str, run_dir: Path, timeout_s: float = 120.0, seeds: int = 40, build: bool = True) -> str:
        if "autobuild/quickstart" not in self.dep_ids:
            self.dep_ids["autobuild/quickstart"] = self.api("GET", "/deployments/name/autobuild/quickstart")["id"]
        fr = self.api("POST", f"/deployments/{self.dep_ids['autobuild/quickstart']}/create_flow_run",
                      {"parameters": {"config": tiny_config(name, timeout_s, seeds, build), "run_dir": str(run_dir)}})
        return fr["id"]

    def flow_run(self, fid: str) -> dict:
        return self.api("GET", f"/flow_runs/{fid}")

    def wait(self, pred, timeout: float, what):
        """Poll ``pred`` until it is truthy; ``what`` (text, or a function giving it) names the wait in the failure."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = pred()
            if v:
                return v
            time.sleep(1.0)
        what = what() if callable(what) else what
        pytest.fail(f"timed out after {timeout:g}s waiting for {what}; the stack's logs (removed after the tests) end:\n{self.log_tails()}")

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of each of the stack's logs, for a failure message (CI keeps no files)."""
        out = []
        for log in sorted(Path(self.state["home"]).glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(out)

    def wait_final(self, fids: list[str], timeout: float) -> dict[str, dict]:
        done: dict[str, dict] = {}

        def all_final():
            for f in fids:
                if f not in done:
                    fr = self.flow_run(f)
                    if fr["state"] and fr["state"]["type"] in FINAL:
                        done[f] = fr
                    else:
                        last[f] = (fr["state"] or {}).get("name")
            return len(done) == len(fids)

        last: dict[str, str | None] = {}
        self.wait(all_final, timeout, lambda: f"{len(fids)} flow run(s) to finish (still {sorted(set(last.values()) - {None})})")
        return done

    def batches(self, state_type: str | None = None) -> list[dict]:
        """Flow runs of the evaluate-batch flow (optionally in one state)."""
        flt: dict = {"flows": {"name": {"any_": ["evaluate-batch"]}}}
        if state_type:
            flt["flow_runs"] = {"state": {"type": {"any_": [state_type]}}}
        return self.api("POST", "/flow_runs/filter", flt)

    def batches_of(self, fid: str, state_type: str | None = None) -> list[dict]:
        """The evaluation batches driver flow run ``fid`` started (through its evaluate-remote tasks)."""
        tasks = {t["id"] for t in self.api("POST", "/task_runs/filter", {"flow_runs": {"id": {"any_": [fid]}}})}
        return [b for b in self.batches(state_type) if b.get("parent_task_run_id") in tasks]

    def run_to_completion(self, fid: str, name: str, run_dir: Path, timeout: float = 480) -> tuple[dict, str]:
        """Wait for ``fid``; when it did not complete, rerun into the same run directory (what a user
        does). Returns the completed flow run and how it got there: 'retry' or 'rerun'. The wait is
        long because a fault run may sit out a whole batch timeout before its retry, and CI machines
        have run this file about 30 % slower than the machine it was written on."""
        fr = self.wait_final([fid], timeout)[fid]
        if fr["state"]["type"] == "COMPLETED":
            return fr, "retry"
        again = self.trigger(name, run_dir)
        fr = self.wait_final([again], timeout)[again]
        assert fr["state"]["type"] == "COMPLETED", f"rerun of {name} ended {fr['state']}"
        return fr, "rerun"


def store_rows(run_dir: Path) -> dict[tuple, str]:
    """(space, key, fingerprint, seed) -> status of every row; fails on a duplicated identity."""
    db = sqlite3.connect(f"file:{run_dir / 'evaluations.sqlite'}?mode=ro", uri=True)
    try:
        dup = db.execute("SELECT space, key, fingerprint, seed, COUNT(*) FROM evaluations GROUP BY 1, 2, 3, 4 HAVING COUNT(*) > 1").fetchall()
        assert not dup, f"evaluations stored more than once: {dup[:5]}"
        return {tuple(r[:4]): r[4] for r in db.execute("SELECT space, key, fingerprint, seed, status FROM evaluations")}
    finally:
        db.close()


def snapshot(run_dir: Path) -> dict[tuple, str]:
    return store_rows(run_dir) if (run_dir / "evaluations.sqlite").is_file() else {}


def check_complete(served: Served, run_dir: Path, before: dict | None = None, seeds: int = 40) -> dict:
    """A finished run: summary completed, every evaluation it counted stored exactly once, nothing
    stored before a fault lost, and its MLflow parent run finished with its child runs."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed", s.get("error")
    rows = store_rows(run_dir)
    ev = s["evaluations"]
    assert ev["failed"] == 0 and ev["total"] >= seeds
    assert len(rows) == ev["total"], (len(rows), ev)  # every counted evaluation is stored, each once
    lost = [k for k in (before or {}) if k not in rows]
    assert not lost, f"{len(lost)} stored evaluations lost"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=served.mlflow_uri)
    parent = client.get_run(s["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    names = {c.info.run_name for c in children}
    assert {"ranker", "scoring", "winner-1"} <= names, names
    assert all(c.info.status == "FINISHED" for c in children), [(c.info.run_name, c.info.status) for c in children]
    return s


def _proc_env(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


@pytest.fixture(scope="module")
def served():
    work = Path(tempfile.mkdtemp(prefix="autobuild-pg-"))  # not under pytest's 0700 tmp: the postgres user must reach it
    os.chmod(work, 0o755)
    project = work / "project"
    shutil.copytree(REPO, project, ignore=shutil.ignore_patterns(".venv", ".git", ".autobuild", "runs", "__pycache__", "*.db",
                                                                  ".pytest_cache", "*.sqlite"))
    creds = {"POSTGRES_USER": "autobuild", "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
             "PREFECT_AUTH_STRING": "admin:" + secrets.token_urlsafe(16), "MLFLOW_ADMIN_USER": "admin",
             "MLFLOW_ADMIN_PASSWORD": secrets.token_urlsafe(16), "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(16)}
    cred_file = work / "credentials.env"  # outside the project, as a user keeps it
    cred_file.write_text("".join(f"{k}={v}\n" for k, v in creds.items()))
    os.chmod(cred_file, 0o600)
    drop = ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI", "AUTOBUILD_TRACKING_URI", *pgstack.CREDENTIAL_KEYS)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(MPLBACKEND="Agg", PYTHONPATH=str(project), PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    cli = [sys.executable, "-m", "autobuild_cli.main", "serve"]
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    pids: list[int] = []
    try:
        r = subprocess.run(cli + ["--backend", "postgres", "--credentials", str(cred_file), "--prefect-port", str(pgstack.free_port()),
                                  "--mlflow-port", str(pgstack.free_port())], cwd=project, env=env, capture_output=True, text=True,
                           timeout=420)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        s = Served(work, project, env, creds)
        state_text = (project / ".autobuild" / "serve.json").read_text()
        assert not any(v in state_text or v in r.stdout for k, v in creds.items() if "PASSWORD" in k or "AUTH" in k or "SECRET" in k)
        os.environ.update(MLFLOW_TRACKING_USERNAME=creds["MLFLOW_ADMIN_USER"], MLFLOW_TRACKING_PASSWORD=creds["MLFLOW_ADMIN_PASSWORD"])
        pids = list(s.state["pids"].values())
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        stop = subprocess.run(cli + ["--stop"], cwd=project, env=env, capture_output=True, text=True, timeout=180)
        if (project / ".autobuild" / "serve.json").is_file():
            pids += list(json.loads((project / ".autobuild" / "serve.json").read_text()).get("pids", {}).values())
        left = [p for p in pids if pgstack.alive(p)]
        shutil.rmtree(work, ignore_errors=True)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert not left, f"processes left running after --stop: {left}"


@pytest.fixture(scope="module")
def load(served):
    """8 runs triggered at once through the API, before any fault is injected."""
    t0 = time.time()
    runs = {served.trigger(f"load-{i}", served.work / f"load-{i}", timeout_s=300, seeds=LOAD_SEEDS, build=False): served.work / f"load-{i}" for i in range(N_LOAD)}
    return runs, t0


def test_unauthenticated_requests_are_refused(served):
    with pytest.raises(urllib.error.HTTPError) as e:
        served.api("POST", "/flow_runs/filter", {}, auth=False)
    assert e.value.code == 401
    assert isinstance(served.api("POST", "/flow_runs/filter", {"limit": 1}), list)
    for path in ("/api/2.0/mlflow/experiments/search?max_results=1", "/ajax-api/2.0/mlflow/runs/search"):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(served.mlflow_uri + path, timeout=15)  # noqa: S310 - loopback server started here
        assert e.value.code == 401, path
    from mlflow import MlflowClient

    assert MlflowClient(tracking_uri=served.mlflow_uri).search_experiments(max_results=1) is not None  # with credentials


def test_eight_runs_at_once_all_complete_once(served, load):
    """8 runs triggered together through the API on 2 workers, evaluation batches as flow runs of
    their own: each completes (a run that crashes is rerun into its run directory, as a user would,
    and the test reports it), every evaluation stored exactly once, nothing stored lost."""
    runs, t0 = load
    done = served.wait_final(list(runs), 600)
    crashed = {f: f"{fr['state']['name']}: {(fr['state'].get('message') or '')[:120]}" for f, fr in done.items()
               if fr["state"]["type"] != "COMPLETED"}
    before = {fid: snapshot(runs[fid]) for fid in crashed}
    reruns = {fid: served.trigger(runs[fid].name, runs[fid], timeout_s=300, seeds=LOAD_SEEDS, build=False) for fid in crashed}  # all at once
    assert all(fr["state"]["type"] == "COMPLETED" for fr in served.wait_final(list(reruns.values()), 600).values())
    for fid, run_dir in runs.items():
        check_complete(served, run_dir, before.get(fid), seeds=LOAD_SEEDS)
    print(f"\nload: {len(crashed)} of {N_LOAD} runs crashed and were rerun: {json.dumps(crashed, indent=1)}")
    for fid in runs:  # at least one batch of every run (or of its rerun) ran as a flow run of its own
        assert any(b["state"]["type"] == "COMPLETED" for f in (fid, reruns.get(fid)) if f for b in served.batches_of(f)), fid
    from datetime import datetime

    secs = sorted((datetime.fromisoformat(fr["end_time"]) - datetime.fromisoformat(fr["created"])).total_seconds() for fr in done.values())
    p95 = secs[min(len(secs) - 1, round(0.95 * (len(secs) - 1)))]
    print(f"\nload: {N_LOAD} runs at once on 2 workers: median {statistics.median(secs):.0f} s, p95 {p95:.0f} s, "
          f"all in {time.time() - t0:.0f} s")


def test_worker_sigkilled_mid_batch(served):
    """The worker holding a batch and the batch's process are SIGKILLed: the driver times the batch
    out and retries it on the restarted worker (or the run is rerun); nothing lost or duplicated."""
    run_dir = served.work / "fault-worker"
    fid = served.trigger("fault-worker", run_dir, timeout_s=30)

    def in_flight():
        """A batch of this run that is pending or running, and its process (batches of tiny lookups
        are RUNNING for about a second, so the process is taken as soon as the worker starts it)."""
        live = {b["id"] for b in served.batches_of(fid) if b["state"] and b["state"]["type"] in ("PENDING", "RUNNING")}
        if not live:
            return None
        for p in Path("/proc").iterdir():
            if p.name.isdigit() and _proc_env(int(p.name)).get("PREFECT__FLOW_RUN_ID") in live:
                return int(p.name)
        return None

    deadline = time.time() + 300
    proc = None
    while proc is None and time.time() < deadline:
        proc = in_flight()
        if proc is None:
            if (served.flow_run(fid)["state"] or {}).get("type") in FINAL:
                break
            time.sleep(0.2)
    if proc is None:
        pytest.skip("no evaluation batch of the fault run was seen in flight (its batches finished between polls); "
                    "nothing was killed")
    workers = {pid: name for name, pid in served.state["pids"].items() if name.startswith("worker-")}
    worker = _ppid(proc)
    assert worker in workers, (proc, worker, workers)
    for pid in (worker, proc):
        os.kill(pid, signal.SIGKILL)
    before, how = _restart_and_recover(served, workers[worker], fid, "fault-worker", run_dir)
    print(f"\nworker SIGKILL mid-batch: recovered by {how}; {len(before)} evaluations stored before the kill kept")


def _restart_and_recover(served: Served, piece: str, fid: str, name: str, run_dir: Path) -> tuple[dict, str]:
    """Restart one piece of the stack, let the run finish (rerun it if it crashed) and check that
    every evaluation stored before the restart is kept and none is stored twice."""
    before = snapshot(run_dir)
    r = served.cli("serve", "--restart", piece)
    assert r.returncode == 0, r.stderr
    served.refresh()
    _, how = served.run_to_completion(fid, name, run_dir)
    check_complete(served, run_dir, before)
    return before, how


def _mid_run(served: Served, name: str) -> tuple[str, Path]:
    """Trigger a run and return once its first evaluation batch is under way."""
    run_dir = served.work / name
    fid = served.trigger(name, run_dir)
    served.wait(lambda: served.batches_of(fid), 300, f"{name}'s first evaluation batch")
    return fid, run_dir


def test_prefect_server_restarted_mid_run(served):
    fid, run_dir = _mid_run(served, "fault-prefect")
    _, how = _restart_and_recover(served, "prefect_server", fid, "fault-prefect", run_dir)
    print(f"\nPrefect server restart mid-run: recovered by {how}")


def test_mlflow_unreachable_30s_mid_run(served):
    fid, run_dir = _mid_run(served, "fault-mlflow")
    pgstack.kill_group(served.state["pids"]["mlflow_server"])
    t = time.time()
    with pytest.raises(OSError):
        urllib.request.urlopen(served.mlflow_uri + "/health", timeout=5)  # noqa: S310 - loopback server started here
    time.sleep(max(0.0, 30 - (time.time() - t)))
    _, how = _restart_and_recover(served, "mlflow_server", fid, "fault-mlflow", run_dir)
    print(f"\nMLflow unreachable 30 s mid-run: recovered by {how}")


def test_postgres_restarted_mid_run(served):
    fid, run_dir = _mid_run(served, "fault-postgres")
    _, how = _restart_and_recover(served, "postgres", fid, "fault-postgres", run_dir)
    print(f"\nPostgreSQL restart mid-run: recovered by {how}")
